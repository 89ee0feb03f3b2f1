"""The CloudWatch dashboard `dnscache-agent dashboard create` puts (issue 13).

`dashboard_body()` is pure: namespace, region, fleet and thresholds in, the dashboard body (a
dict) out. Its widgets read what the sink sends by default, so they work for any fleet size:

* fleet headroom: `BudgetHeadroom` Minimum under the `Fleet` dimension (or, without a fleet,
  the lowest of every instance's series through `SEARCH`);
* worst instances: a Metrics Insights query over the per-instance `BudgetHeadroom` (sent by
  every host, always), the ten lowest first;
* link-local drops: `EnaLinklocalAllowanceExceeded` Sum, fleet-wide and per instance;
* peak upstream packets against the limit, failed lookups, and the cache hit ratio.

`validate_dashboard()` checks the limits CloudWatch enforces and moto does not (name
characters, widget count, body size, metrics per widget, grid width), so a body that passes
here is not rejected by PutDashboard. `put_dashboard()` is the one side effect.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from ..errors import ConfigError
from ..stats.catalogue import BY_KEY
from .cloudwatch import validate_namespace

log = logging.getLogger(__name__)

#: PutDashboard limits (CloudWatch documentation: dashboard body structure and quotas).
MAX_DASHBOARD_NAME = 255
MAX_WIDGETS = 500
MAX_METRICS_PER_WIDGET = 500
MAX_BODY_BYTES = 1_000_000
GRID_WIDTH = 24
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
DEFAULT_DASHBOARD_NAME = "dnscache-agent"


def _cw(key: str) -> str:
    name = BY_KEY[key].cloudwatch_name
    assert name, key
    return name


def _search(namespace: str, dims: str, key: str, stat: str, period: int) -> str:
    """A SEARCH expression over the per-instance series of one metric."""
    ns = namespace.replace('"', '\\"')
    return f"SEARCH('{{\"{ns}\",{dims}}} MetricName=\"{_cw(key)}\"', '{stat}', {period})"


def _insights(namespace: str, key: str, limit: int = 10) -> str:
    """Metrics Insights: the `limit` instances with the lowest minimum of `key`."""
    ns = namespace.replace('"', '\\"')
    return (f'SELECT MIN({_cw(key)}) FROM SCHEMA("{ns}", InstanceId, Interface) '
            f"GROUP BY InstanceId ORDER BY MIN() ASC LIMIT {limit}")


def _graph(title: str, x: int, y: int, metrics: list[list[Any]], region: str, period: int,
           *, stat: str, width: int = 12, height: int = 6, unit_label: str = "",
           annotations: list[dict[str, Any]] | None = None,
           y_min: float | None = None) -> dict[str, Any]:
    props: dict[str, Any] = {
        "title": title, "view": "timeSeries", "region": region, "period": period,
        "stat": stat, "stacked": False, "metrics": metrics,
    }
    left: dict[str, Any] = {}
    if unit_label:
        left["label"] = unit_label
        left["showUnits"] = False
    if y_min is not None:
        left["min"] = y_min
    if left:
        props["yAxis"] = {"left": left}
    if annotations:
        props["annotations"] = {"horizontal": annotations}
    return {"type": "metric", "x": x, "y": y, "width": width, "height": height,
            "properties": props}


def dashboard_body(namespace: str, region: str, *, fleet: str | None = None,
                   warn_headroom_pct: float = 20.0, limit_pps: float = 1024.0,
                   period: int = 60, worst: int = 10) -> dict[str, Any]:
    """The dashboard as a dict (json.dumps it for PutDashboard). With `fleet`, the fleet
    widgets read the `Fleet` aggregates; without, they aggregate the per-instance series.
    Raises ConfigError for an invalid namespace."""
    validate_namespace(namespace)
    ns = namespace
    fleet_dims = ["Fleet", fleet] if fleet else []
    per_iface = "InstanceId,Interface"
    warn_line = [{"label": f"warning ({warn_headroom_pct:g}%)", "value": warn_headroom_pct,
                  "color": "#ff7f0e"}]
    limit_line = [{"label": f"limit ({limit_pps:g}/s)", "value": limit_pps,
                   "color": "#d62728"}]

    def fleet_or_search(key: str, stat: str, label: str, agg: str) -> list[list[Any]]:
        if fleet:
            return [[ns, _cw(key), *fleet_dims, {"stat": stat, "label": label}]]
        dims = per_iface if BY_KEY[key].scope == "interface" else "InstanceId"
        return [[{"expression": f"{agg}({_search(ns, dims, key, stat, period)})",
                  "label": label, "id": "all"}]]

    headroom = fleet_or_search("budget_headroom", "Minimum", "lowest headroom (%)", "MIN")
    peak = fleet_or_search("budget_pps", "Maximum", "busiest second (packets/s)", "MAX")
    drops = fleet_or_search("ena_linklocal_allowance_exceeded", "Sum",
                            "dropped (packets/period)", "SUM")
    drops.append([{"expression": _search(ns, per_iface, "ena_linklocal_allowance_exceeded",
                                         "Sum", period),
                   "label": "", "id": "per_instance"}])
    failed = fleet_or_search("client_servfail_ps", "Maximum", "SERVFAIL to clients (/s, max)",
                             "MAX")
    if fleet:
        hit = [[ns, _cw("cache_hit_ratio"), *fleet_dims, {"stat": "Average",
                                                          "label": "fleet average"}]]
    else:  # per-instance hit ratio is trouble detail (or opt-in): show what is there
        hit = [[{"expression": _search(ns, "InstanceId", "cache_hit_ratio", "Average", period),
                 "label": "", "id": "hit"}]]
    scope = f"fleet **{fleet}**" if fleet else "all instances (no fleet configured)"
    text = (f"# dnscache-agent: upstream DNS budget\n"
            f"Namespace `{ns}`, {scope}. Headroom is the unused share of the "
            f"{limit_pps:g} packets/s per-interface limit to the Amazon DNS resolver; under "
            f"{warn_headroom_pct:g}% an instance sends its full detail until it recovers. "
            "Worst instances come from every host's per-instance `BudgetHeadroom`.")
    widgets = [
        {"type": "text", "x": 0, "y": 0, "width": 24, "height": 2,
         "properties": {"markdown": text}},
        _graph("Fleet budget headroom (lowest second)", 0, 2, headroom, region, period,
               stat="Minimum", unit_label="%", annotations=warn_line),
        {"type": "metric", "x": 12, "y": 2, "width": 12, "height": 6,
         "properties": {"title": f"Worst instances: lowest headroom (top {worst})",
                        "view": "table", "region": region, "period": period,
                        "stat": "Minimum",
                        "metrics": [[{"expression": _insights(ns, "budget_headroom", worst),
                                      "label": "headroom (%)", "id": "worst"}]]}},
        _graph("Link-local drops (linklocal_allowance_exceeded)", 0, 8, drops, region,
               period, stat="Sum", unit_label="packets", y_min=0),
        _graph("Busiest second: upstream packets/s", 12, 8, peak, region, period,
               stat="Maximum", unit_label="packets/s", annotations=limit_line, y_min=0),
        _graph("Cache hit ratio", 0, 14, hit, region, period, stat="Average",
               unit_label="%", y_min=0),
        _graph("Failed lookups (SERVFAIL to clients)", 12, 14, failed, region, period,
               stat="Maximum", unit_label="/s", y_min=0),
    ]
    return {"start": "-PT3H", "periodOverride": "inherit", "widgets": widgets}


def validate_dashboard(name: str, body: dict[str, Any]) -> str:
    """The body as JSON, after checking PutDashboard's limits; raises ConfigError naming the
    first one broken."""
    if not _NAME_RE.fullmatch(name):
        raise ConfigError(f"dashboard name {name[:60]!r}: 1-{MAX_DASHBOARD_NAME} letters, "
                          "digits, '-' or '_'")
    widgets = body.get("widgets")
    if not isinstance(widgets, list) or not widgets:
        raise ConfigError("dashboard body: no widgets")
    if len(widgets) > MAX_WIDGETS:
        raise ConfigError(f"dashboard body: {len(widgets)} widgets, limit is {MAX_WIDGETS}")
    for i, w in enumerate(widgets):
        metrics = w.get("properties", {}).get("metrics", [])
        if len(metrics) > MAX_METRICS_PER_WIDGET:
            raise ConfigError(f"dashboard widget {i}: {len(metrics)} metrics, limit is "
                              f"{MAX_METRICS_PER_WIDGET}")
        if w.get("type") == "metric" and not w.get("properties", {}).get("region"):
            raise ConfigError(f"dashboard widget {i}: a metric widget needs a region")
        if w.get("x", 0) + w.get("width", 6) > GRID_WIDTH:
            raise ConfigError(f"dashboard widget {i}: wider than the {GRID_WIDTH}-column grid")
    text = json.dumps(body, separators=(",", ":"), sort_keys=True)
    if len(text.encode()) > MAX_BODY_BYTES:
        raise ConfigError(f"dashboard body: {len(text.encode())} bytes, limit is "
                          f"{MAX_BODY_BYTES}")
    return text


def put_dashboard(client: Any, name: str, body: dict[str, Any]) -> list[str]:
    """PutDashboard after `validate_dashboard`; returns the service's validation messages
    (empty when it accepted everything). API errors propagate for the CLI to report."""
    text = validate_dashboard(name, body)
    resp = client.put_dashboard(DashboardName=name, DashboardBody=text)
    messages = [str(m.get("Message", m)) for m in resp.get("DashboardValidationMessages", [])]
    log.info("CloudWatch dashboard %s put (%d widgets)", name, len(body["widgets"]))
    return messages
