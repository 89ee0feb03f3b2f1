"""Pure parser for bind 9.18's statistics channel (`/json/v1` and `/xml/v3`) into a frozen
`BindSnapshot`.

Only the counters the agent reports are kept. A counter bind did not print is zero (bind omits
zero counters in JSON). Anything else that does not look like bind's output (wrong types,
negative or absurd numbers, truncated documents, DTDs, deep nesting) raises `StatsParseError`
and nothing else, so a hostile or broken statistics channel cannot crash the agent.

Whatever listens on the statistics port may be any local user (before named binds it, or while
it restarts), so parsing is bounded as well as checked:

* XML goes through defusedxml with DTDs forbidden: the parser itself refuses a DOCTYPE or
  entity declaration in any encoding (a byte regex missed UTF-16 without a BOM, and expat then
  expanded the entities).
* A payload is at most `MAX_PAYLOAD_BYTES`, and holds at most `MAX_TOKENS` structural bytes
  (JSON `{ [ , :`, XML `< =`), counted on the raw bytes before parsing. Each parsed value, key,
  element or attribute costs far more than its bytes (`{},` is 3 bytes of input and over 60 of
  Python object; bare parsers peak at 20-60x the payload), so the count is what keeps the
  parse's peak memory a small multiple of the payload. Both limits are measured by
  `python -m bench.stats_parse_memory` (figures in docs/reliability.md).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Union

import defusedxml.ElementTree as DefusedET
from defusedxml import DefusedXmlException

from ..errors import StatsParseError

Payload = Union[bytes, str]

#: Refuse payloads larger than this. A caching-only named prints about 16 kB of JSON and 25 kB
#: of XML (tests/fixtures/bind-stats); 1 MiB leaves room for many views and zones, and at the
#: worst shape the parse stays within a few MiB (bench/stats_parse_memory.py).
MAX_PAYLOAD_BYTES = 1024 * 1024
#: Refuse payloads with more structural bytes than this: JSON `{ [ , :` (one per value, key or
#: container) or XML `< =` (one per tag or attribute). bind 9.18's caching-only output has
#: 1,317 (JSON) and 2,152 (XML) of them.
MAX_TOKENS = 20_000
#: bind's counters are 64-bit unsigned.
_MAX_COUNTER = 2**64 - 1
_MAX_TEXT = 128
#: bind's upstream RTT buckets, in order: <10 ms, 10-100, 100-500, 500-800, 800-1600, >=1600.
RTT_BUCKETS: tuple[str, ...] = (
    "QryRTT10", "QryRTT100", "QryRTT500", "QryRTT800", "QryRTT1600", "QryRTT1600+",
)
#: Short labels for the same buckets (used by the table and the sinks).
RTT_LABELS: tuple[str, ...] = ("lt10ms", "10to100ms", "100to500ms", "500to800ms",
                               "800to1600ms", "ge1600ms")
#: The view bind uses for its built-in CHAOS zones; never part of the resolver figures.
_INTERNAL_VIEW = "_bind"


@dataclass(frozen=True)
class ClientCounters:
    """`nsstats`: what clients asked the cache and what they got back."""

    requestv4: int = 0
    requestv6: int = 0
    qry_udp: int = 0
    qry_tcp: int = 0
    qry_success: int = 0
    qry_nxdomain: int = 0
    qry_servfail: int = 0
    qry_recursion: int = 0
    qry_dropped: int = 0
    qry_failure: int = 0
    rec_limit_dropped: int = 0
    qry_try_stale: int = 0
    qry_used_stale: int = 0
    prefetch: int = 0


@dataclass(frozen=True)
class UpstreamCounters:
    """`views.<view>.resolver.stats`: what the cache sent to its forwarders (the packets that
    count against the 1024/s link-local limit) and what came back."""

    queryv4: int = 0
    queryv6: int = 0
    responsev4: int = 0
    responsev6: int = 0
    retry: int = 0
    query_timeout: int = 0
    servfail: int = 0
    nxdomain: int = 0
    truncated: int = 0
    client_quota: int = 0
    server_quota: int = 0
    #: Responses per RTT bucket, in `RTT_BUCKETS` order.
    rtt: tuple[int, ...] = (0, 0, 0, 0, 0, 0)


@dataclass(frozen=True)
class CacheCounters:
    """`views.<view>.resolver.cachestats`: QueryHits/QueryMisses count client lookups only
    (CacheHits/CacheMisses also count bind's internal lookups, so they are not used)."""

    query_hits: int = 0
    query_misses: int = 0


@dataclass(frozen=True)
class BindSnapshot:
    """One reading of the statistics channel. `boot_time` changes when named restarts, which is
    how rate maths tells a restart from a quiet second."""

    boot_time: str = ""
    config_time: str = ""
    current_time: str = ""
    version: str = ""
    client: ClientCounters = field(default_factory=ClientCounters)
    upstream: UpstreamCounters = field(default_factory=UpstreamCounters)
    cache: CacheCounters = field(default_factory=CacheCounters)
    #: Client queries per qtype, sorted by name.
    qtypes: tuple[tuple[str, int], ...] = ()
    #: "json" or "xml": which endpoint this came from.
    source: str = "json"

    @property
    def client_queries(self) -> int:
        return self.client.requestv4 + self.client.requestv6

    @property
    def upstream_queries(self) -> int:
        return self.upstream.queryv4 + self.upstream.queryv6

    def qtype(self, name: str) -> int:
        for qtype, count in self.qtypes:
            if qtype == name:
                return count
        return 0

    @property
    def qtype_total(self) -> int:
        return sum(count for _, count in self.qtypes)


# bind counter name -> dataclass field, per section.
_CLIENT_NAMES = {
    "Requestv4": "requestv4", "Requestv6": "requestv6", "QryUDP": "qry_udp",
    "QryTCP": "qry_tcp", "QrySuccess": "qry_success", "QryNXDOMAIN": "qry_nxdomain",
    "QrySERVFAIL": "qry_servfail", "QryRecursion": "qry_recursion",
    "QryDropped": "qry_dropped", "QryFailure": "qry_failure",
    "RecLimitDropped": "rec_limit_dropped", "QryTryStale": "qry_try_stale",
    "QryUsedStale": "qry_used_stale", "Prefetch": "prefetch",
}
_UPSTREAM_NAMES = {
    "Queryv4": "queryv4", "Queryv6": "queryv6", "Responsev4": "responsev4",
    "Responsev6": "responsev6", "Retry": "retry", "QueryTimeout": "query_timeout",
    "SERVFAIL": "servfail", "NXDOMAIN": "nxdomain", "Truncated": "truncated",
    "ClientQuota": "client_quota", "ServerQuota": "server_quota",
}
_CACHE_NAMES = {"QueryHits": "query_hits", "QueryMisses": "query_misses"}


def parse(payload: Payload) -> BindSnapshot:
    """Parse either format, chosen by the first non-blank character. Raises StatsParseError."""
    data = _as_bytes(payload)
    head = data.lstrip()[:1]
    if head == b"{":
        return parse_json(data)
    if head == b"<":
        return parse_xml(data)
    raise StatsParseError("bind statistics: payload is neither JSON nor XML")


def parse_json(payload: Payload) -> BindSnapshot:
    """Parse a `/json/v1` document. Raises StatsParseError on anything but bind's shape."""
    data = _as_bytes(payload)
    _check_tokens(data, (b"{", b"[", b",", b":"), "JSON values")
    try:
        doc = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except StatsParseError:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise StatsParseError(f"bind statistics JSON: {_short(exc)}") from None
    if not isinstance(doc, dict):
        raise StatsParseError("bind statistics JSON: top level is not an object")
    nsstats = _counter_map(doc.get("nsstats"), "nsstats")
    qtypes = _counter_map(doc.get("qtypes"), "qtypes")
    views = _mapping(doc.get("views"), "views")
    resstats: list[Mapping[str, int]] = []
    cachestats: list[Mapping[str, int]] = []
    for name, view in views.items():
        if name == _INTERNAL_VIEW:
            continue
        view_map = _mapping(view, f"views.{name}")
        resolver = _mapping(view_map.get("resolver"), f"views.{name}.resolver")
        resstats.append(_counter_map(resolver.get("stats"), f"views.{name}.resolver.stats"))
        cachestats.append(_counter_map(resolver.get("cachestats"),
                                       f"views.{name}.resolver.cachestats"))
    return _build(
        boot_time=_text(doc.get("boot-time"), "boot-time"),
        config_time=_text(doc.get("config-time"), "config-time"),
        current_time=_text(doc.get("current-time"), "current-time"),
        version=_text(doc.get("version"), "version"),
        nsstats=nsstats, qtypes=qtypes, resstats=resstats, cachestats=cachestats,
        source="json",
    )


def parse_xml(payload: Payload) -> BindSnapshot:
    """Parse a `/xml/v3` document. DTDs and entities are refused by the parser, in whatever
    encoding the document declares or expat detects (bind never sends them; they are how XML
    bombs work). Raises StatsParseError."""
    data = _as_bytes(payload)
    # Counted on bytes: in UTF-16 (which expat detects even without a BOM) each "<" and "="
    # is still one such byte, next to a NUL.
    _check_tokens(data, (b"<", b"="), "XML tags and attributes")
    try:
        root = DefusedET.fromstring(data, forbid_dtd=True, forbid_entities=True,
                                    forbid_external=True)
    except DefusedXmlException:
        raise StatsParseError("bind statistics XML: DTD or entity declarations are not "
                              "allowed") from None
    except (ET.ParseError, ValueError, RecursionError, LookupError) as exc:
        raise StatsParseError(f"bind statistics XML: {_short(exc)}") from None
    if not isinstance(root, ET.Element):
        raise StatsParseError("bind statistics XML: no document element")
    if root.tag != "statistics":
        raise StatsParseError(f"bind statistics XML: root element is <{_clip(root.tag)}>, "
                              "not <statistics>")
    version = root.get("version", "")
    if not version.startswith("3."):
        raise StatsParseError(f"bind statistics XML: unsupported version {_clip(version)!r}")
    server = root.find("server")
    nsstats: Mapping[str, int] = {}
    qtypes: Mapping[str, int] = {}
    times = {"boot-time": "", "config-time": "", "current-time": "", "version": ""}
    if server is not None:
        for key in times:
            node = server.find(key)
            if node is not None:
                times[key] = _text(node.text or "", key)
        nsstats = _xml_counters(server, "nsstat")
        qtypes = _xml_counters(server, "qtype")
    resstats: list[Mapping[str, int]] = []
    cachestats: list[Mapping[str, int]] = []
    views = root.find("views")
    if views is not None:
        for view in views.findall("view"):
            if view.get("name") == _INTERNAL_VIEW:
                continue
            resstats.append(_xml_counters(view, "resstats"))
            cachestats.append(_xml_counters(view, "cachestats"))
    return _build(
        boot_time=times["boot-time"], config_time=times["config-time"],
        current_time=times["current-time"], version=times["version"],
        nsstats=nsstats, qtypes=qtypes, resstats=resstats, cachestats=cachestats,
        source="xml",
    )


# --- helpers ---------------------------------------------------------------------------------


def _build(*, boot_time: str, config_time: str, current_time: str, version: str,
           nsstats: Mapping[str, int], qtypes: Mapping[str, int],
           resstats: Iterable[Mapping[str, int]], cachestats: Iterable[Mapping[str, int]],
           source: str) -> BindSnapshot:
    res_total = _sum_maps(resstats)
    cache_total = _sum_maps(cachestats)
    client = ClientCounters(**{f: nsstats.get(n, 0) for n, f in _CLIENT_NAMES.items()})
    upstream = UpstreamCounters(
        **{f: res_total.get(n, 0) for n, f in _UPSTREAM_NAMES.items()},
        rtt=tuple(res_total.get(n, 0) for n in RTT_BUCKETS),
    )
    cache = CacheCounters(**{f: cache_total.get(n, 0) for n, f in _CACHE_NAMES.items()})
    return BindSnapshot(
        boot_time=boot_time, config_time=config_time, current_time=current_time,
        version=version, client=client, upstream=upstream, cache=cache,
        qtypes=tuple(sorted(qtypes.items())), source=source,
    )


def _sum_maps(maps: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Views are summed: with no `view` statements bind has only `_default`."""
    total: dict[str, int] = {}
    for m in maps:
        for k, v in m.items():
            total[k] = min(total.get(k, 0) + v, _MAX_COUNTER)
    return total


def _as_bytes(payload: Payload) -> bytes:
    if isinstance(payload, str):
        try:
            payload = payload.encode("utf-8")
        except UnicodeEncodeError:
            raise StatsParseError("bind statistics: payload is not valid UTF-8") from None
    if not isinstance(payload, (bytes, bytearray)):
        raise StatsParseError(f"bind statistics: expected bytes, got {type(payload).__name__}")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise StatsParseError(f"bind statistics: payload of {len(payload)} bytes exceeds "
                              f"{MAX_PAYLOAD_BYTES}")
    if not payload.strip():
        raise StatsParseError("bind statistics: empty payload")
    return bytes(payload)


def _check_tokens(data: bytes, tokens: tuple[bytes, ...], what: str) -> None:
    """Refuse before parsing what would parse into too many objects (an upper bound: the
    bytes inside strings count too)."""
    if sum(data.count(t) for t in tokens) > MAX_TOKENS:
        raise StatsParseError(f"bind statistics: more than {MAX_TOKENS} {what}")


def _reject_constant(name: str) -> Any:
    raise StatsParseError(f"bind statistics JSON: {name} is not a counter value")


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise StatsParseError(f"bind statistics: {where} is a {type(value).__name__}, "
                              "not an object")
    return value


def _counter(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise StatsParseError(f"bind statistics: {_clip(where)} is not an integer counter")
    if not 0 <= value <= _MAX_COUNTER:
        raise StatsParseError(f"bind statistics: {_clip(where)} is out of range")
    return value


def _counter_map(value: object, where: str) -> dict[str, int]:
    return {str(k): _counter(v, f"{where}.{k}") for k, v in _mapping(value, where).items()}


def _xml_counters(parent: ET.Element, kind: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for group in parent.findall("counters"):
        if group.get("type") != kind:
            continue
        for node in group.findall("counter"):
            name = node.get("name", "")
            text = (node.text or "").strip()
            if not text.isdigit() or not text.isascii() or len(text) > 20:
                raise StatsParseError(f"bind statistics XML: {kind}.{_clip(name)} is not an "
                                      "integer counter")
            out[name] = _counter(int(text), f"{kind}.{name}")
    return out


def _text(value: object, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > _MAX_TEXT or not value.isprintable():
        raise StatsParseError(f"bind statistics: {where} is not a short printable string")
    return value


def _clip(text: str, limit: int = 40) -> str:
    """Names from the payload end up in one-line errors: keep them short and printable."""
    text = "".join(c if c.isprintable() else "?" for c in str(text)[:limit])
    return text


def _short(exc: BaseException) -> str:
    return _clip(str(exc) or type(exc).__name__, 120)


def counter_fields(cls: type) -> tuple[str, ...]:
    """Field names of a counters dataclass (used by rate maths to walk every counter)."""
    return tuple(f.name for f in fields(cls))
