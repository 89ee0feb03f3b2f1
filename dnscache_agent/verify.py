"""Does the host match the plan, and does the cache answer? One implementation of each fact,
used by `dnscache-agent verify` and by the shipped testinfra checks."""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

from . import resolv_conf, resolvers
from .health import CACHE_ADDRESS, Health
from .host_facts import Facts
from .plan_model import Plan
from .rootfs import Root
from .settings import AMAZON_DNS_V4, AMAZON_DNS_V6, Settings

log = logging.getLogger(__name__)

# Names of the checks other surfaces (the shipped testinfra checks, the daemon) key on.
BIND_INSTALLED = "bind installed"
NAMED_ENABLED = "named enabled"
NAMED_RUNNING = "named running"
LISTENS_LOOPBACK = "named listens on loopback only"
FORWARDERS = "forwarders"
RESOLVER_WIRING = "resolver wiring"
CACHE_ANSWERS = "cache answers"
CACHE_HIT = "cache hit"
STATISTICS_CHANNEL = "statistics channel"
STATISTICS_LOOPBACK = "statistics channel on loopback only"
NOT_EXPOSED = "no answer off loopback"
AMAZON_RESOLVERS: tuple[str, ...] = (AMAZON_DNS_V4, AMAZON_DNS_V6)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    path: str | None = None
    line: int | None = None
    # What to do about a failed check, in one sentence; empty when it passed.
    fix: str = ""


@dataclass(frozen=True)
class VerifyReport:
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "checks": [asdict(c) for c in self.checks]}


def first_difference(live: bytes | None, wanted: bytes) -> tuple[int, str]:
    """The first differing line (1-based) and a description of it."""
    if live is None:
        return 0, "file is missing"
    a, b = live.decode(errors="replace").splitlines(), wanted.decode(errors="replace").splitlines()
    for i, (x, y) in enumerate(zip(a, b), 1):
        if x != y:
            return i, f"line {i} is {x!r}, expected {y!r}"
    if len(a) != len(b):
        n = min(len(a), len(b)) + 1
        return n, (f"line {n} is extra: {a[n - 1]!r}" if len(a) > len(b)
                   else f"line {n} is missing: {b[n - 1]!r}")
    return 0, "differs only in trailing bytes"


def check_files(plan: Plan, root: Root, regenerated: frozenset[str] = frozenset()) -> list[Check]:
    """Byte comparison, except for files the resolver manager rewrites itself (dhclient-script
    writes its own resolv.conf layout on every renew): those are judged by the wiring
    invariants in `check_resolver`, so a renew is not reported as drift."""
    out = []
    for f in plan.files:
        live = root.read_bytes(f.path)
        if f.path in regenerated:
            out.append(Check(f"file {f.path}", True,
                             "rewritten by the resolver manager; judged by its wiring", f.path))
        elif live == f.content:
            out.append(Check(f"file {f.path}", True, "matches the plan", f.path))
        else:
            line, what = first_difference(live, f.content)
            out.append(Check(f"file {f.path}", False, f"drift: {what}", f.path, line or None))
    return out


def check_resolver(facts: Facts, settings: Settings, root: Root) -> Check:
    backend = resolvers.get(facts.resolver.backend)
    path = backend.effective_resolv_conf(facts.view)
    text = root.read_text(path)
    if text is None:
        return Check("resolver wiring", False, f"{path} is missing", path)
    original = resolv_conf.parse(facts.view.text(resolvers.base.RESOLV_CONF) or "")
    problems = resolv_conf.check_invariants(text, original=original,
                                            fallback=settings.resolver.fallback_servers)
    if not problems:
        return Check("resolver wiring", True,
                     f"{path}: 127.0.0.1 first, fallback kept ({backend.name})", path)
    first = problems[0]
    return Check("resolver wiring", False, "; ".join(p.message for p in problems), path,
                 first.line or None)


def verify(facts: Facts, settings: Settings, plan: Plan, root: Root, *,
           named_active: Callable[[], bool] | None = None,
           health: Callable[[], Health] | None = None,
           stats_ok: Callable[[], tuple[bool, str]] | None = None) -> VerifyReport:
    """All checks; live probes (service, query, statistics channel) only when given."""
    checks = [Check("bind installed", facts.bind.installed,
                    facts.bind.version_text or f"{facts.profile.named_binary} missing")]
    backend = resolvers.get(facts.resolver.backend)
    checks += check_files(plan, root, frozenset(backend.regenerated))
    checks.append(check_resolver(facts, settings, root))
    if named_active is not None:
        active = named_active()
        checks.append(Check("named running", active, "active" if active else "not running"))
    if health is not None:
        h = health()
        checks.append(Check("cache answers", h.ok, h.detail))
    if stats_ok is not None:
        ok, detail = stats_ok()
        checks.append(Check("statistics channel", ok, detail))
    return VerifyReport(tuple(checks))
