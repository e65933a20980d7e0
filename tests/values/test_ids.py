"""Tests of Convex document ids ("id v6")."""

from __future__ import annotations

import base64
from itertools import accumulate

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from basalt.errors import InvalidValue
from basalt.values import (
    decode_id,
    encode_id,
    is_valid_id,
    new_id,
    new_internal_id,
    table_number_of,
)

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
table_numbers = st.integers(1, 2**32 - 1) | st.sampled_from(
    [1, 127, 128, 16383, 16384, 2**21 - 1, 2**21, 2**28 - 1, 2**28, 2**32 - 1]
)
internal_ids = st.binary(min_size=16, max_size=16)


def reference_text(data: bytes) -> str:
    """Base32 via the standard library, translated to the lowercase Crockford alphabet."""
    std = base64.b32encode(data).decode().rstrip("=")
    return std.translate(str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", ALPHABET))


def vint(n: int) -> bytes:
    out = []
    while True:
        out.append((n & 0x7F) | (0x80 if n >= 0x80 else 0))
        n >>= 7
        if not n:
            return bytes(out)


def with_footer(body: bytes) -> bytes:
    running = list(accumulate(body))
    return body + bytes([running[-1] & 0xFF, sum(running) & 0xFF])


@pytest.mark.parametrize(
    ("text", "table"),
    [("k570e9j5cj1t5gf0zwf3tq3vkawxhqr0", 10009), ("kg204m40v9m1bmkthp86n486mh85s0rc", 540)],
)
def test_known_ids(text: str, table: int) -> None:
    number, internal = decode_id(text)
    assert number == table
    assert len(internal) == 16
    assert encode_id(number, internal) == text
    assert is_valid_id(text)
    assert table_number_of(text) == table


@pytest.mark.parametrize(
    ("table", "length"),
    [
        (1, 31),
        (127, 31),
        (128, 32),
        (10009, 32),
        (16383, 32),
        (16384, 34),
        (2**21, 36),
        (2**28, 37),
        (2**32 - 1, 37),
    ],
)
def test_lengths(table: int, length: int) -> None:
    assert len(encode_id(table, bytes(16))) == length


@settings(max_examples=300, deadline=None)
@given(table_numbers, internal_ids)
def test_round_trip_and_reference_layout(table: int, internal: bytes) -> None:
    text = encode_id(table, internal)
    assert text == reference_text(with_footer(vint(table) + internal))
    assert decode_id(text) == (table, internal)
    assert table_number_of(text) == table


@settings(max_examples=25, deadline=None)
@given(table_numbers, internal_ids)
def test_every_single_character_mutation_is_caught(table: int, internal: bytes) -> None:
    text = encode_id(table, internal)
    for i in range(len(text)):
        for c in ALPHABET + "ILOU!iu ":
            if c == text[i]:
                continue
            mutated = text[:i] + c + text[i + 1 :]
            try:
                decoded = decode_id(mutated)
            except InvalidValue:
                assert not is_valid_id(mutated)
                continue
            assert decoded != (table, internal)
            assert encode_id(*decoded) == mutated


def test_nonzero_padding_bits_are_rejected() -> None:
    text = encode_id(1, bytes(range(16)))  # 31 chars: 155 bits for 152, 3 padding bits
    last = ALPHABET.index(text[-1])
    assert last & 0b111 == 0
    mutated = text[:-1] + ALPHABET[last | 1]
    with pytest.raises(InvalidValue, match="not canonical"):
        decode_id(mutated)


def test_overlong_table_number_is_rejected() -> None:
    text = reference_text(with_footer(b"\x81\x00" + bytes(16)))  # table 1 in two bytes
    with pytest.raises(InvalidValue, match="not canonical"):
        decode_id(text)


def test_table_zero_is_rejected() -> None:
    text = reference_text(with_footer(b"\x00" + bytes(16)))
    with pytest.raises(InvalidValue, match="table number 0 is out of range"):
        decode_id(text)
    assert table_number_of(text) is None


def test_table_number_over_u32_is_rejected() -> None:
    text = reference_text(with_footer(vint(2**32) + bytes(16)))
    with pytest.raises(InvalidValue, match="out of range"):
        decode_id(text)


def test_malformed_vint_is_rejected() -> None:
    text = reference_text(with_footer(b"\x81" + bytes(16)))  # 19 bytes: 1-byte vint, "more" set
    with pytest.raises(InvalidValue, match="malformed"):
        decode_id(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not 0"),
        ("k570e9j5cj1t5gf0zwf3tq3vkawxhqr", "malformed"),  # 31 chars, so a 1-byte vint
        ("k570e9j5cj1t5gf0zwf3tq3vkawxhqr00", "not 33"),
        ("K570E9J5CJ1T5GF0ZWF3TQ3VKAWXHQR0", "outside the id alphabet"),
        ("k570e9j5cj1t5gf0zwf3tq3vkawxhqr٣", "outside the id alphabet"),
        ("k570e9j5cj1t5gf0zwf3tq3vkawx_qr0", "outside the id alphabet"),
        ("k570e9j5cj1t5gf0zwf3tq3vkawxhqr1", "checksum"),
        ("x" * 1000, "not 1000"),
    ],
)
def test_invalid_texts(text: str, message: str) -> None:
    with pytest.raises(InvalidValue, match=message):
        decode_id(text)
    assert not is_valid_id(text)
    assert table_number_of(text) is None


