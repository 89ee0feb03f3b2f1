"""Does the host match the plan, and does the cache answer? One implementation of each fact,
used by `dnscache-agent verify` and by the shipped testinfra checks."""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

from . import hostfs, resolv_conf, resolvers
from .checkpoint import Entry, StateStore
from .health import CACHE_ADDRESS, Health
from .host_facts import Facts
from .plan_model import FileChange, Plan
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
PACER_RUNNING = "pacer running"
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


def unjudged_files(plan: Plan, unreadable: frozenset[str]) -> frozenset[str]:
    """The plan's files this process cannot judge: the resolver backend's files when the
    view lacked inputs it may not read (the plan for them is then a guess). Pure."""
    if not unreadable:
        return frozenset()
    return frozenset(f.path for f in plan.resolver_files())


#: verify's line for files only the privileged side can check (the daemon's user cannot).
ROOT_ONLY = "checked by the privileged repair"


def check_files(plan: Plan, root: Root, regenerated: frozenset[str] = frozenset(),
                unjudged: frozenset[str] = frozenset()) -> list[Check]:
    """Byte comparison, except for files the resolver manager rewrites itself (dhclient-script
    writes its own resolv.conf layout on every renew): those are judged by the wiring
    invariants in `check_resolver`, so a renew is not reported as drift. Files this process
    may not read, or plans from inputs it may not read, are reported as such, not as drift."""
    out = []
    for f in plan.files:
        try:
            live = root.read_bytes(f.path)
        except PermissionError:
            out.append(Check(f"file {f.path}", True, f"not readable by this user: {ROOT_ONLY}",
                             f.path))
            continue
        if f.path in unjudged:
            out.append(Check(f"file {f.path}", True, f"planned from files this user cannot "
                             f"read: {ROOT_ONLY}", f.path))
        elif f.path in regenerated:
            out.append(Check(f"file {f.path}", True,
                             "rewritten by the resolver manager; judged by its wiring", f.path))
        elif live == f.content:
            out.append(Check(f"file {f.path}", True, "matches the plan", f.path))
        else:
            line, what = first_difference(live, f.content)
            out.append(Check(f"file {f.path}", False, f"drift: {what}", f.path, line or None))
    return out


# --- mode and owner of the files the plan writes ----------------------------------------------

@dataclass(frozen=True)
class ExpectedMeta:
    """What `verify` expects of a file's mode and owner, and why. `mode`/`uid`/`gid` None:
    only the floor applies (never writable by everyone)."""

    mode: int | None
    uid: int | None
    gid: int | None
    source: str


def expected_meta(change: FileChange, recorded: Entry | None, *, regenerated: bool,
                  planned_gid: int) -> ExpectedMeta:
    """The mode and owner a file the plan writes must have (pure).

    - A file the agent created (no file there before: the checkpoint says it did not exist,
      or was a symlink the agent replaced) gets the plan's mode, root as owner and the plan's
      group: that is what the transaction writes.
    - A file that existed keeps its mode and owner (the transaction never changes them), so
      the expectation is what `original/` recorded before the agent first touched it, minus
      the world-write bit.
    - A file the resolver manager regenerates, or one the agent has no record of (not applied
      yet, or the state was moved aside): only the floor.
    The floor, always: no file the agent owns may be world-writable (`chmod 666
    /etc/resolv.conf` lets any local user steer every lookup).
    """
    if regenerated:
        return ExpectedMeta(None, None, None, "rewritten by the resolver manager")
    if recorded is None:
        return ExpectedMeta(None, None, None, "no checkpoint record")
    if recorded.existed and recorded.symlink is None:
        return ExpectedMeta(recorded.mode & ~0o002, recorded.uid, recorded.gid,
                            "as before the agent, from its checkpoint")
    return ExpectedMeta(change.mode, 0, planned_gid, "as the plan creates it")


#: What the kernel shows for an id that is not mapped into this user namespace (the daemon's
#: unit has PrivateUsers=yes: only root and its own user are mapped, bind's group is not).
OVERFLOW_ID = 65534


