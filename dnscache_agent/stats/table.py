"""Pure renderers for `dnscache-agent stats`: the human table, the one-line budget bar for
`--watch`, and the JSON form. Rows come from the metric catalogue, in its order."""

from __future__ import annotations

from typing import Any

from .budget import BudgetStatus
from .catalogue import CATALOGUE, HOST, INTERFACE, Metric, Sample

#: Interface rows worth a human's attention; totals and constants stay in --json.
_TABLE_SKIP = ("_total", "budget_limit_pps")


def _fmt(metric: Metric, value: float) -> str:
    if metric.display == "ratio":
        return f"{value * 100:.1f} %"
    if metric.display == "count":
        return f"{value:.0f}"
    return f"{value:.1f}"


def _shown(metric: Metric) -> bool:
    return not any(metric.key.endswith(s) or metric.key == s for s in _TABLE_SKIP)


def render_table(sample: Sample) -> str:
    """Host figures, then one block per interface. Figures with no value show "-"."""
    rows: list[tuple[str, str, str]] = []
    for m in CATALOGUE:
        if m.scope == HOST and _shown(m):
            v = sample.host.get(m.key)
            rows.append((m.title, "-" if v is None else _fmt(m, v), m.unit))
    for name, values in sorted(sample.interfaces.items()):
        rows.append(("", "", ""))
        rows.append((f"interface {name}", "", ""))
        not_ena = values.get("ena_present") == 0.0
        for m in CATALOGUE:
            if m.scope != INTERFACE or not _shown(m):
                continue
            if m.key.startswith("ena_") and m.key != "ena_present" and not_ena:
                continue
            v = values.get(m.key)
            if m.key == "ena_present" and v is not None:
                rows.append(("  ENA counters", "yes" if v else "not ENA", ""))
                continue
            rows.append((f"  {m.title}", "-" if v is None else _fmt(m, v), m.unit))
    width = max((len(r[0]) for r in rows), default=0)
    vwidth = max((len(r[1]) for r in rows), default=0)
    lines = [f"{'metric'.ljust(width)}  {'value'.rjust(vwidth)}  unit".rstrip()]
    for title, value, unit in rows:
        lines.append(f"{title.ljust(width)}  {value.rjust(vwidth)}  {unit}".rstrip())
    return "\n".join(lines) + "\n"


def render_budget_bar(status: BudgetStatus, width: int = 40) -> str:
    """One line: `eth0 [#########.........|] 412/1024 pps  headroom 60%  peak 530`. The bar
    fills with use; past the limit it is full and marked `!`."""
    width = max(width, 4)
    used = status.pps / status.limit_pps if status.limit_pps else 0.0
    filled = min(width, max(0, round(used * width)))
    bar = "#" * filled + "." * (width - filled)
    over = "!" if used > 1.0 else "|"
    warn = "  WARNING" if status.warning else ""
    return (f"{status.interface} [{bar}{over}] {status.pps:.0f}/{status.limit_pps:.0f} pps  "
            f"headroom {status.headroom_pct:.0f}%  peak {status.minute_peak_pps:.0f}{warn}")


def render_json(sample: Sample) -> dict[str, Any]:
    """The `--json` form: every catalogue figure by key, with units alongside."""
    doc = sample.as_dict()
    doc["units"] = {m.key: m.unit for m in CATALOGUE}
    return doc
