"""The few DNS wire-format facts the pacer needs, parsed by hand on the hot path.

Why not dnspython here: the pacer handles every upstream packet, and a full parse per
datagram costs more CPU than the whole forwarding step. These functions read only the header,
the question and (for answers) the TTLs, never raise on malformed input (they return None),
and are pure.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

HEADER = 12
RCODE_NOERROR = 0
RCODE_NXDOMAIN = 3
TYPE_SOA = 6
CLASS_IN = 1
_MAX_NAME = 255

#: Text names of the record types the warm list writes; others are written as TYPEnnn.
TYPE_NAMES: dict[int, str] = {
    1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA",
    33: "SRV", 35: "NAPTR", 43: "DS", 48: "DNSKEY", 64: "SVCB", 65: "HTTPS", 257: "CAA",
}
TYPE_CODES: dict[str, int] = {name: code for code, name in TYPE_NAMES.items()}


@dataclass(frozen=True)
class Question:
    """One query's identity. `key` coalesces identical questions: the RD and CD bits and the
    lower-cased question section (name, type, class). `end` is where the question ends, so
    a reply can carry each waiter's own question bytes (its letter case) back."""

    key: bytes
    end: int
    qtype: int


def parse_query(msg: bytes) -> Question | None:
    """The question of a one-question query (QR=0, opcode QUERY), or None for anything
    else (responses, notifies, updates, truncated or oversized names)."""
    if len(msg) < HEADER + 5 or msg[2] & 0x80 or msg[2] & 0x78 or msg[4:6] != b"\x00\x01":
        return None
    i = HEADER
    n = len(msg)
    while True:
        if i >= n:
            return None
        length = msg[i]
        if length == 0:
            break
        if length & 0xC0:  # compression is not allowed in a query's question
            return None
        i += length + 1
        if i - HEADER > _MAX_NAME:
            return None
    end = i + 5
    if end > n:
        return None
    qtype = (msg[i + 1] << 8) | msg[i + 2]
    # Only the name is case-folded: a type byte such as 0x41 (HTTPS is 65) must stay.
    key = bytes([msg[2] & 0x01, msg[3] & 0x10]) + msg[HEADER:i + 1].lower() + msg[i + 1:end]
    return Question(key, end, qtype)


def rcode(msg: bytes) -> int:
    """The response code (header bits only; extended rcodes are ignored)."""
    return msg[3] & 0x0F if len(msg) >= 4 else -1


def is_truncated(msg: bytes) -> bool:
    return len(msg) >= 3 and bool(msg[2] & 0x02)


def _skip_name(msg: bytes, i: int) -> int | None:
    """Offset after the (possibly compressed) name at `i`, or None when malformed."""
    n = len(msg)
    while i < n:
        length = msg[i]
        if length == 0:
            return i + 1
        if length & 0xC0 == 0xC0:
            return i + 2 if i + 2 <= n else None
        if length & 0xC0:
            return None
        i += length + 1
    return None


def answer_ttl(msg: bytes) -> int | None:
    """How long a cache may keep this answer: the lowest TTL in the answer section; for a
    negative answer (no answer records), min(SOA TTL, SOA MINIMUM) from the authority
    section (RFC 2308). None for SERVFAIL/REFUSED and other errors, a negative answer
    without an SOA, or a malformed message."""
    if len(msg) < HEADER:
        return None
    code = rcode(msg)
    if code not in (RCODE_NOERROR, RCODE_NXDOMAIN):
        return None
    qd, an, ns = struct.unpack_from("!HHH", msg, 4)
    i: int | None = HEADER
    for _ in range(qd):
        i = _skip_name(msg, i) if i is not None else None
        if i is None or i + 4 > len(msg):
            return None
        i += 4
    best: int | None = None
    for section, count in ((0, an), (1, ns)):
        if section == 1 and best is not None:
            break
        for _ in range(count):
            i = _skip_name(msg, i) if i is not None else None
            if i is None or i + 10 > len(msg):
                return None
            rtype, _cls, ttl, rdlen = struct.unpack_from("!HHIH", msg, i)
            rdata = i + 10
            i = rdata + rdlen
            if i > len(msg):
                return None
            ttl &= 0x7FFFFFFF
            if section == 0:
                best = ttl if best is None else min(best, ttl)
            elif rtype == TYPE_SOA:
                j = _skip_name(msg, rdata)
                j = _skip_name(msg, j) if j is not None else None
                if j is None or j + 20 > i:
                    return None
                minimum = struct.unpack_from("!I", msg, j + 16)[0] & 0x7FFFFFFF
                return min(ttl, minimum)
    return best


#: Label bytes that survive a `name type` text line: printable ASCII except . \\ ; " and space.
_SAFE_LABEL = re.compile(rb'[\x21\x23-\x2d\x2f-\x3a\x3c-\x5b\x5d-\x7e]+')


def name_text(question_key: bytes) -> str | None:
    """Presentation form ("www.example.com.") of the name in a `Question.key`, or None
    when a label holds characters that would not survive a `name type` text line."""
    labels = []
    i = 2
    n = len(question_key)
    while i < n:
        length = question_key[i]
        if length == 0:
            break
        label = question_key[i + 1:i + 1 + length]
        if not _SAFE_LABEL.fullmatch(label):
            return None
        labels.append(label)
        i += length + 1
    return b".".join(labels).decode("ascii") + "."


def type_text(qtype: int) -> str:
    return TYPE_NAMES.get(qtype, f"TYPE{qtype}")


def type_code(text: str) -> int | None:
    """A type mnemonic ("AAAA") or "TYPEnnn" as its number, or None when unknown."""
    up = text.upper()
    if up in TYPE_CODES:
        return TYPE_CODES[up]
    if up.startswith("TYPE") and up[4:].isdigit() and 0 < int(up[4:]) < 65536:
        return int(up[4:])
    return None


def encode_name(name: str) -> bytes | None:
    """Wire form of a presentation name (no escapes), or None when it is not a valid name."""
    name = name.rstrip(".")
    out = bytearray()
    if name:
        for label in name.split("."):
            raw = label.encode("ascii", errors="strict") if label.isascii() else b""
            if not raw or len(raw) > 63:
                return None
            out.append(len(raw))
            out += raw
    out.append(0)
    return bytes(out) if len(out) <= _MAX_NAME else None


def build_query(qid: int, name: str, qtype: int) -> bytes | None:
    """A recursive (RD) one-question IN query, as a stub would send it; None for a bad name."""
    wire = encode_name(name)
    if wire is None:
        return None
    return struct.pack("!HHHHHH", qid & 0xFFFF, 0x0100, 1, 0, 0, 0) + wire + struct.pack(
        "!HH", qtype, CLASS_IN)


def question_key(name: str, qtype: int, *, rd: bool = True) -> bytes | None:
    """The `Question.key` a query for (name, qtype) with RD set has (CD clear)."""
    q = build_query(0, name, qtype)
    if q is None:
        return None
    parsed = parse_query(q if rd else q[:2] + b"\x00" + q[3:])
    return parsed.key if parsed else None


def warm_key(key: bytes) -> bytes:
    """The part of a question key that names (name, type, class), flags left out: what the
    warm-up recognises whatever flags named sets on its forwarded query."""
    return key[2:]
