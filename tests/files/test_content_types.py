"""A stored file's content type is exactly one media type, kept and served in
canonical form: anything a browser could read as another type (a list, whose
last entry counts) is refused before the body is read."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from basalt.errors import BasaltError
from basalt.runtime.files import STORAGE_TABLE
from basalt.runtime.transaction import TxState

from .conftest import MakeServed
from .raw import PATIENCE, RawUpload

PAGE = b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(document.domain)</script></svg>"


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain;,text/html",
        "image/png,text/html",
        "image/svg+xml, image/png",
        'text/plain; a="b", text/html',
        "text/plain; charset",
        "audio/../text/html",
        "text",
        "text/pl\u00e1in",
    ],
)
async def test_a_content_type_that_is_not_one_media_type_is_refused(
    served: MakeServed, http: httpx.AsyncClient, content_type: str
) -> None:
    s = await served()
    url = await s.mutation("generate_upload_url")
    upload = await RawUpload(url, len(PAGE), {"Content-Type": content_type}).start()
    try:
        refused = await upload.answer()  # before any byte of the body was sent
    finally:
        await upload.close()
    assert refused.status == 400
    body = refused.json()
    assert body["code"] == "InvalidContentType"
    assert body["message"].startswith("the Content-Type header ")
    assert "is not one media type" in body["message"]
    assert await s.query("all_files") == []
    # The URL was not spent: the same upload with one type goes through.
    ok = await http.post(url, content=PAGE, headers={"content-type": "image/svg+xml"})
    assert ok.status_code == 200


@pytest.mark.parametrize(
    ("sent", "kept", "inline"),
    [
        ("TEXT/Plain", "text/plain", True),
        ('text/plain ;Charset="utf-8"', "text/plain; charset=utf-8", True),
        ("Image/SVG+XML", "image/svg+xml", False),
        ('multipart/mixed; boundary="a;b,c"', 'multipart/mixed; boundary="a;b,c"', False),
    ],
)
async def test_content_types_are_kept_and_served_in_canonical_form(
    served: MakeServed, http: httpx.AsyncClient, sent: str, kept: str, inline: bool
) -> None:
    s = await served()
    url = await s.mutation("generate_upload_url")
    response = await http.post(url, content=PAGE, headers={"content-type": sent})
    assert response.status_code == 200, response.text
    storage_id = response.json()["storageId"]
    assert (await s.query("get_metadata", {"id": storage_id}))["contentType"] == kept
    got = await http.get(await s.query("get_url", {"id": storage_id}))
    assert got.headers["content-type"] == kept
    assert got.headers["content-security-policy"] == "sandbox"
    assert ("content-disposition" not in got.headers) == inline


async def test_storage_store_refuses_a_content_type_that_is_not_one(served: MakeServed) -> None:
    s = await served()
    with pytest.raises(BasaltError) as info:
        await s.action("store_text", {"text": "x", "content_type": "text/plain;,text/html"})
    assert info.value.code == "InvalidContentType"
    assert "the content_type argument of storage.store" in info.value.message
    stored = await s.action("store_text", {"text": "x", "content_type": "Text/CSV"})
    assert (await s.query("get_metadata", {"id": stored}))["contentType"] == "text/csv"


async def test_a_type_stored_before_types_were_checked_is_served_as_bytes(
    served: MakeServed, http: httpx.AsyncClient
) -> None:
    """A file an older version stored with ``text/plain;,text/html`` (which a
    browser reads as HTML) is served as a sandboxed attachment of bytes."""
    s = await served()
    storage_id = await s.action("store_text", {"text": "<script>alert(1)</script>"})

    async def set_legacy_type(state: TxState) -> None:
        table = state.tx.catalog.table_by_name(STORAGE_TABLE)
        assert table is not None
        old: Any = await state.tx.get(storage_id)
        await state.writer.replace(table, old, {**old, "contentType": "text/plain;,text/html"})

    await s.files.write(set_legacy_type)
    got = await http.get(await s.query("get_url", {"id": storage_id}), timeout=PATIENCE)
    assert got.headers["content-type"] == "application/octet-stream"
    assert got.headers["content-security-policy"] == "sandbox"
    assert got.headers["content-disposition"] == "attachment"


def test_canonical_form_is_stable() -> None:
    from basalt.files import canonical_content_type

    for text in ["a/b", 'A/B ; X="y z" ; ;q=1', "text/plain;charset=UTF-8;format=flowed"]:
        once = canonical_content_type(text)
        assert canonical_content_type(once) == once
