"""``basalt serve`` / ``basalt dev`` serve HTTP actions on the site port, from the
app folder's ``http.py``; ``server.json`` records the site URL as ``siteUrl``."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import httpx
import pytest

_HARNESS = Path(__file__).resolve().parents[1] / "server" / "harness.py"
_spec = importlib.util.spec_from_file_location("_basalt_site_test_harness", _HARNESS)
assert _spec is not None and _spec.loader is not None
harness = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = harness
_spec.loader.exec_module(harness)

HTTP_PY = """
import asyncio

from basalt import HttpRouter, Response, StreamingResponse, cors_router, http_action

http = HttpRouter()


@http_action
async def saga(ctx, request):
    prompt = (await request.json())["prompt"]

    async def events():
        for word in prompt.split():
            await ctx.run_mutation("notes:add", {"body": word})
            yield f"data: {word}\\n\\n"
            await asyncio.sleep(0.2)

    return StreamingResponse(events(), content_type="text/event-stream")


async def count(ctx, request):
    return Response.json({"notes": len(await ctx.run_query("notes:list"))})


cors = cors_router(http, allowed_origins=["https://app.example.test"],
                   allowed_headers=["Content-Type", "Authorization"])
cors.route(path="/ai/saga", method="POST", handler=saga)
http.route(path="/count", method="GET", handler=count)
"""

NOTES_PY = """
from basalt import internal_mutation, query, v


@internal_mutation(args={"body": v.string()})
async def add(ctx, body):
    await ctx.db.insert("notes", {"body": body})


@query
async def list(ctx):
    return await ctx.db.query("notes").collect()
"""


def site_url(process: harness.BasaltProcess) -> str:
    return str(json.loads((process.data / "server.json").read_text())["siteUrl"])


@pytest.fixture
def app(tmp_path: Path) -> Path:
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "http.py").write_text(HTTP_PY)
    (folder / "notes.py").write_text(NOTES_PY)
    return folder


def test_serve_streams_sse_with_cors(app: Path, tmp_path: Path, server_env: dict[str, str]) -> None:
    process = harness.BasaltProcess(app, tmp_path / "data", env=server_env).start()
    try:
        site = site_url(process)
        assert site != process.url
        assert f"HTTP actions at {site}" in process.output()
        origin = {"Origin": "https://app.example.test"}
        r = httpx.options(
            site + "/ai/saga", headers={**origin, "Access-Control-Request-Method": "POST"}
        )
        assert r.status_code == 204
        assert r.headers["access-control-allow-origin"] == "https://app.example.test"
        arrivals = []
        started = time.monotonic()
        with httpx.stream(
            "POST", site + "/ai/saga", json={"prompt": "one two three"}, headers=origin
        ) as response:
            assert response.headers["access-control-allow-origin"] == "https://app.example.test"
            for line in response.iter_lines():
                if line:
                    arrivals.append((line, time.monotonic() - started))
        assert [line for line, _ in arrivals] == ["data: one", "data: two", "data: three"]
        assert arrivals[-1][1] - arrivals[0][1] >= 0.35  # each arrived as it was produced
        assert httpx.get(site + "/count").json() == {"notes": 3}
        assert httpx.get(process.url + "/count").status_code == 404  # not on the API origin
    finally:
        process.stop()


def test_dev_reload_changes_routes(app: Path, tmp_path: Path, server_env: dict[str, str]) -> None:
    (app / "http.py").unlink()
    process = harness.BasaltProcess(app, tmp_path / "data", command="dev", env=server_env).start()
    try:
        site = site_url(process)
        assert httpx.get(site + "/count").status_code == 404
        mark = len(process.output())
        (app / "http.py").write_text(HTTP_PY)
        process.wait_for_output("reloaded", start=mark)
        assert httpx.get(site + "/count").json() == {"notes": 0}
    finally:
        process.stop()