def judge_meta(path: str, live: hostfs.FileMeta, expected: ExpectedMeta, *,
               overflow_id: int = OVERFLOW_ID) -> Check:
    """One check of a file's mode and owner against `expected` (pure). An owner shown as the
    overflow id cannot be judged from this user namespace and is not called drift."""
    name = f"mode {path}"
    want_mode = expected.mode
    if want_mode is None and live.mode & 0o002:
        want_mode = live.mode & ~0o002
    wrong_mode = want_mode is not None and live.mode != want_mode
    owner_visible = overflow_id not in (live.uid, live.gid)
    wrong_owner = (owner_visible and expected.uid is not None and expected.gid is not None
                   and (live.uid, live.gid) != (expected.uid, expected.gid))
    have = f"mode {live.mode:04o} owner {live.uid}:{live.gid}"
    if not wrong_mode and not wrong_owner:
        return Check(name, True, f"{have} ({expected.source})", path)
    problems = []
    fixes = []
    if wrong_mode:
        assert want_mode is not None
        why = ", world-writable: any local user could rewrite it" if live.mode & 0o002 else ""
        problems.append(f"mode {live.mode:04o}, expected {want_mode:04o}{why}")
        fixes.append(f"chmod {want_mode:04o} {path}")
    if wrong_owner:
        problems.append(f"owner {live.uid}:{live.gid}, expected {expected.uid}:{expected.gid}")
        fixes.append(f"chown {expected.uid}:{expected.gid} {path}")
    return Check(name, False, f"{'; '.join(problems)} ({expected.source})", path, None,
                 " && ".join(fixes))


def check_modes(plan: Plan, root: Root, store: StateStore,
                regenerated: frozenset[str] = frozenset()) -> list[Check]:
    """Mode and owner of every file the plan writes that is on the host (a missing file is
    the byte check's finding). Raises StateError when the checkpoint is damaged."""
    original = store.original
    out = []
    for f in plan.files:
        try:
            live = hostfs.meta_of(root.resolve(f.path))
        except OSError:
            live = None
        if live is None:
            continue
        expected = expected_meta(f, original.entries.get(f.path),
                                 regenerated=f.path in regenerated,
                                 planned_gid=hostfs.gid_for(f.group))
        out.append(judge_meta(f.path, live, expected))
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


# --- named's forwarders, read from the live options file (pure) ---------------------------

_COMMENTS = re.compile(r"/\*.*?\*/|//[^\n]*|#[^\n]*", re.S)


def parse_forwarding(text: str) -> tuple[str | None, tuple[str, ...]]:
    """`forward` mode and `forwarders` of a named options text (first block wins, like the
    options statement itself). Comments are ignored; `port N` suffixes are dropped."""
    body = _COMMENTS.sub(" ", text)
    mode = re.search(r"\bforward\s+(only|first)\s*;", body)
    block = re.search(r"\bforwarders\s*(?:port\s+\d+\s*)?\{([^}]*)\}", body)
    servers: tuple[str, ...] = ()
    if block:
        servers = tuple(e.split()[0] for e in block.group(1).split(";") if e.strip())
    return (mode.group(1) if mode else None), servers


def check_named_forwarding(text: str | None, settings: Settings, path: str) -> Check:
    """named forwards only to the pacer when it is on (every miss must pass the packet
    budget), else only to the configured resolvers."""
    if not settings.pacer.enabled:
        return check_forwarders(text, settings.all_forwarders, path)
    listen, port = settings.pacer.listen, settings.pacer.port
    check = check_forwarders(text, (listen,), path)
    if check.ok and text is not None and not re.search(
            rf"\b{re.escape(listen)}\s+port\s+{port}\s*;", _COMMENTS.sub(" ", text)):
        return replace(check, ok=False, detail=f"forwards to {listen}, but not to the pacer's "
                       f"port {port}", fix="run `dnscache-agent apply`")
    return check


