"""What the CloudWatch sink costs: metric counts and monthly prices from the catalogue and the
settings (issue 13). Pure; `docs/cost.md` is generated from `render_doc()` and a unit test
fails when it is stale. Regenerate it with `python -m dnscache_agent.sinks.cost docs/cost.md`.

CloudWatch bills each distinct (namespace, metric name, dimensions) series that receives data,
prorated by the hour, and each PutMetricData call. The number of datums, their statistics and
their resolution do not change the metric price, so the way to cheap metrics is fewer series:
a small default set per instance, fleet aggregates whose count does not grow with the hosts,
and full detail only for the hours an instance is in trouble.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..settings import MetricsSettings
from ..stats.budget import DEFAULT_HYSTERESIS_PCT
from ..stats.catalogue import CATALOGUE, HOST, Metric
from .cloudwatch import DEFAULT_TROUBLE_HOLD_SECONDS, MAX_DATUMS_PER_CALL, Selection

#: Custom-metric price tiers, USD per metric-month (US East (N. Virginia), as published on
#: https://aws.amazon.com/cloudwatch/pricing/): (metrics in the tier, price). The last tier
#: is open-ended. Other regions price some tiers higher.
PRICE_TIERS: tuple[tuple[float, float], ...] = (
    (10_000, 0.30), (240_000, 0.10), (750_000, 0.05), (math.inf, 0.02))
#: PutMetricData: USD per 1,000 requests.
API_PRICE_PER_1000 = 0.01
#: CloudWatch prorates metrics by the hour over a 730-hour month.
HOURS_PER_MONTH = 730
#: The sink sends once a minute (one call per 1,000 datums).
CALLS_PER_HOST_MONTH = 60 * HOURS_PER_MONTH

FLEET_SIZES = (1, 10, 100, 500, 1000, 10_000)
DOC_INTERFACES = 1


@dataclass(frozen=True)
class Profile:
    """One way to configure the sink, as a name and a `Selection`."""

    name: str
    description: str
    selection: Selection


def profiles(*, metrics: Sequence[Metric] = CATALOGUE) -> tuple[Profile, ...]:
    """The three settings docs/cost.md compares."""
    return (
        Profile("default", "the default set per instance; no fleet",
                Selection.from_settings(metrics=metrics)),
        Profile("default+fleet", 'the default set, plus `[metrics] fleet = "..."`',
                Selection.from_settings(fleet_name="fleet", metrics=metrics)),
        Profile("everything", "`cloudwatch_include` naming every CloudWatch metric (what the "
                "agent sent before issue 13)", Selection.everything(metrics=metrics)),
    )


def selection_for(settings: MetricsSettings, *, fleet: bool | None = None) -> Selection:
    """The selection `settings` give; `fleet` overrides whether a fleet name is known (a
    `fleet_tag` is only resolved on the instance)."""
    has_fleet = bool(settings.fleet or settings.fleet_tag) if fleet is None else fleet
    return Selection.from_settings(settings.cloudwatch_include,
                                   "fleet" if has_fleet else None)


def _series(keys: Iterable[str], interfaces: int, metrics: Sequence[Metric]) -> int:
    by_key = {m.key: m for m in metrics}
    return sum(1 if by_key[k].scope == HOST else interfaces for k in keys)


@dataclass(frozen=True)
class Count:
    """Distinct series: per host (always), per host in trouble (extra), per fleet."""

    per_host: int
    trouble_extra: int
    per_fleet: int

    def total(self, hosts: int) -> int:
        return hosts * self.per_host + (self.per_fleet if hosts else 0)


def count(selection: Selection, *, interfaces: int = 1,
          metrics: Sequence[Metric] = CATALOGUE) -> Count:
    """Series one host sends always, the extra ones while in trouble, and the fleet ones
    (interface metrics have one series per interface; fleet series have none)."""
    return Count(_series(selection.always, interfaces, metrics),
                 _series(selection.on_trouble, interfaces, metrics),
                 len(selection.fleet) if selection.fleet_name else 0)


def metric_price(metrics_count: float) -> float:
    """USD per month for `metrics_count` metric-months, through the tiers (the account is
    assumed to hold no other custom metrics; the free tier's 10 metrics are not deducted)."""
    left, total = float(metrics_count), 0.0
    for size, price in PRICE_TIERS:
        used = min(left, size)
        total += used * price
        left -= used
        if left <= 0:
            break
    return total


def api_price(hosts: int, datums_per_call: int) -> float:
    """USD per month for PutMetricData: one call a minute per host (more above 1,000 datums)."""
    calls = hosts * CALLS_PER_HOST_MONTH * max(1, math.ceil(datums_per_call /
                                                            MAX_DATUMS_PER_CALL))
    return calls / 1000 * API_PRICE_PER_1000


def trouble_hour_price(c: Count) -> float:
    """USD for one host-hour of full detail (first tier): the extra series for one hour."""
    return c.trouble_extra * PRICE_TIERS[0][1] / HOURS_PER_MONTH


@dataclass(frozen=True)
class Row:
    profile: str
    hosts: int
    metrics: int
    metrics_usd: float
    api_usd: float

    @property
    def total_usd(self) -> float:
        return self.metrics_usd + self.api_usd

    @property
    def per_host_usd(self) -> float:
        return self.total_usd / self.hosts


def row(name: str, selection: Selection, hosts: int, *, interfaces: int = 1,
        metrics: Sequence[Metric] = CATALOGUE) -> Row:
    c = count(selection, interfaces=interfaces, metrics=metrics)
    n = c.total(hosts)
    return Row(name, hosts, n, metric_price(n), api_price(hosts, c.per_host + c.per_fleet))


def _usd(x: float) -> str:
    return f"${x:,.2f}"


def render_table(rows: Iterable[Row]) -> str:
    lines = ["| setting | hosts | metrics | metrics $/month | PutMetricData $/month "
             "| total $/month | per host |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.profile} | {r.hosts:,} | {r.metrics:,} | {_usd(r.metrics_usd)} | "
                     f"{_usd(r.api_usd)} | {_usd(r.total_usd)} | {_usd(r.per_host_usd)} |")
    return "\n".join(lines) + "\n"


def render_report(settings: MetricsSettings, hosts: int, *, interfaces: int = 1) -> str:
    """What `dnscache-agent cost` prints: the three profiles and the configured one."""
    rows = [row(p.name, p.selection, hosts, interfaces=interfaces) for p in profiles()]
    current = selection_for(settings)
    rows.append(row("these settings", current, hosts, interfaces=interfaces))
    c = count(current, interfaces=interfaces)
    return (render_table(rows) +
            f"\nThese settings: {c.per_host} series per host, {c.per_fleet} per fleet, "
            f"{c.trouble_extra} more per host while in trouble "
            f"(${trouble_hour_price(c):.4f} per host-hour of trouble).\n")


def render_doc(*, sizes: Sequence[int] = FLEET_SIZES, interfaces: int = DOC_INTERFACES) -> str:
    """docs/cost.md."""
    profs = profiles()
    counts = {p.name: count(p.selection, interfaces=interfaces) for p in profs}
    tiers = ", ".join(
        (f"next {size:,.0f}" if i else f"first {size:,.0f}") + f" at ${price:.2f}"
        if math.isfinite(size) else f"above that ${price:.2f}"
        for i, (size, price) in enumerate(PRICE_TIERS))
    out = [
        "# What the CloudWatch metrics cost",
        "",
        "<!-- generated by `python -m dnscache_agent.sinks.cost docs/cost.md` from the "
        "catalogue and the sink's selection; a unit test fails when it is stale -->",
        "",
        "CloudWatch bills every distinct series (namespace, metric name, dimensions) that "
        "receives data, prorated by the hour, and every PutMetricData call. The number of "
        "datums, the statistics and the resolution do not change the metric price: only the "
        "number of series does. So the agent sends:",
        "",
        "- per instance, always, a small **default** set chosen for the alarms that matter "
        "(headroom Minimum, busiest second Maximum, `linklocal_allowance_exceeded`, SERVFAIL "
        "to clients), plus what `[metrics] cloudwatch_include` names;",
        "- once per **fleet**, when `[metrics] fleet` (or the instance tag named by "
        "`fleet_tag`) gives one, aggregates with only the `Fleet` dimension: every host sends "
        "its StatisticSet under the same series and CloudWatch merges them, so their count "
        "does not grow with the hosts;",
        "- per instance, **on trouble**, the full detail while an interface's headroom is "
        "under `[budget] warn_headroom_pct` (with hysteresis: until it has been back above "
        f"the threshold plus {DEFAULT_HYSTERESIS_PCT:g} points for "
        f"{DEFAULT_TROUBLE_HOLD_SECONDS:g} seconds). Billed by the hour, that costs "
        "little unless an instance is in trouble all month.",
        "",
        "The README's metrics table says which metric is sent when (column *Sent*).",
        "",
        "## Assumptions",
        "",
        f"- Custom-metric prices of US East (N. Virginia), per metric-month: {tiers}. "
        "Tiers apply to the whole account's custom metrics: the figures assume this agent's "
        "are the only ones. The free tier (10 metrics) is not deducted.",
        f"- PutMetricData: ${API_PRICE_PER_1000:.2f} per 1,000 requests; the sink sends one "
        f"call a minute per host ({CALLS_PER_HOST_MONTH:,} a month), more only above "
        f"{MAX_DATUMS_PER_CALL:,} datums. Alarms and dashboards are billed separately "
        "($0.10 per standard alarm-month; $3 per dashboard-month beyond three).",
        f"- A month is {HOURS_PER_MONTH} hours; each host has {interfaces} interface"
        f"{'s' if interfaces != 1 else ''} routing to the resolver (interface metrics have "
        "one series per interface). Hosts are never in trouble, except in the last section.",
        "",
        "## Series per host and per fleet",
        "",
        "| setting | what it is | per host | per fleet | extra per host in trouble |",
        "|---|---|---:|---:|---:|",
    ]
    for p in profs:
        c = counts[p.name]
        out.append(f"| {p.name} | {p.description} | {c.per_host} | {c.per_fleet} | "
                   f"{c.trouble_extra} |")
    out += ["", "## Monthly cost for a fleet of N hosts", ""]
    rows = [row(p.name, p.selection, n, interfaces=interfaces) for p in profs for n in sizes]
    out.append(render_table(rows).rstrip("\n"))
    d = counts["default"]
    out += [
        "",
        "## Detail on trouble",
        "",
        f"While in trouble a host sends {d.trouble_extra} more series: "
        f"${trouble_hour_price(d):.4f} per host-hour of trouble at the first tier "
        f"({_usd(trouble_hour_price(d) * 24)} for a whole day). Metrics marked `opt-in` are "
        "not part of it.",
        "",
        "## Your settings",
        "",
        "`dnscache-agent cost --hosts N [--interfaces K] --config /etc/dnscache-agent/"
        "agent.toml` prints the same table for N hosts and adds a row for the configured "
        "`[metrics]`.",
        "",
    ]
    return "\n".join(out)


if __name__ == "__main__":  # pragma: no cover - regenerates docs/cost.md
    path = sys.argv[1] if len(sys.argv) > 1 else "docs/cost.md"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(render_doc())
