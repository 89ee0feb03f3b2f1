"""Where the upstream budget goes (issue 13, section 2): upstream questions → bounded minute
and hour tallies, by (name, type) and by class, each class naming its fix. Pure: events and
`now` come in, reports go out; nothing is written anywhere (no query log).

Classes, in the order an event is assigned to the first that matches:

* `tcp-fallback`: answered over TCP after a truncated UDP answer (about 5 more packets each);
* `search-nxdomain`: NXDOMAIN for a resolv.conf search-list expansion of a name that already
  had a dot (`api.example.com.ec2.internal`, `name.ec2.internal.ec2.internal`): the stub's
  `ndots` made it try the search domains first;
* `aaaa-nodata`: AAAA answered NOERROR with no records (an IPv4-only name, typically asked by
  an IPv4-only host);
* `repeated-nxdomain`: the same (name, type) answered NXDOMAIN again within the minute (the
  first answer is in `other`: only the repeats are what a longer negative cache saves);
* `short-ttl`: a positive answer with a TTL under `short_ttl` seconds;
* `other`.

Counting is per event into the current minute: packets per class exactly, packets per
(name, type) for at most `max_keys` keys a minute. When a minute ends it is compacted to its
`keep` costliest keys and domains and its class totals, and the last 60 minutes are kept:
memory is bounded by about 60 x `keep` + `max_keys` keys (and as many domains) whatever the
query rate. Domains (a name's parent) add up the names a client generates under one
domain, each cheap alone.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field, replace

from ..resolv_conf import ResolvConf

RCODE_NOERROR = 0
RCODE_NXDOMAIN = 3
MINUTE = 60.0
HOUR_MINUTES = 60

TCP_FALLBACK = "tcp-fallback"
SEARCH_NXDOMAIN = "search-nxdomain"
AAAA_NODATA = "aaaa-nodata"
REPEATED_NXDOMAIN = "repeated-nxdomain"
SHORT_TTL = "short-ttl"
OTHER = "other"
CLASSES = (TCP_FALLBACK, SEARCH_NXDOMAIN, AAAA_NODATA, REPEATED_NXDOMAIN, SHORT_TTL, OTHER)


@dataclass(frozen=True)
class UpstreamQuestion:
    """One question sent upstream and what came back. `rcode` is -1 when no answer came;
    `answers` is the answer-section record count (0 with NOERROR is NODATA); `ttl` is the
    answer's lowest TTL (or the negative TTL); `packets` is what the limit counted for it
    (1 for UDP; the TCP exchange's packets for a fallback)."""

    name: str
    qtype: str
    rcode: int
    answers: int = 0
    ttl: int | None = None
    tcp: bool = False
    packets: int = 1


def question_from_wire(key: bytes, qtype: int, response: bytes | None, *, tcp: bool = False,
                       packets: int = 1, name: str | None = None) -> UpstreamQuestion | None:
    """The event for a pacer question (`pacer.wire.Question.key` and `.qtype`) and the
    response that came back (None: no answer). None when the name cannot be shown as text.
    Reads only the header and TTLs, like the pacer's hot path; `name`, when the caller
    already has the key's text, saves decoding it again."""
    from ..pacer import wire  # the pacer's hand parser: no dnspython per packet

    if name is None:
        name = wire.name_text(key)
    if name is None:
        return None
    if response is None or len(response) < wire.HEADER:
        return UpstreamQuestion(name, wire.type_text(qtype), -1, 0, None, tcp, packets)
    answers = (response[6] << 8) | response[7]
    # A truncated UDP answer is the first packet of a TCP fallback, whatever it holds.
    return UpstreamQuestion(name, wire.type_text(qtype), wire.rcode(response), answers,
                            wire.answer_ttl(response), tcp or wire.is_truncated(response),
                            packets)


@dataclass(frozen=True)
class SearchPolicy:
    """The stub's search list and ndots, from resolv.conf (glibc defaults: none, 1)."""

    search: tuple[str, ...] = ()
    ndots: int = 1

    @classmethod
    def from_resolv_conf(cls, conf: ResolvConf) -> SearchPolicy:
        ndots = 1
        for option in conf.options:
            key, _, value = option.partition(":")
            if key == "ndots" and value.isdigit():
                ndots = min(int(value), 15)  # glibc caps ndots at 15
        search = tuple(_norm(d) for d in conf.search if _norm(d))
        return cls(search, ndots)

    def is_expansion(self, name: str) -> bool:
        """Whether `name` is the search-list expansion of a name that already had a dot
        (or of a name already ending in a search domain): what `ndots` above 1 produces.
        `db.ec2.internal` for `db` is the search list doing its job and does not count, so
        a name is an expansion only when every search domain it ends with leaves a dotted
        prefix (`redis.svc.cluster.local` can be `redis` + `svc.cluster.local`)."""
        n = _norm(name)
        prefixes = [n[: -len(d) - 1] for d in self.search if n.endswith("." + d)]
        return bool(prefixes) and all("." in p for p in prefixes)

    def advisory(self) -> str:
        """The resolv.conf line that stops the expansions of dotted names."""
        return ("options ndots:1" if self.ndots > 1 else
                "names with dots are already tried as given first (ndots:1); end names with "
                "a dot (api.example.com.) where search domains are tried anyway")


def _norm(name: str) -> str:
    return name.strip().rstrip(".").lower()


#: What each class's fix is; `setting` is the change that applies it, when one does.
@dataclass(frozen=True)
class Fix:
    text: str
    setting: str | None = None


@dataclass(frozen=True)
class FixContext:
    """What the host already runs, so each fix names the change still to make: the
    `[cache]` settings in force and whether the installed bind has the filter-aaaa plugin."""

    min_ncache_ttl: int = 0
    min_cache_ttl: int = 0
    filter_aaaa: bool = False
    filter_aaaa_available: bool = True


#: bind's ceiling for min-ncache-ttl and min-cache-ttl.
TTL_FLOOR_MAX = 90


def fixes(policy: SearchPolicy, short_ttl: int = 30,
          context: FixContext | None = None) -> dict[str, Fix]:
    """Each class's fix: the search advisory with the exact resolv.conf line, the exact
    setting values, and which of them the host already has."""
    ctx = context or FixContext()
    ncache = (f"[cache] min_ncache_ttl = {TTL_FLOOR_MAX}"
              if ctx.min_ncache_ttl < TTL_FLOOR_MAX else None)
    floor = min(max(short_ttl, 1), TTL_FLOOR_MAX)
    # Measured (docs/budget-fixes.md): the filter-aaaa plugin saves no upstream packet, so
    # it is mentioned for what it does, never offered as this class's fix.
    if ctx.filter_aaaa:
        aaaa_filter = ("[cache] filter_aaaa is on: clients get no AAAA records, but named "
                       "still asks for them.")
    elif ctx.filter_aaaa_available:
        aaaa_filter = ("[cache] filter_aaaa = true (bind's filter-aaaa plugin) hides AAAA "
                       "records from IPv4 clients but does not stop named asking upstream.")
    else:
        aaaa_filter = ""
    return {
        TCP_FALLBACK: Fix("Large answers (TXT, DNSSEC, many records) truncated over UDP cost "
                          "about 6 packets each over TCP: find who asks for the name and "
                          "whether it must; a longer cache lifetime cuts the repeats."),
        SEARCH_NXDOMAIN: Fix("The stub tries the search list before the name as given "
                             f"(ndots:{policy.ndots}): in resolv.conf, "
                             f"`{policy.advisory()}`; or use fully qualified names with a "
                             "trailing dot in the application's configuration. Advice only: "
                             "the agent does not change the stubs' ndots.",
                             f"resolv.conf: {policy.advisory()}"
                             if policy.ndots > 1 else None),
        AAAA_NODATA: Fix("An IPv4-only host asks for AAAA on every lookup and gets an empty "
                         "answer. What saves the packets: `options no-aaaa` in resolv.conf "
                         "(glibc 2.36 and later; the stub stops asking), and a negative-cache "
                         f"floor ({ncache or 'already at its maximum'}) for empty answers "
                         f"that expire fast. {aaaa_filter}".rstrip(),
                         ncache),
        REPEATED_NXDOMAIN: Fix("The same names fail again and again: "
                               + (f"raise the negative-cache floor to {TTL_FLOOR_MAX} s (now "
                                  f"{ctx.min_ncache_ttl} s) so each is asked at most once "
                                  f"every {TTL_FLOOR_MAX} s." if ncache else
                                  f"the negative-cache floor is already at its {TTL_FLOOR_MAX} "
                                  "s maximum: find the client that asks (the examples)."),
                               ncache),
        SHORT_TTL: Fix("Names with TTLs under the threshold are asked again every few "
                       "seconds: a cache floor keeps them longer (not for names used for "
                       "fast failover).",
                       f"[cache] min_cache_ttl = {floor}" if ctx.min_cache_ttl < floor
                       else None),
        OTHER: Fix("Cache misses of names with ordinary TTLs: the cost of the workload."),
    }


def with_fixes(report: TopReport, policy: SearchPolicy, short_ttl: int = 30,
               context: FixContext | None = None) -> TopReport:
    """`report` with each class's fix re-derived for `context` (what `top` knows about the
    host's settings and bind, which the pacer that tallied does not)."""
    fix = fixes(policy, short_ttl, context)
    classes = tuple(replace(c, fix=fix[c.klass].text, setting=fix[c.klass].setting)
                    if c.klass in fix else c for c in report.classes)
    return replace(report, classes=classes)


@dataclass
class _Key:
    packets: int = 0
    nxdomain: int = 0
    klass: str = OTHER
    rcode: int = -1
    ttl: int | None = None


@dataclass
class _Minute:
    start: float
    packets: int = 0
    untallied: int = 0
    classes: Counter[str] = field(default_factory=Counter)
    keys: dict[tuple[str, str], _Key] = field(default_factory=dict)
    domains: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class ClassStat:
    klass: str
    packets: int
    pps: float
    share_of_upstream: float
    share_of_budget: float
    fix: str
    setting: str | None
    examples: tuple[str, ...]


@dataclass(frozen=True)
class KeyStat:
    name: str
    qtype: str
    packets: int
    pps: float
    share_of_budget: float
    klass: str
    rcode: int
    ttl: int | None


@dataclass(frozen=True)
class DomainStat:
    """Packets of every name directly under one domain: a client asking many different
    names (random or generated labels, `r17.svc.example.com`) costs a packet each, which
    no single (name, type) shows, while the pacer and the cache keep any one name cheap."""

    domain: str
    packets: int
    pps: float
    share_of_budget: float
    names: int


def parent(name: str) -> str:
    """The domain a name sits in (`r1.typo.example.com` → `typo.example.com`); names of two
    labels or fewer are their own domain."""
    n = _norm(name)
    _head, dot, rest = n.partition(".")
    return rest if dot and "." in rest else n


@dataclass(frozen=True)
class TopReport:
    """One window's figures. `seconds` is the time the window covers so far (a fresh agent
    has less than a minute); `untallied` counts packets whose key was over the per-minute
    key cap (still in the class and total figures)."""

    window: str
    seconds: float
    packets: int
    pps: float
    limit_pps: float
    classes: tuple[ClassStat, ...]
    top: tuple[KeyStat, ...]
    untallied: int
    domains: tuple[DomainStat, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {
            "window": self.window, "seconds": self.seconds, "packets": self.packets,
            "pps": self.pps, "limit_pps": self.limit_pps, "untallied": self.untallied,
            "classes": [{"class": c.klass, "packets": c.packets, "pps": c.pps,
                         "share_of_upstream": c.share_of_upstream,
                         "share_of_budget": c.share_of_budget, "fix": c.fix,
                         "setting": c.setting, "examples": list(c.examples)}
                        for c in self.classes],
            "top": [{"name": k.name, "type": k.qtype, "packets": k.packets, "pps": k.pps,
                     "share_of_budget": k.share_of_budget, "class": k.klass,
                     "rcode": k.rcode, "ttl": k.ttl} for k in self.top],
            "domains": [{"domain": d.domain, "packets": d.packets, "pps": d.pps,
                         "share_of_budget": d.share_of_budget, "names": d.names}
                        for d in self.domains],
        }


class TopTally:
    """Bounded minute and hour tallies of upstream questions. Feed `observe()` one event at a
    time with its time; `report("minute"|"hour", now)` returns the figures."""

    def __init__(self, policy: SearchPolicy | None = None, *, limit_pps: float = 1024.0,
                 max_keys: int = 5000, keep: int = 200, short_ttl: int = 30,
                 repeat_threshold: int = 2) -> None:
        if max_keys < 1 or keep < 1 or repeat_threshold < 2 or limit_pps <= 0:
            raise ValueError("top tally: max_keys, keep >= 1, repeat_threshold >= 2, "
                             "limit_pps > 0")
        self.policy = policy or SearchPolicy()
        self.limit_pps = limit_pps
        self.max_keys = max_keys
        self.keep = keep
        self.short_ttl = short_ttl
        self.repeat_threshold = repeat_threshold
        self._current: _Minute | None = None
        self._history: deque[_Minute] = deque(maxlen=HOUR_MINUTES - 1)
        self._first: float | None = None

    def classify(self, q: UpstreamQuestion, nxdomain_seen: int) -> str:
        """The event's class; `nxdomain_seen` counts this key's NXDOMAINs in the minute,
        this one included."""
        if q.tcp:
            return TCP_FALLBACK
        if q.rcode == RCODE_NXDOMAIN and self.policy.is_expansion(q.name):
            return SEARCH_NXDOMAIN
        if q.qtype.upper() == "AAAA" and q.rcode == RCODE_NOERROR and q.answers == 0:
            return AAAA_NODATA
        if q.rcode == RCODE_NXDOMAIN and nxdomain_seen >= self.repeat_threshold:
            return REPEATED_NXDOMAIN
        if (q.rcode == RCODE_NOERROR and q.answers > 0 and q.ttl is not None
                and q.ttl < self.short_ttl):
            return SHORT_TTL
        return OTHER

    def _minute(self, now: float) -> _Minute:
        start = now - now % MINUTE
        cur = self._current
        if cur is None or start > cur.start:
            if cur is not None:
                self._history.append(self._compact(cur))
            cur = self._current = _Minute(start)
        return cur

    def _compact(self, minute: _Minute) -> _Minute:
        if len(minute.keys) <= self.keep and len(minute.domains) <= self.keep:
            return minute
        best = sorted(minute.keys.items(), key=lambda kv: -kv[1].packets)[: self.keep]
        return _Minute(minute.start, minute.packets, minute.untallied, minute.classes,
                       dict(best), Counter(dict(minute.domains.most_common(self.keep))))

    def observe(self, q: UpstreamQuestion, now: float) -> str:
        """Count one upstream question at time `now`; returns its class. An event older than
        the current minute is counted in the current one (clocks step)."""
        if self._first is None:
            self._first = now
        minute = self._minute(now)
        key = (_norm(q.name), q.qtype.upper())
        entry = minute.keys.get(key)
        if entry is None and len(minute.keys) < self.max_keys:
            entry = minute.keys[key] = _Key()
        nx = (entry.nxdomain if entry else 0) + (q.rcode == RCODE_NXDOMAIN)
        klass = self.classify(q, nx if entry else 1)
        packets = max(0, q.packets)
        minute.packets += packets
        minute.classes[klass] += packets
        domain = parent(key[0])
        if domain in minute.domains or len(minute.domains) < self.max_keys:
            minute.domains[domain] += packets
        if entry is None:
            minute.untallied += packets
        else:
            entry.packets += packets
            entry.nxdomain = nx
            entry.rcode, entry.ttl = q.rcode, q.ttl
            if klass != OTHER:  # a key is named by its latest event that has a fix
                entry.klass = klass
        return klass

    def report(self, window: str, now: float, *, top_n: int = 20,
               examples: int = 3) -> TopReport:
        """Figures for the last minute (the minute in progress and the whole one before it,
        so 60 to 120 s) or the last hour (up to 60 minutes), as packets over the seconds the
        window actually covers."""
        if window not in ("minute", "hour"):
            raise ValueError(f"window {window!r}: 'minute' or 'hour'")
        current = self._minute(now)
        span = MINUTE if window == "minute" else MINUTE * (HOUR_MINUTES - 1)
        minutes = [m for m in self._history if m.start >= current.start - span] + [current]
        first = self._first if self._first is not None else now
        # quiet minutes have no bucket but are part of the window: measure from its start
        seconds = max(1.0, now - max(current.start - span, first))
        total = sum(m.packets for m in minutes)
        classes: Counter[str] = Counter()
        domains: Counter[str] = Counter()
        packets_by_key: Counter[tuple[str, str]] = Counter()
        meta: dict[tuple[str, str], _Key] = {}
        for m in minutes:
            classes.update(m.classes)
            domains.update(m.domains)
            for key, entry in m.keys.items():
                packets_by_key[key] += entry.packets
                meta[key] = entry  # the latest minute's view of the key wins
        budget = self.limit_pps * seconds
        by_class: dict[str, list[tuple[int, str]]] = {}
        for key, packets in packets_by_key.items():
            by_class.setdefault(meta[key].klass, []).append((packets, f"{key[0]} {key[1]}"))
        fix = fixes(self.policy, self.short_ttl)
        class_stats = [
            ClassStat(klass, packets, packets / seconds, packets / total if total else 0.0,
                      packets / budget, fix[klass].text, fix[klass].setting,
                      tuple(n for _, n in sorted(by_class.get(klass, []),
                                                 reverse=True)[:examples]))
            for klass, packets in classes.most_common() if packets > 0]
        top = tuple(KeyStat(name, qtype, packets, packets / seconds, packets / budget,
                            meta[(name, qtype)].klass, meta[(name, qtype)].rcode,
                            meta[(name, qtype)].ttl)
                    for (name, qtype), packets in packets_by_key.most_common(top_n))
        best_domains = domains.most_common(top_n)
        wanted = {d for d, _ in best_domains}
        names_under: Counter[str] = Counter()
        for name, _qtype in packets_by_key:
            domain = parent(name)
            if domain in wanted:
                names_under[domain] += 1
        domain_stats = tuple(DomainStat(d, packets, packets / seconds, packets / budget,
                                        names_under[d]) for d, packets in best_domains)
        return TopReport(window, seconds, total, total / seconds, self.limit_pps,
                         tuple(class_stats), top, sum(m.untallied for m in minutes),
                         domain_stats)


def render_top(report: TopReport, *, names: int = 10) -> str:
    """The human form of a report, for `dnscache-agent top`: classes with packets/s, budget
    share and fix, the costliest (name, type) pairs, then the domains whose many names add
    up (a client generating names)."""
    lines = [f"last {report.window} ({report.seconds:.0f} s): {report.pps:.1f} upstream "
             f"packets/s, {report.pps / report.limit_pps:.0%} of the "
             f"{report.limit_pps:g}/s budget"]
    if report.classes:
        lines += ["", f"{'class':<18} {'pkt/s':>8} {'budget':>7} {'upstream':>8}  fix"]
        for c in report.classes:
            lines.append(f"{c.klass:<18} {c.pps:>8.1f} {c.share_of_budget:>7.1%} "
                         f"{c.share_of_upstream:>8.1%}  {c.setting or c.fix}")
    if report.top:
        lines += ["", f"{'name':<48} {'type':<6} {'pkt/s':>8} {'budget':>7}  class"]
        for k in report.top[:names]:
            lines.append(f"{k.name[:48]:<48} {k.qtype:<6} {k.pps:>8.1f} "
                         f"{k.share_of_budget:>7.1%}  {k.klass}")
    spread = [d for d in report.domains if d.names > 1][:5]
    if spread:
        lines += ["", f"{'domain (many names under it)':<48} {'names':>6} {'pkt/s':>8} "
                      f"{'budget':>7}"]
        for d in spread:
            lines.append(f"{d.domain[:48]:<48} {d.names:>6} {d.pps:>8.1f} "
                         f"{d.share_of_budget:>7.1%}")
    if report.untallied:
        lines.append(f"({report.untallied} packets of names beyond the per-minute cap are in "
                     "the class figures only)")
    return "\n".join(lines) + "\n"
