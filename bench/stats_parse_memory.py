"""What parsing one statistics payload costs in memory, at the parser's limits.

    python -m bench.stats_parse_memory [--size BYTES] [--json]

Each case builds one payload (bind's real output from tests/fixtures/bind-stats, and the
shapes that cost the most Python objects per input byte, each filled up to `--size`, default
`MAX_PAYLOAD_BYTES`) and parses it with `stats.bind_stats.parse` in a fresh interpreter. It
reports the payload size, the parse's tracemalloc peak and the growth of the process's peak
RSS (ru_maxrss after the parse minus before it), each also as a ratio to the payload size;
"refused" says the parser raised StatsParseError. The `unguarded` rows run bare `json.loads` /
`ElementTree.fromstring` on the same shape, so the effect of the limits shows as a ratio in the
same run. Figures quoted in docs/reliability.md come from this command.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from dnscache_agent.stats.bind_stats import MAX_PAYLOAD_BYTES, MAX_TOKENS

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "bind-stats"

# Each builder is source run in the child: it binds `payload` (bytes) from `size` (int) and
# LIMIT (MAX_TOKENS). "at the token limit" shapes spend just under LIMIT structural bytes on
# the costliest objects, then pad to `size` with one long string.
_UNIQUE_KEYS = (
    "parts = []\n"
    "i = 0\n"
    "while 2 * (i + 1) < LIMIT - 8:\n"
    "    parts.append(b'\"k%d\":0,' % i)\n"
    "    i += 1\n"
    "body = b'{' + b''.join(parts) + b'\"pad\":\"'\n"
    "payload = body + b'x' * max(0, size - len(body) - 2) + b'\"}'"
)
_UNIQUE_ATTRS = (
    "parts = []\n"
    "i = 0\n"
    "while i < LIMIT - 8:\n"
    "    parts.append(b' a%d=\"ab\"' % i)\n"
    "    i += 1\n"
    "body = b'<statistics version=\"3.0\"><x' + b''.join(parts) + b'>'\n"
    "payload = body + b'x' * max(0, size - len(body) - 20) + b'</x></statistics>'"
)
CASES: dict[str, str] = {
    "bind 9.18 JSON (fixture)": f"payload = open({str(FIXTURES / 'bind-9.18-json-v1.json')!r}, "
                                "'rb').read()",
    "bind 9.18 XML (fixture)": f"payload = open({str(FIXTURES / 'bind-9.18-xml-v3.xml')!r}, "
                               "'rb').read()",
    "JSON {\"a\":[{},{},...]} (empty objects)":
        "payload = b'{\"a\":[' + b'{},' * (size // 3 - 3) + b'{}]}'",
    "JSON unique keys at the token limit, padded": _UNIQUE_KEYS,
    "JSON one long string": "payload = b'{\"a\":\"' + b'x' * (size - 8) + b'\"}'",
    "XML <a/><a/>... (empty elements)":
        "payload = b'<statistics version=\"3.0\">' + b'<a/>' * (size // 4 - 10) + "
        "b'</statistics>'",
    "XML unique attributes at the token limit, padded": _UNIQUE_ATTRS,
}

UNGUARDED = {
    "JSON {\"a\":[{},{},...]} (empty objects)": "json",
    "JSON unique keys at the token limit, padded": "json",
    "XML <a/><a/>... (empty elements)": "xml",
    "XML unique attributes at the token limit, padded": "xml",
}

_CHILD = """
import gc, json, resource, sys, tracemalloc
import xml.etree.ElementTree as ET
from dnscache_agent.errors import StatsParseError
from dnscache_agent.stats.bind_stats import parse
size = {size}
LIMIT = {limit}
{build}
mode = {mode!r}
gc.collect()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
tracemalloc.start()
refused = False
try:
    if mode == "json":
        doc = json.loads(payload)
    elif mode == "xml":
        doc = ET.fromstring(payload)
    else:
        doc = parse(payload)
except StatsParseError:
    refused = True
peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({{"bytes": len(payload), "peak": peak, "rss": max(0, after - before),
                  "refused": refused}}))
"""


def measure(build: str, size: int, mode: str = "parse") -> dict[str, object]:
    """Run one case in a fresh interpreter (peak RSS only grows) and return its figures."""
    code = _CHILD.format(size=size, limit=MAX_TOKENS, build=build, mode=mode)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, timeout=300).stdout
    result: dict[str, object] = json.loads(out)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=MAX_PAYLOAD_BYTES,
                    help=f"payload size for the synthetic cases (default {MAX_PAYLOAD_BYTES})")
    ap.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = ap.parse_args(argv)
    rows = []
    for name, build in CASES.items():
        rows.append({"case": name, **measure(build, args.size)})
        if name in UNGUARDED:
            rows.append({"case": f"{name}, unguarded {UNGUARDED[name]} parser",
                         **measure(build, args.size, UNGUARDED[name])})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"cap {MAX_PAYLOAD_BYTES} bytes, at most {MAX_TOKENS} structural bytes; "
          f"synthetic payloads of {args.size} bytes")
    print(f"{'case':70} {'bytes':>9} {'peak MiB':>9} {'x':>5} {'RSS MiB':>8} {'x':>5}  result")
    for r in rows:
        size = int(r["bytes"])  # type: ignore[call-overload]
        peak = int(r["peak"])  # type: ignore[call-overload]
        rss = int(r["rss"])  # type: ignore[call-overload]
        print(f"{r['case']:70} {size:>9} {peak / 2**20:>9.1f} {peak / size:>5.1f} "
              f"{rss / 2**20:>8.1f} {rss / size:>5.1f}  "
              f"{'refused' if r['refused'] else 'parsed'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
