"""The metric catalogue: every figure the agent reports, defined once.

The `stats` table, the JSON output, the CloudWatch and Prometheus sinks and the README's table
are all generated from `CATALOGUE`, so a metric cannot exist in one place and be missing or
differently named in another. `build_sample()` turns the stats objects into a flat `Sample`
that every consumer reads.

Regenerate the README's table with `python -m dnscache_agent.stats.catalogue README.md`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..pacer.bucket import TCP_PACKETS_PER_QUERY
from ..pacer.stats_file import PacerStats
from .bind_stats import RTT_BUCKETS, RTT_LABELS, BindSnapshot
from .budget import BudgetStatus
from .ena import EnaDelta
from .rates import TCP_EXTRA_PACKETS, Rates

HOST = "host"
INTERFACE = "interface"

# When a CloudWatch metric is sent (issue 13: cost grows with distinct metrics, not datums).
#: Per instance, always: the few series the alarms that matter need.
DEFAULT = "default"
#: Also once per fleet (dimension `Fleet` only) when `[metrics] fleet`/`fleet_tag` names one.
FLEET = "fleet"
#: Per instance only while an interface's headroom is under `[budget] warn_headroom_pct`.
ON_TROUBLE = "on-trouble"
#: Per instance only when named in `[metrics] cloudwatch_include`.
OPT_IN = "opt-in"
SEND_TAGS = (DEFAULT, FLEET, ON_TROUBLE, OPT_IN)


@dataclass(frozen=True)
class Metric:
    """One reported figure. `getter` is a dotted path into the stats objects: `rates.*`,
    `snapshot.*` (host scope), `budget.*`, `ena.*` (interface scope); a numeric part indexes a
    tuple. A metric without a CloudWatch or Prometheus name is not sent to that sink."""

    key: str
    title: str
    unit: str
    scope: str
    source: str
    getter: str
    action: str
    cloudwatch_name: str | None = None
    cloudwatch_unit: str = "None"
    #: Multiplier applied before sending to CloudWatch (ratios are sent as Percent).
    cloudwatch_scale: float = 1.0
    prometheus_name: str | None = None
    prometheus_type: str = "gauge"
    prometheus_labels: tuple[tuple[str, str], ...] = ()
    help: str = ""
    #: Table format: "rate", "ratio", "count".
    display: str = "rate"
    #: When the CloudWatch sink sends it (`DEFAULT`, `FLEET`, `ON_TROUBLE`, `OPT_IN`); filled
    #: from `CLOUDWATCH_SEND` for every metric with a CloudWatch name.
    cloudwatch_send: tuple[str, ...] = ()


def _rtt_metrics() -> tuple[Metric, ...]:
    out = []
    for i, (bucket, label) in enumerate(zip(RTT_BUCKETS, RTT_LABELS)):
        camel = label[0].upper() + label[1:]
        out.append(Metric(
            key=f"upstream_rtt_share_{label}", title=f"Upstream RTT {label}", unit="ratio",
            scope=HOST, source=f"resstats {bucket} / all QryRTT*",
            getter=f"rates.rtt_distribution.{i}",
            action=("Shares at 500 ms and above mean a slow or overloaded resolver; with "
                    "timeouts rising the per-interface limit is likely being hit."
                    if i >= 3 else "Informational: where upstream answers land."),
            cloudwatch_name=f"UpstreamRttShare{camel}", cloudwatch_unit="Percent",
            cloudwatch_scale=100.0,
            prometheus_name="dnscache_upstream_rtt_share_ratio",
            prometheus_labels=(("bucket", label),),
            help="Share of upstream answers per round-trip-time bucket over the last interval.",
            display="ratio",
        ))
    return tuple(out)


def _ena_metrics() -> tuple[Metric, ...]:
    actions = {
        "linklocal_allowance_exceeded": (
            "Packets to the Amazon DNS, IMDS or time sync dropped over 1024/s on this "
            "interface: the cache is not absorbing enough. Check budget headroom, the cache "
            "hit ratio and which client floods."),
        "pps_allowance_exceeded": "The instance's total packets/s allowance was exceeded; "
                                  "a bigger instance type or fewer packets is the fix.",
        "conntrack_allowance_exceeded": "Connection tracking table full: new flows dropped. "
                                        "Reduce tracked flows (security-group rules) or resize.",
        "bw_in_allowance_exceeded": "Inbound bandwidth allowance exceeded: resize or spread.",
        "bw_out_allowance_exceeded": "Outbound bandwidth allowance exceeded: resize or spread.",
    }
    out = []
    for name, action in actions.items():
        camel = "".join(part.capitalize() for part in name.split("_"))
        out.append(Metric(
            key=f"ena_{name}", title=f"ENA {name}", unit="packets/interval", scope=INTERFACE,
            source=f"ethtool -S {name} (delta)", getter=f"ena.{name}", action=action,
            cloudwatch_name=f"Ena{camel}", cloudwatch_unit="Count",
            help=f"Increase of ENA {name} over the last interval.", display="count",
        ))
        out.append(Metric(
            key=f"ena_{name}_total", title=f"ENA {name} total", unit="packets",
            scope=INTERFACE, source=f"ethtool -S {name}", getter=f"ena.totals.{name}",
            action="Running total as the driver reports it; use the delta above to alert.",
            prometheus_name=f"dnscache_ena_{name}_total", prometheus_type="counter",
            help=f"ENA {name} counter as reported by ethtool -S.", display="count",
        ))
    return tuple(out)


_BASE: tuple[Metric, ...] = (
    Metric("client_qps", "Client queries", "queries/s", HOST, "nsstats Requestv4 + Requestv6",
           "rates.client_qps",
           "Baseline load. A jump together with a falling cache hit ratio means a new workload "
           "or a client looping on names that do not resolve.",
           "ClientQueries", "Count/Second", 1.0, "dnscache_client_queries_per_second",
           help="Queries received from clients per second."),
    Metric("client_queries_total", "Client queries total", "queries", HOST,
           "nsstats Requestv4 + Requestv6", "snapshot.client_queries",
           "Running total since named started; resets on restart.",
           prometheus_name="dnscache_client_queries_total", prometheus_type="counter",
           help="Queries received from clients since named started.", display="count"),
    Metric("aaaa_share", "AAAA share", "ratio", HOST, "qtypes AAAA / all qtypes",
           "rates.aaaa_share",
           "High on IPv4-only hosts: applications ask for AAAA on every lookup and double the "
           "misses. glibc `options no-aaaa` or application settings cut it.",
           "AAAAShare", "Percent", 100.0, "dnscache_client_aaaa_ratio",
           help="Share of client queries asking for AAAA.", display="ratio"),
    Metric("cache_hit_ratio", "Cache hit ratio", "ratio", HOST,
           "cachestats QueryHits / (QueryHits + QueryMisses)", "rates.cache_hit_ratio",
           "Every miss is an upstream packet. A falling ratio means random or unique names "
           "(often a misconfigured search list) or very short TTLs; min-cache-ttl helps the "
           "latter.",
           "CacheHitRatio", "Percent", 100.0, "dnscache_cache_hit_ratio",
           help="Share of client lookups answered from cache.", display="ratio"),
    Metric("upstream_pps", "Upstream packets", "packets/s", HOST,
           f"resstats Queryv4 + Queryv6 + {TCP_EXTRA_PACKETS} x Truncated", "rates.upstream_pps",
           "What EC2's 1024/s per-interface limit counts (retries included; each TCP fallback "
           "costs ~6 packets). See budget headroom.",
           "UpstreamPackets", "Count/Second", 1.0, "dnscache_upstream_packets_per_second",
           help="Estimated packets sent to the forwarders per second (queries, retries, TCP)."),
    Metric("upstream_qps", "Upstream queries", "queries/s", HOST,
           "resstats Queryv4 + Queryv6 (retries included)", "rates.upstream_qps",
           "Cache misses, prefetches and retries sent to the forwarders.",
           "UpstreamQueries", "Count/Second", 1.0, "dnscache_upstream_queries_per_second",
           help="Queries sent to the forwarders per second, retries included."),
    Metric("upstream_queries_total", "Upstream queries total", "queries", HOST,
           "resstats Queryv4 + Queryv6", "snapshot.upstream_queries",
           "Running total since named started; resets on restart.",
           prometheus_name="dnscache_upstream_queries_total", prometheus_type="counter",
           help="Queries sent to the forwarders since named started.", display="count"),
    Metric("upstream_tcp_ps", "Upstream TCP fallbacks", "queries/s", HOST,
           "resstats Truncated", "rates.upstream_tcp_ps",
           "Each truncated answer is retried over TCP at ~6 packets. Large answers (TXT, "
           "DNSSEC); check edns-udp-size and what is being asked.",
           "UpstreamTcpFallbacks", "Count/Second", 1.0,
           "dnscache_upstream_tcp_fallbacks_per_second",
           help="Truncated upstream answers (each retried over TCP) per second."),
    Metric("upstream_retries_ps", "Upstream retries", "queries/s", HOST, "resstats Retry",
           "rates.upstream_retries_ps",
           "Retries are packets too. Rising with timeouts means the resolver drops packets: "
           "the limit is being hit; check linklocal_allowance_exceeded.",
           "UpstreamRetries", "Count/Second", 1.0, "dnscache_upstream_retries_per_second",
           help="Upstream query retries per second."),
    Metric("upstream_timeouts_ps", "Upstream timeouts", "queries/s", HOST,
           "resstats QueryTimeout", "rates.upstream_timeouts_ps",
           "Unanswered upstream queries: dropped over the limit, or the resolver is "
           "unreachable. Compare with linklocal_allowance_exceeded.",
           "UpstreamTimeouts", "Count/Second", 1.0, "dnscache_upstream_timeouts_per_second",
           help="Upstream queries that timed out per second."),
    Metric("upstream_servfail_ps", "Upstream SERVFAIL", "answers/s", HOST, "resstats SERVFAIL",
           "rates.upstream_servfail_ps",
           "The resolver itself failed (broken delegation, DNSSEC failure upstream).",
           "UpstreamServfail", "Count/Second", 1.0, "dnscache_upstream_servfail_per_second",
           help="SERVFAIL answers received from the forwarders per second."),
    Metric("upstream_quota_drops_ps", "Upstream quota drops", "queries/s", HOST,
           "resstats ClientQuota + ServerQuota", "rates.upstream_quota_drops_ps",
           "recursive-clients or fetches-per-server reached: raise recursive-clients if memory "
           "allows, or find the flooding client.",
           "UpstreamQuotaDrops", "Count/Second", 1.0,
           "dnscache_upstream_quota_drops_per_second",
           help="Fetches refused by bind's client or server quotas per second."),
    Metric("upstream_rtt_slow_ratio", "Upstream answers >= 500 ms", "ratio", HOST,
           "resstats QryRTT800 + QryRTT1600 + QryRTT1600+ / all QryRTT*",
           "rates.upstream_rtt_slow_ratio",
           "Slow upstream answers: an overloaded resolver, or answers after retries.",
           "UpstreamRttSlowShare", "Percent", 100.0, "dnscache_upstream_rtt_slow_ratio",
           help="Share of upstream answers that took 500 ms or more.", display="ratio"),
    Metric("client_servfail_ps", "Client SERVFAIL", "answers/s", HOST, "nsstats QrySERVFAIL",
           "rates.client_servfail_ps",
           "Clients see failures: upstream timeouts or SERVFAIL with nothing stale to serve.",
           "ClientServfail", "Count/Second", 1.0, "dnscache_client_servfail_per_second",
           help="SERVFAIL answers sent to clients per second."),
    Metric("client_nxdomain_ps", "Client NXDOMAIN", "answers/s", HOST, "nsstats QryNXDOMAIN",
           "rates.client_nxdomain_ps",
           "Usually search-list expansion (ndots); a jump often means a misconfigured client.",
           "ClientNxdomain", "Count/Second", 1.0, "dnscache_client_nxdomain_per_second",
           help="NXDOMAIN answers sent to clients per second."),
    Metric("client_dropped_ps", "Client queries dropped", "queries/s", HOST,
           "nsstats QryDropped + RecLimitDropped", "rates.client_dropped_ps",
           "Clients get no answer (recursive-clients exhausted or duplicate queries dropped): "
           "they will time out and retry.",
           "ClientDropped", "Count/Second", 1.0, "dnscache_client_dropped_per_second",
           help="Client queries dropped by bind per second."),
    Metric("client_failure_ps", "Client query failures", "queries/s", HOST,
           "nsstats QryFailure", "rates.client_failure_ps",
           "Queries that failed for other reasons (refused, formerr); check named's log.",
           "ClientFailures", "Count/Second", 1.0, "dnscache_client_failures_per_second",
           help="Client queries that failed for other reasons per second."),
    Metric("stale_answers_ps", "Stale answers", "answers/s", HOST, "nsstats QryUsedStale",
           "rates.stale_answers_ps",
           "The resolver did not answer in time and clients got stale data instead of an "
           "error: check upstream timeouts and linklocal_allowance_exceeded.",
           "StaleAnswers", "Count/Second", 1.0, "dnscache_stale_answers_per_second",
           help="Stale answers served to clients per second."),
    Metric("prefetch_ps", "Prefetches", "queries/s", HOST, "nsstats Prefetch",
           "rates.prefetch_ps",
           "Popular names refreshed before expiry; each is an upstream query. Raise the "
           "prefetch trigger if the budget is tight.",
           "Prefetches", "Count/Second", 1.0, "dnscache_prefetch_per_second",
           help="Prefetch queries per second."),
)

_BUDGET: tuple[Metric, ...] = (
    Metric("budget_pps", "Budget use", "packets/s", INTERFACE,
           "upstream packets routed via this interface", "budget.pps",
           "CloudWatch Maximum over a minute is its peak second: bursts above the limit are "
           "what gets dropped.",
           "BudgetPackets", "Count/Second", 1.0, "dnscache_budget_packets_per_second",
           help="Upstream packets per second on this interface (last second)."),
    Metric("budget_headroom", "Budget headroom", "ratio", INTERFACE,
           "1 - packets/s / limit", "budget.headroom_ratio",
           "Below the warning threshold the agent logs a warning; at or below 0 packets are "
           "being dropped. Alarm on the Minimum (`dnscache-agent alarm create`).",
           "BudgetHeadroom", "Percent", 100.0, "dnscache_budget_headroom_ratio",
           help="Unused share of the per-interface packet limit (negative when over).",
           display="ratio"),
    Metric("budget_minute_peak_pps", "Budget peak second (minute)", "packets/s", INTERFACE,
           "max one-second packets/s this minute", "budget.minute_peak_pps",
           "The busiest second of the current minute; compare with the limit.",
           prometheus_name="dnscache_budget_minute_peak_packets_per_second",
           help="Busiest second of the current minute, packets per second."),
    Metric("budget_minute_mean_pps", "Budget mean (minute)", "packets/s", INTERFACE,
           "mean one-second packets/s this minute", "budget.minute_mean_pps",
           "Average cost; a mean far below the peak means bursty clients.",
           prometheus_name="dnscache_budget_minute_mean_packets_per_second",
           help="Mean packets per second over the current minute."),
    Metric("budget_limit_pps", "Budget limit", "packets/s", INTERFACE,
           "settings [budget] limit_pps", "budget.limit_pps",
           "The configured limit (EC2: 1024/s per interface).",
           prometheus_name="dnscache_budget_limit_packets_per_second",
           help="Configured per-interface packet limit."),
    Metric("ena_present", "ENA counters present", "0/1", INTERFACE,
           "ethtool -S has allowance counters", "ena.is_ena",
           "0 means not an ENA interface (not EC2, or an old driver): no drop counters.",
           prometheus_name="dnscache_ena_counters_present",
           help="1 when the interface reports ENA allowance counters.", display="count"),
    Metric("ena_conntrack_allowance_available", "ENA conntrack available", "connections",
           INTERFACE, "ethtool -S conntrack_allowance_available",
           "ena.conntrack_allowance_available",
           "Tracked connections left before conntrack_allowance_exceeded starts moving.",
           "EnaConntrackAllowanceAvailable", "Count", 1.0,
           "dnscache_ena_conntrack_allowance_available",
           help="Connections that can still be tracked on this interface.", display="count"),
)

# --- the budget pacer (dnscache_agent/pacer/, read from its stats file) --------------------
_PACER: tuple[Metric, ...] = (
    Metric("pacer_packets_ps", "Pacer upstream packets", "packets/s", HOST,
           f"pacer stats file: UDP queries + {TCP_PACKETS_PER_QUERY} x TCP queries sent",
           "pacer.packets_ps",
           "What the pacer sent to the resolver over its last second; it never exceeds "
           "limit_pps less the margin. Near that ceiling with a growing queue: the host asks "
           "more distinct names than the budget allows.",
           "PacerUpstreamPackets", "Count/Second", 1.0,
           "dnscache_pacer_upstream_packets_per_second",
           help="Packets the pacer sent to the resolver per second (UDP + TCP)."),
    Metric("pacer_packets_total", "Pacer upstream packets total", "packets", HOST,
           "pacer stats file totals.packets", "pacer.packets_total",
           "Running total since the pacer started; resets on restart.",
           prometheus_name="dnscache_pacer_upstream_packets_total", prometheus_type="counter",
           help="Packets the pacer sent to the resolver since it started.", display="count"),
    Metric("pacer_tcp_packets_ps", "Pacer TCP packets", "packets/s", HOST,
           f"pacer stats file: {TCP_PACKETS_PER_QUERY} x TCP queries", "pacer.tcp_packets_ps",
           f"Truncated answers retried over TCP, charged {TCP_PACKETS_PER_QUERY} packets each; "
           "large answers "
           "(TXT, DNSSEC) are expensive under the budget.",
           "PacerTcpPackets", "Count/Second", 1.0, "dnscache_pacer_tcp_packets_per_second",
           help="Packets the pacer spent on TCP queries per second."),
    Metric("pacer_queue_depth", "Pacer queue depth", "questions", HOST,
           "pacer stats file queue_depth", "pacer.queue_depth",
           "Questions waiting for budget. Persistently above ~1000 means more than a second "
           "of backlog: lookups wait and some are dropped (see Pacer questions dropped).",
           "PacerQueueDepth", "Count", 1.0, "dnscache_pacer_queue_depth",
           help="Questions waiting in the pacer's queue.", display="count"),
    Metric("pacer_wait_p50_ms", "Pacer wait p50", "ms", HOST,
           "pacer stats file wait_p50_ms (last second)", "pacer.wait_p50_ms",
           "Median time a question waited for budget before it was sent.",
           "PacerWaitP50", "Milliseconds", 1.0, "dnscache_pacer_wait_p50_milliseconds",
           help="Median queue wait of questions sent in the last second, ms."),
    Metric("pacer_wait_p99_ms", "Pacer wait p99", "ms", HOST,
           "pacer stats file wait_p99_ms (last second)", "pacer.wait_p99_ms",
           "Above ~1000 ms stub resolvers time out before their answer arrives: a cold burst "
           "larger than the budget, or a workload of unique names.",
           "PacerWaitP99", "Milliseconds", 1.0, "dnscache_pacer_wait_p99_milliseconds",
           help="99th percentile queue wait of questions sent in the last second, ms."),
    Metric("pacer_coalesced_ps", "Pacer questions coalesced", "queries/s", HOST,
           "pacer stats file interval.coalesced", "pacer.coalesced_ps",
           "Identical questions (named's retransmits, concurrent clients) answered by one "
           "upstream packet: packets saved.",
           "PacerCoalesced", "Count/Second", 1.0, "dnscache_pacer_coalesced_per_second",
           help="Queries joined to an identical question already waiting, per second."),
    Metric("pacer_expired_ps", "Pacer questions dropped", "queries/s", HOST,
           "pacer stats file interval.expired", "pacer.expired_ps",
           "Questions named stopped asking for before the budget allowed them out (its "
           "fetch timed out): their clients failed or got stale data. Above 0 the offered "
           "misses exceed the budget for seconds at a time.",
           "PacerExpired", "Count/Second", 1.0, "dnscache_pacer_expired_per_second",
           help="Questions dropped in the pacer's queue (given up) per second."),
    Metric("pacer_answers_ps", "Pacer answers", "answers/s", HOST,
           "pacer stats file interval.answers", "pacer.answers_ps",
           "Upstream answers relayed to named; well below packets sent means timeouts.",
           "PacerAnswers", "Count/Second", 1.0, "dnscache_pacer_answers_per_second",
           help="Upstream answers the pacer relayed per second."),
    Metric("pacer_upstream_timeouts_ps", "Pacer upstream timeouts", "queries/s", HOST,
           "pacer stats file interval.upstream_timeouts", "pacer.upstream_timeouts_ps",
           "Sent but unanswered within 1 s (then retransmitted within the budget): the "
           "resolver is unreachable or something else on the host spends the budget "
           "(check linklocal_allowance_exceeded).",
           "PacerUpstreamTimeouts", "Count/Second", 1.0,
           "dnscache_pacer_upstream_timeouts_per_second",
           help="Pacer queries unanswered within their retry time, per second."),
)
# --- end of the budget pacer's metrics ------------------------------------------------------

# --- where the budget goes (issue 13; stats/top.py, class totals in the pacer's stats file) --
_TOP_CLASSES: tuple[tuple[str, str, str], ...] = (
    ("aaaa-nodata", "AAAA NODATA",
     "IPv4-only clients asking AAAA: `options no-aaaa` in resolv.conf (glibc 2.36+), or "
     "`[cache] min_ncache_ttl = 90` when empty answers expire fast; `top` names the names."),
    ("search-nxdomain", "search-list NXDOMAIN",
     "ndots/search-list expansions of dotted names: `options ndots:1` or trailing-dot names; "
     "`top` gives the exact resolv.conf line."),
    ("repeated-nxdomain", "repeated NXDOMAIN",
     "The same names failing again and again: `[cache] min_ncache_ttl = 90`."),
    ("short-ttl", "short-TTL answers",
     "Names with TTLs under 30 s asked again and again: `[cache] min_cache_ttl` (not for "
     "failover names)."),
    ("tcp-fallback", "TCP fallbacks",
     "Truncated answers retried over TCP (about 6 packets each): `top` names who asks."),
)
_TOP: tuple[Metric, ...] = tuple(
    Metric(f"upstream_{klass.replace('-', '_')}_pps", f"Upstream {title}", "packets/s", HOST,
           f"pacer stats file classes.{klass} (last minute)", f"pacer.classes.{klass}",
           action,
           "Upstream" + "".join(w.capitalize() for w in klass.split("-")), "Count/Second",
           1.0, "dnscache_upstream_class_packets_per_second",
           prometheus_labels=(("class", klass),),
           help="Upstream packets per second by query class over the last minute.")
    for klass, title, action in _TOP_CLASSES)
# --- end of where the budget goes -----------------------------------------------------------

# --- when CloudWatch metrics are sent (issue 13) --------------------------------------------
#: Per-instance defaults are the alarm inputs: headroom (alarm on Minimum), the peak second
#: (Maximum), drops at the link-local limit, and lookups clients saw fail. Fleet aggregates
#: add what a fleet dashboard shows. Every other CloudWatch metric is sent per instance while
#: the instance is in trouble (full detail), unless listed as opt-in only. Anything can be
#: sent always by naming it in `[metrics] cloudwatch_include`.
CLOUDWATCH_SEND: dict[str, tuple[str, ...]] = {
    "budget_headroom": (DEFAULT, FLEET),
    "budget_pps": (DEFAULT, FLEET),
    "ena_linklocal_allowance_exceeded": (DEFAULT, FLEET),
    "client_servfail_ps": (DEFAULT, FLEET),
    "client_qps": (ON_TROUBLE, FLEET),
    "upstream_pps": (ON_TROUBLE, FLEET),
    "cache_hit_ratio": (ON_TROUBLE, FLEET),
    "upstream_timeouts_ps": (ON_TROUBLE, FLEET),
    # Informational shapes: worth a metric each only when someone asks for them.
    **{f"upstream_rtt_share_{label}": (OPT_IN,) for label in RTT_LABELS},
    "ena_bw_in_allowance_exceeded": (OPT_IN,),
    "ena_bw_out_allowance_exceeded": (OPT_IN,),
    "ena_conntrack_allowance_exceeded": (OPT_IN,),
    "ena_conntrack_allowance_available": (OPT_IN,),
    **{m.key: (OPT_IN,) for m in _TOP},
}


def _with_send(metrics: tuple[Metric, ...]) -> tuple[Metric, ...]:
    """Each CloudWatch metric with its `cloudwatch_send` (ON_TROUBLE unless listed)."""
    return tuple(replace(m, cloudwatch_send=m.cloudwatch_send
                         or CLOUDWATCH_SEND.get(m.key, (ON_TROUBLE,)))
                 if m.cloudwatch_name else m for m in metrics)


CATALOGUE: tuple[Metric, ...] = _with_send(
    _BASE + _rtt_metrics() + _BUDGET + _ena_metrics() + _PACER + _TOP)
BY_KEY: dict[str, Metric] = {m.key: m for m in CATALOGUE}


@dataclass(frozen=True)
class Sample:
    """One second's figures, keyed by `Metric.key`: `host` values, and per-interface values.
    A figure with no value this second (a ratio with no queries, an absent counter) is left
    out rather than reported as 0."""

    timestamp: float
    host: Mapping[str, float] = field(default_factory=dict)
    interfaces: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "timestamp": self.timestamp,
            "host": dict(self.host),
            "interfaces": {name: dict(vals) for name, vals in sorted(self.interfaces.items())},
        }


def _resolve(obj: object, path: str) -> float | None:
    for part in path.split("."):
        if obj is None:
            return None
        if part.isdigit():
            obj = obj[int(part)] if isinstance(obj, tuple) and int(part) < len(obj) else None
        elif isinstance(obj, Mapping):  # e.g. the pacer's per-class figures
            obj = obj.get(part)
        else:
            obj = getattr(obj, part)
    if obj is None:
        return None
    value = float(obj)  # type: ignore[arg-type]
    return value if math.isfinite(value) else None


def build_sample(timestamp: float, *, rates: Rates | None = None,
                 snapshot: BindSnapshot | None = None,
                 budgets: Mapping[str, BudgetStatus] | None = None,
                 ena: Mapping[str, EnaDelta] | None = None,
                 pacer: PacerStats | None = None) -> Sample:
    """Flatten the stats objects into a `Sample` using each metric's getter."""
    host_src = {"rates": rates, "snapshot": snapshot, "pacer": pacer}
    host: dict[str, float] = {}
    for m in CATALOGUE:
        if m.scope == HOST:
            root, _, rest = m.getter.partition(".")
            value = _resolve(host_src[root], rest)
            if value is not None:
                host[m.key] = value
    budgets = budgets or {}
    ena = ena or {}
    interfaces: dict[str, dict[str, float]] = {}
    for name in sorted(set(budgets) | set(ena)):
        src = {"budget": budgets.get(name), "ena": ena.get(name)}
        vals: dict[str, float] = {}
        for m in CATALOGUE:
            if m.scope == INTERFACE:
                root, _, rest = m.getter.partition(".")
                value = _resolve(src[root], rest)
                if value is not None:
                    vals[m.key] = value
        interfaces[name] = vals
    return Sample(timestamp=timestamp, host=host, interfaces=interfaces)


