"""CloudWatch cost: series counts from the catalogue and the selection, tiered prices, the
`cost` command, and docs/cost.md generated from them (fails when stale)."""
from __future__ import annotations

from pathlib import Path

import pytest

from dnscache_agent.cli import main
from dnscache_agent.settings import MetricsSettings
from dnscache_agent.sinks.cloudwatch import Selection
from dnscache_agent.sinks.cost import (
    CALLS_PER_HOST_MONTH,
    api_price,
    count,
    metric_price,
    profiles,
    render_doc,
    row,
    selection_for,
)
from dnscache_agent.stats.catalogue import CATALOGUE

DOC = Path(__file__).resolve().parents[2] / "docs" / "cost.md"


def test_cost_doc_is_current() -> None:
    assert DOC.read_text() == render_doc(), (
        "docs/cost.md is stale: python -m dnscache_agent.sinks.cost docs/cost.md")


def test_series_counts() -> None:
    by_name = {p.name: p.selection for p in profiles()}
    assert count(by_name["default"]).per_host == 4
    assert count(by_name["default"], interfaces=2).per_host == 1 + 3 * 2
    fleet = count(by_name["default+fleet"])
    assert fleet.per_host == 4 and fleet.per_fleet == 8
    assert fleet.total(10) == 48 and fleet.total(10_000) == 40_008  # fleet series fixed
    everything = count(by_name["everything"])
    assert everything.per_host == len([m for m in CATALOGUE if m.cloudwatch_name])
    assert everything.trouble_extra == 0
    assert count(Selection.from_settings(["client_qps"])).per_host == 5


def test_tiered_metric_price() -> None:
    assert metric_price(4) == pytest.approx(1.20)
    assert metric_price(10_000) == pytest.approx(3_000)
    assert metric_price(15_500) == pytest.approx(3_000 + 5_500 * 0.10)
    assert metric_price(2_000_000) == pytest.approx(
        3_000 + 240_000 * 0.10 + 750_000 * 0.05 + 1_000_000 * 0.02)


def test_api_price_is_one_call_a_minute() -> None:
    assert CALLS_PER_HOST_MONTH == 43_800
    assert api_price(1, 12) == pytest.approx(0.438)
    assert api_price(1, 1001) == pytest.approx(0.876)


def test_everything_per_instance_costs_the_first_tier_per_metric() -> None:
    everything = next(p for p in profiles() if p.name == "everything")
    r = row("everything", everything.selection, 1)
    # the figure: 31 metrics then, $9.30 a host; every metric added costs $0.30
    assert r.metrics_usd == pytest.approx(0.30 * len([m for m in CATALOGUE
                                                       if m.cloudwatch_name]))
    default = next(p for p in profiles() if p.name == "default")
    assert row("default", default.selection, 500).metrics_usd == pytest.approx(600)


def test_selection_for_settings() -> None:
    assert selection_for(MetricsSettings()).fleet == frozenset()
    assert selection_for(MetricsSettings(fleet_tag="aws:autoscaling:groupName")).fleet
    assert "client_qps" in selection_for(MetricsSettings(cloudwatch_include=("client_qps",))
                                         ).always


def test_cost_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('[metrics]\nfleet = "web"\ncloudwatch_include = ["ClientQueries"]\n')
    assert main(["cost", "--config", str(config), "--hosts", "500", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| these settings | 500 | 2,508 |" in out
    assert "5 series per host, 8 per fleet" in out
    assert main(["cost", "--config", str(config), "--hosts", "0", "--root", str(tmp_path)]) == 3
