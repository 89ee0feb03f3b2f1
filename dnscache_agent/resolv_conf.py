"""resolv.conf(5) parsing and the wiring invariants, pure. Every resolver backend produces its
file through `wire()`, and `verify` checks any resolv.conf with `check_invariants()`, so the rules
(cache first, fallback kept, at most three servers, search kept, never rotate) live here once."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace

MAXNS = 3  # glibc reads at most three nameserver lines
CACHE_ADDRESS = "127.0.0.1"


@dataclass(frozen=True)
class ResolvConf:
    nameservers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    # Lines kept verbatim in their order (sortlist, unknown keywords); comments are dropped.
    other_lines: tuple[str, ...] = field(default=())
    # The keyword used for the search list: "search" or the older single "domain".
    search_keyword: str = "search"


def parse(text: str) -> ResolvConf:
    """Parse resolv.conf text the way glibc does: last search/domain wins, options accumulate."""
    servers: list[str] = []
    search: tuple[str, ...] = ()
    keyword = "search"
    options: list[str] = []
    others: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        parts = line.split()
        key, args = parts[0], parts[1:]
        if key == "nameserver" and args:
            servers.append(args[0])
        elif key in ("search", "domain") and args:
            search, keyword = tuple(args), key
        elif key == "options":
            options.extend(args)
        else:
            others.append(line)
    return ResolvConf(tuple(servers), search, tuple(options), tuple(others), keyword)


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


def fallback_servers(original: ResolvConf, count: int) -> tuple[str, ...]:
    """The first `count` non-loopback servers of the original file: the fallback if the cache
    dies. Loopback servers (a previous local cache, resolved's stub) are not a fallback."""
    return tuple(s for s in original.nameservers if not is_loopback(s))[:count]


def wire(original: ResolvConf, *, fallback: int, timeout: int, attempts: int,
         cache: str = CACHE_ADDRESS, extra_fallback: tuple[str, ...] = ()) -> ResolvConf:
    """The resolv.conf the host should have: the cache first, up to `fallback` original servers
    after it (then `extra_fallback`, e.g. the VPC resolver when the original had none), search
    kept, `rotate` removed (it would send a third of lookups past the cache), and a short
    timeout so a dead cache costs about a second, not five."""
    servers = [cache]
    for s in fallback_servers(original, fallback) + extra_fallback:
        if len(servers) > fallback or len(servers) >= MAXNS:
            break
        if s not in servers:
            servers.append(s)
    options = [o for o in original.options
               if o != "rotate" and not o.startswith(("timeout:", "attempts:"))]
    options += [f"timeout:{timeout}", f"attempts:{attempts}"]
    return replace(original, nameservers=tuple(servers), options=tuple(options))


def to_lines(conf: ResolvConf) -> dict[str, list[str]]:
    """The parts a template needs to render `conf`."""
    search_lines = [f"{conf.search_keyword} {' '.join(conf.search)}"] if conf.search else []
    return {
        "search_lines": search_lines,
        "nameservers": list(conf.nameservers),
        "options": list(conf.options),
        "other_lines": list(conf.other_lines),
    }


@dataclass(frozen=True)
class Violation:
    """One broken invariant: the line (1-based, 0 when the line is missing) and what is wrong."""

    line: int
    message: str


def check_invariants(text: str, *, original: ResolvConf | None = None,
                     fallback: int = 1, cache: str = CACHE_ADDRESS) -> list[Violation]:
    """Check a live resolv.conf against the wiring invariants; empty means it is wired."""
    conf = parse(text)
    out: list[Violation] = []
    ns_lines = [i for i, raw in enumerate(text.splitlines(), 1)
                if raw.split()[:1] == ["nameserver"]]
    if not conf.nameservers or conf.nameservers[0] != cache:
        out.append(Violation(ns_lines[0] if ns_lines else 0,
                             f"first nameserver must be {cache}, found "
                             f"{conf.nameservers[0] if conf.nameservers else 'none'}"))
    if len(conf.nameservers) > MAXNS:
        out.append(Violation(ns_lines[MAXNS], f"{len(conf.nameservers)} nameservers; glibc "
                                              f"reads only the first {MAXNS}"))
    if "rotate" in conf.options:
        line = next((i for i, raw in enumerate(text.splitlines(), 1)
                     if raw.startswith("options") and "rotate" in raw.split()), 0)
        out.append(Violation(line, "options rotate sends lookups past the cache"))
    if fallback and original is not None:
        wanted = fallback_servers(original, fallback)
        if wanted and not set(wanted) & set(conf.nameservers[1:MAXNS]):
            out.append(Violation(0, f"no fallback server kept (expected {', '.join(wanted)})"))
    if original is not None and original.search and conf.search != original.search:
        out.append(Violation(0, f"search list changed: expected {' '.join(original.search)}"))
    return out