def test_non_strings() -> None:
    assert not is_valid_id(None)
    assert table_number_of(b"k570e9j5cj1t5gf0zwf3tq3vkawxhqr0") is None
    with pytest.raises(InvalidValue, match="must be a string"):
        decode_id(5)  # type: ignore[arg-type]


def test_encode_id_rejects_bad_input() -> None:
    with pytest.raises(InvalidValue, match="table number"):
        encode_id(0, bytes(16))
    with pytest.raises(InvalidValue, match="table number"):
        encode_id(2**32, bytes(16))
    with pytest.raises(InvalidValue, match="16 bytes"):
        encode_id(1, bytes(15))
    with pytest.raises(InvalidValue, match="16 bytes"):
        encode_id(1, bytearray(16))  # type: ignore[arg-type]


def test_new_internal_id() -> None:
    internal = new_internal_id(1_700_000_000_000.0, rand=lambda n: b"\xab" * n)
    assert internal == (1_700_000_000_000).to_bytes(6, "big") + b"\xab" * 8 + (19675).to_bytes(
        2, "big"
    )
    # Ids made later sort later (time first), so inserts append to the B-trees.
    earlier = encode_id(10001, new_internal_id(1_700_000_000_000.0))
    later = encode_id(10001, new_internal_id(1_700_000_000_001.0))
    assert earlier < later
    assert len(new_internal_id(0)) == 16
    assert new_internal_id(0) != new_internal_id(0)
    assert new_internal_id(86_400_000 * 65537.5, rand=bytes)[-2:] == b"\x00\x01"
    with pytest.raises(ValueError, match="returned 3 bytes"):
        new_internal_id(0, rand=lambda n: b"abc")


@given(table_numbers, st.floats(0, 2**47, allow_nan=False))
@settings(max_examples=300)
def test_new_id_is_an_encoded_fresh_internal_id(table_number: int, now_ms: float) -> None:
    text = new_id(table_number, now_ms)
    number, internal = decode_id(text)
    assert number == table_number
    # The same layout as new_internal_id: the time, 8 random bytes, the day.
    assert internal[:6] == new_internal_id(now_ms, rand=bytes)[:6]
    assert internal[14:] == new_internal_id(now_ms, rand=bytes)[14:]
    assert (
        encode_id(table_number, internal)
        == text
        == reference_text(with_footer(vint(table_number) + internal))
    )
    assert new_id(table_number, now_ms) != text


def test_new_id_refuses_a_bad_table_number() -> None:
    for bad in (0, -1, 2**32, 1.5):
        with pytest.raises(InvalidValue, match="table number"):
            new_id(bad, 0.0)  # type: ignore[arg-type]