def check_forwarders(text: str | None, allowed: Sequence[str], path: str) -> Check:
    """named forwards only (`forward only`) and only to addresses in `allowed`."""
    allowed_set = {_normal_ip(a) for a in allowed}
    fix = (f"set cache.forwarders in the agent settings and run `dnscache-agent apply`; "
           f"allowed here: {', '.join(allowed)}")
    if text is None:
        return Check(FORWARDERS, False, f"{path} is missing", path, None,
                     "run `dnscache-agent apply`")
    mode, servers = parse_forwarding(text)
    line = next((i for i, raw in enumerate(text.splitlines(), 1)
                 if re.search(r"\bforwarders\b", _COMMENTS.sub(" ", raw))), None)
    if not servers:
        return Check(FORWARDERS, False, "no forwarders: named would resolve from the root "
                     "servers", path, line, fix)
    stray = [s for s in servers if _normal_ip(s) not in allowed_set]
    if stray:
        return Check(FORWARDERS, False, f"forwards to {', '.join(stray)}, which is not an "
                     f"allowed resolver", path, line, fix)
    if mode != "only":
        return Check(FORWARDERS, False, f"forward {mode or 'first (the default)'}: named "
                     "recurses itself when the forwarders fail", path, line,
                     "set `forward only;` (run `dnscache-agent apply`)")
    return Check(FORWARDERS, True, f"forward only to {', '.join(servers)}", path, line)