README_BEGIN = ("<!-- metrics table: generated from dnscache_agent/stats/catalogue.py by "
                "`python -m dnscache_agent.stats.catalogue README.md`; do not edit by hand -->")
README_END = "<!-- end of metrics table -->"


def render_markdown() -> str:
    """The metrics table for the README."""
    lines = [
        "Host metrics carry the CloudWatch dimension `InstanceId`; interface metrics carry "
        "`InstanceId` and `Interface` (Prometheus label `interface`). CloudWatch receives "
        "one-minute StatisticSets of one-second samples: use Maximum for the peak second.",
        "",
        "*Sent* says when a metric goes to CloudWatch: `default` per instance always; `fleet` "
        "once per fleet with only the `Fleet` dimension (when `[metrics] fleet` or "
        "`fleet_tag` names one); `on-trouble` per instance while an interface's headroom is "
        "under `[budget] warn_headroom_pct`; `opt-in` only when named in `[metrics] "
        "cloudwatch_include` (which sends any metric per instance always). See "
        "[docs/cost.md](docs/cost.md).",
        "",
        "| Metric | Unit | Source counter | CloudWatch | Sent | Prometheus "
        "| What to do when it moves |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in CATALOGUE:
        cw = f"`{m.cloudwatch_name}` ({m.cloudwatch_unit})" if m.cloudwatch_name else "-"
        sent = ", ".join(m.cloudwatch_send) if m.cloudwatch_name else "-"
        if m.prometheus_name:
            labels = ",".join(f'{k}="{v}"' for k, v in m.prometheus_labels)
            prom = f"`{m.prometheus_name}{{{labels}}}`" if labels else f"`{m.prometheus_name}`"
        else:
            prom = "-"
        scope = " (per interface)" if m.scope == INTERFACE else ""
        lines.append(f"| {m.title}{scope} | {m.unit} | {m.source} | {cw} | {sent} | {prom} | "
                     f"{m.action.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def with_table(readme: str) -> str:
    """`readme` with the generated table between its markers (ValueError if they are missing)."""
    start = readme.index(README_BEGIN) + len(README_BEGIN)
    end = readme.index(README_END, start)
    return readme[:start] + "\n" + render_markdown() + readme[end:]


if __name__ == "__main__":  # pragma: no cover - regenerates the README's table
    path = sys.argv[1] if len(sys.argv) > 1 else "README.md"
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(with_table(text))
