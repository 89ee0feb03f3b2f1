"""The statistics parser against hostile payloads: DTDs and entities in any encoding,
documents made of tiny objects, and the parse's memory at the size cap.

Whatever listens on 127.0.0.1:8053 may be any local user, so these are the payloads that user
would send. Figures for the cap: `python -m bench.stats_parse_memory` (docs/reliability.md)."""
from __future__ import annotations

import contextlib
import gc
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from dnscache_agent.errors import StatsParseError
from dnscache_agent.stats.bind_stats import (
    MAX_PAYLOAD_BYTES,
    MAX_TOKENS,
    BindSnapshot,
    parse,
    parse_xml,
)

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "bind-stats"

# A valid bind document whose version text comes from an entity: if the parser expands it,
# the snapshot's version says so.
_ENTITY_DOC = (
    '<?xml version="1.0" encoding="{enc}"?>'
    '<!DOCTYPE statistics [<!ENTITY a "expanded"><!ENTITY b "&a;&a;&a;&a;">]>'
    '<statistics version="3.14"><server><version>&b;</version></server></statistics>'
)


@pytest.mark.parametrize("codec,declared", [
    ("utf-16-le", "UTF-16"),   # no BOM: expat detects it from "<\0?\0"
    ("utf-16-be", "UTF-16"),   # no BOM, big-endian
    ("utf-16", "UTF-16"),      # with a BOM
    ("utf-8", "UTF-8"),
])
def test_entities_are_refused_in_any_encoding(codec: str, declared: str) -> None:
    payload = _ENTITY_DOC.format(enc=declared).encode(codec)
    with pytest.raises(StatsParseError, match="DTD or entity"):
        parse_xml(payload)


def test_utf16_without_bom_is_still_parsed_when_clean() -> None:
    """Refusing DTDs must not refuse an honest UTF-16 document."""
    doc = ('<?xml version="1.0" encoding="UTF-16"?><statistics version="3.14"><server>'
           '<version>9.18.28</version></server></statistics>').encode("utf-16-le")
    assert parse_xml(doc).version == "9.18.28"


def _empty_objects(size: int) -> bytes:
    return b'{"a":[' + b"{}," * (size // 3 - 3) + b"{}]}"


def _empty_elements(size: int) -> bytes:
    return b'<statistics version="3.0">' + b"<a/>" * (size // 4 - 10) + b"</statistics>"


def _attributes_at_limit(size: int) -> bytes:
    attrs = b"".join(b' a%d="ab"' % i for i in range(MAX_TOKENS - 8))
    body = b'<statistics version="3.0"><x' + attrs + b">"
    return body + b"x" * max(0, size - len(body) - 20) + b"</x></statistics>"


def _keys_at_limit(size: int) -> bytes:
    keys = b"".join(b'"k%d":0,' % i for i in range(MAX_TOKENS // 2 - 8))
    body = b'{' + keys + b'"pad":"'
    return body + b"x" * max(0, size - len(body) - 2) + b'"}'


def test_documents_of_tiny_objects_are_refused_before_parsing() -> None:
    """Each costs ~20x its bytes once parsed; bind never sends anything like them."""
    for payload in (_empty_objects(200_000), _empty_elements(200_000)):
        with pytest.raises(StatsParseError, match=f"more than {MAX_TOKENS}"):
            parse(payload)


def test_bind_output_is_far_below_the_limits() -> None:
    for name in ("bind-9.18-json-v1.json", "bind-9.18-xml-v3.xml"):
        data = (FIX / name).read_bytes()
        assert len(data) * 20 < MAX_PAYLOAD_BYTES
        tokens = sum(data.count(t) for t in (b"{", b"[", b",", b":", b"<", b"="))
        assert tokens * 5 < MAX_TOKENS
        assert isinstance(parse(data), BindSnapshot)


@pytest.mark.parametrize("build", [_empty_objects, _empty_elements, _attributes_at_limit,
                                   _keys_at_limit])
def test_parse_memory_at_the_cap_is_bounded(build: Callable[[int], bytes]) -> None:
    """The costliest shapes, filled to the cap: the parse (refused or not) allocates at most
    10x the cap (measured worst: 6.8x; bare json/ElementTree: 21-25x)."""
    payload = build(MAX_PAYLOAD_BYTES)
    assert len(payload) <= MAX_PAYLOAD_BYTES
    gc.collect()
    tracemalloc.start()
    try:
        with contextlib.suppress(StatsParseError):
            parse(payload)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= 10 * MAX_PAYLOAD_BYTES, f"peak {peak} bytes for {len(payload)}"