def _normal_ip(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address


# --- listening sockets -----------------------------------------------------------------

@dataclass(frozen=True)
class Listener:
    """A listening socket: "udp" or "tcp", local address and port, owning process name."""

    proto: str
    address: str
    port: int
    process: str


def listening_sockets() -> list[Listener]:
    """Every listening TCP socket and bound unconnected UDP socket on the host (needs root
    to see other users' processes)."""
    import psutil

    names: dict[int, str] = {}
    out = []
    for conn in psutil.net_connections(kind="inet"):
        if not conn.laddr:
            continue
        if conn.type == socket.SOCK_STREAM:
            if conn.status != psutil.CONN_LISTEN:
                continue
            proto = "tcp"
        elif conn.raddr:
            continue
        else:
            proto = "udp"
        name = ""
        if conn.pid is not None:
            if conn.pid not in names:
                try:
                    names[conn.pid] = psutil.Process(conn.pid).name()
                except psutil.Error:
                    names[conn.pid] = ""
            name = names[conn.pid]
        out.append(Listener(proto, conn.laddr.ip, conn.laddr.port, name))
    return out


def check_listeners(listeners: Sequence[Listener], *, process: str, port: int, name: str,
                    need: Sequence[str] = ("udp", "tcp"),
                    address: str = CACHE_ADDRESS) -> Check:
    """`process` listens on `address`:`port` for every protocol in `need`, and on that port
    only on loopback addresses (a wildcard address counts as exposed). A socket whose owner
    is not visible (no CAP_SYS_PTRACE, e.g. in a container) counts as `process`'s."""
    own = [s for s in listeners if s.process in (process, "") and s.port == port]
    exposed = sorted({f"{_hostport(s.address, s.port)}/{s.proto}" for s in own
                      if not resolv_conf.is_loopback(s.address)})
    missing = [p for p in need
               if not any(s.proto == p and s.address == address for s in own)]
    if exposed:
        return Check(name, False, f"{process} listens on {', '.join(exposed)}", None, None,
                     f"restrict listen-on to {address} (run `dnscache-agent apply`) and "
                     f"restart {process}")
    if missing:
        return Check(name, False, f"{process} does not listen on "
                     f"{_hostport(address, port)}/{'+'.join(missing)}", None, None,
                     f"start {process} with the agent's config (`dnscache-agent apply`); "
                     f"check that no other process holds port {port}")
    where = sorted({f"{_hostport(s.address, s.port)}/{s.proto}" for s in own})
    unseen = " (socket owner not visible)" if any(not s.process for s in own) else ""
    return Check(name, True, f"{process} on {', '.join(where)}{unseen}")


def _hostport(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


# --- DNS probes ------------------------------------------------------------------------

@dataclass(frozen=True)
class Answer:
    """One DNS response, or none (`rcode` None, `detail` says why)."""

    rcode: str | None
    records: tuple[str, ...]
    detail: str


def ask(server: str, name: str, recurse: bool = True, *, port: int = 53,
        timeout: float = 2.0) -> Answer:
    """One A query over UDP; never raises. `recurse=False` clears RD, so a recursive
    server answers only from its cache."""
    import dns.exception
    import dns.flags
    import dns.message
    import dns.query
    import dns.rcode

    msg = dns.message.make_query(name, "A")
    if not recurse:
        msg.flags &= ~dns.flags.RD
    try:
        resp = dns.query.udp(msg, server, port=port, timeout=timeout)
    except dns.exception.Timeout:
        return Answer(None, (), f"no answer from {server} in {timeout:g}s")
    except OSError as exc:
        return Answer(None, (), f"{server}: {exc.strerror or exc}")
    except dns.exception.DNSException as exc:
        return Answer(None, (), f"{server}: {exc}")
    records = tuple(sorted(rd.to_text() for rrset in resp.answer for rd in rrset))
    return Answer(dns.rcode.to_text(resp.rcode()), records,
                  f"{dns.rcode.to_text(resp.rcode())} from {server}")


def check_cache_hit(name: str, first: Answer, repeat: Answer) -> Check:
    """`first` (recursive) resolved `name` through the cache and `repeat` (no recursion
    desired, so only the cache can answer) returned the same answer."""
    fix_resolve = (f"named must be running and its forwarder must answer {name} "
                   f"(try `dig @{CACHE_ADDRESS} {name}`)")
    if first.rcode not in ("NOERROR", "NXDOMAIN"):
        return Check(CACHE_HIT, False, f"{name} does not resolve through {CACHE_ADDRESS}: "
                     f"{first.detail}", None, None, fix_resolve)
    same = repeat.rcode == first.rcode and repeat.records == first.records
    if first.rcode == "NOERROR" and not first.records:
        same = False  # an empty NOERROR repeat could be a referral, not a cached answer
    if not same:
        got = f"{repeat.detail} {list(repeat.records)}" if repeat.rcode else repeat.detail
        return Check(CACHE_HIT, False, f"{name} resolved ({first.rcode} {list(first.records)})"
                     f" but the repeat was not served from cache: {got}", None, None,
                     "caching is off or the cache is flushed between queries: check "
                     "max-cache-size and that allow-query-cache includes localhost")
    shown = ", ".join(first.records) or first.rcode
    return Check(CACHE_HIT, True, f"{name} -> {shown}; the repeat came from the cache")


def local_addresses() -> list[str]:
    """The host's non-loopback unicast addresses (IPv6 link-local left out: it needs a
    scope to be reached)."""
    import psutil

    out = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            ip = a.address.split("%")[0]
            try:
                parsed = ipaddress.ip_address(ip)
            except ValueError:
                continue
            if parsed.is_loopback or (parsed.version == 6 and parsed.is_link_local):
                continue
            out.append(ip)
    return sorted(set(out))


def check_not_exposed(probes: Sequence[tuple[str, Answer]]) -> Check:
    """No non-loopback address of the host answers DNS queries (REFUSED is not an answer,
    but the listener check reports the socket)."""
    answered = [f"{addr} ({a.rcode})" for addr, a in probes
                if a.rcode is not None and a.rcode != "REFUSED"]
    if answered:
        return Check(NOT_EXPOSED, False, f"the cache answers on {', '.join(answered)}",
                     None, None, "restrict listen-on and allow-query to loopback "
                     "(run `dnscache-agent apply`) and check the firewall")
    if not probes:
        return Check(NOT_EXPOSED, True, "no non-loopback address to probe")
    return Check(NOT_EXPOSED, True,
                 f"no answer on {', '.join(addr for addr, _ in probes)}")


# --- what to do when an older check fails --------------------------------------------------

def _with_fix(check: Check, facts: Facts) -> Check:
    if check.ok or check.fix:
        return check
    unit = facts.profile.unit
    fixes = {
        BIND_INSTALLED: f"install {facts.profile.package}: `dnscache-agent apply "
                        "--install-packages`",
        NAMED_ENABLED: f"`systemctl enable {unit}` (run `dnscache-agent apply`)",
        NAMED_RUNNING: f"`systemctl start {unit}`; see `journalctl -u {unit}` for why it "
                       "stopped",
        RESOLVER_WIRING: "run `dnscache-agent apply`; if the resolver manager rewrote the "
                         "file, check the backend `dnscache-agent facts` reports",
        CACHE_ANSWERS: f"named must run and reach its forwarder: `journalctl -u {unit}`",
        STATISTICS_CHANNEL: "the statistics-channels block must be in named's config "
                            "(run `dnscache-agent apply`)",
    }
    fix = fixes.get(check.name)
    if fix is None and check.name.startswith("file "):
        fix = ("run `dnscache-agent apply` (the agent owns this file; put changes in its "
               "settings)")
    return replace(check, fix=fix or "")


def check_links(plan: Plan, root: Root) -> list[Check]:
    """The symlinks the plan owns (the agent units' [Install] links) point where planned."""
    out = []
    for link in plan.links:
        live = root.readlink(link.path)
        if live == link.target:
            out.append(Check(f"link {link.path}", True, f"-> {link.target}", link.path))
        else:
            what = "missing" if live is None else f"points to {live}"
            out.append(Check(f"link {link.path}", False, f"drift: {what}, not {link.target}",
                             link.path, None, "run `dnscache-agent install-service` (or "
                             "`dnscache-agent apply`)"))
    return out


def verify(facts: Facts, settings: Settings, plan: Plan, root: Root, *,
           named_active: Callable[[], bool] | None = None,
           health: Callable[[], Health] | None = None,
           stats_ok: Callable[[], tuple[bool, str]] | None = None,
           named_enabled: Callable[[], bool] | None = None,
           listeners: Callable[[], Sequence[Listener]] | None = None,
           query: Callable[[str, str, bool], Answer] | None = None,
           addresses: Callable[[], Sequence[str]] | None = None,
           pacer: Callable[[], tuple[bool, str]] | None = None) -> VerifyReport:
    """All checks; live probes (service, sockets, queries, statistics channel) only when
    given. `query(server, name, recurse)` is one DNS query; `addresses()` the host's
    non-loopback addresses probed for answers (configured forwarders are skipped)."""
    checks = [Check(BIND_INSTALLED, facts.bind.installed,
                    facts.bind.version_text or f"{facts.profile.named_binary} missing")]
    unjudged = unjudged_files(plan, facts.view.unreadable)
    checks += check_files(plan, root, plan.regenerated, unjudged)
    checks += check_links(plan, root)
    checks += check_modes(plan, root, StateStore(root, settings.agent.state_dir),
                          plan.regenerated)
    options = facts.profile.options_path
    checks.append(check_named_forwarding(root.read_text(options), settings, options))
    checks.append(check_resolver(facts, settings, root))
    if named_enabled is not None:
        enabled = named_enabled()
        checks.append(Check(NAMED_ENABLED, enabled,
                            "enabled at boot" if enabled else "not enabled at boot"))
    if named_active is not None:
        active = named_active()
        checks.append(Check(NAMED_RUNNING, active, "active" if active else "not running"))
    process = facts.profile.named_binary.rsplit("/", 1)[-1]
    if listeners is not None:
        sockets = listeners()
        checks.append(check_listeners(sockets, process=process, port=53,
                                      name=LISTENS_LOOPBACK))
        checks.append(check_listeners(sockets, process=process,
                                      port=settings.cache.statistics_port,
                                      name=STATISTICS_LOOPBACK, need=("tcp",)))
    if pacer is not None:
        ok, detail = pacer()
        checks.append(Check(PACER_RUNNING, ok, detail, None, None,
                            "" if ok else "run `dnscache-agent apply` (it starts the pacer); "
                            "see the pacer's log (journalctl -u dnscache-agent-pacer, or "
                            "/run/dnscache-agent-pacer/pacer.log without systemd)"))
    if health is not None:
        h = health()
        checks.append(Check(CACHE_ANSWERS, h.ok, h.detail))
    if query is not None:
        name = settings.cache.health_name
        first = query(CACHE_ADDRESS, name, True)
        checks.append(check_cache_hit(name, first, query(CACHE_ADDRESS, name, False)))
        if addresses is not None:
            skip = {_normal_ip(a) for a in settings.all_forwarders}
            targets = [a for a in addresses() if _normal_ip(a) not in skip]
            checks.append(check_not_exposed([(a, query(a, name, True)) for a in targets]))
    if stats_ok is not None:
        ok, detail = stats_ok()
        checks.append(Check(STATISTICS_CHANNEL, ok, detail))
    return VerifyReport(tuple(_with_fix(c, facts) for c in checks))
