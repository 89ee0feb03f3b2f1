"""The shipped dashboards: the CloudWatch body `dashboard create` puts (pure part; the put is
read back from moto in tests/integration/test_cloudwatch_fleet_moto.py) and the Grafana JSON in
packaging/grafana/, whose every metric must exist in the catalogue."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from dnscache_agent.errors import ConfigError
from dnscache_agent.sinks.dashboard import (
    MAX_WIDGETS,
    dashboard_body,
    put_dashboard,
    validate_dashboard,
)
from dnscache_agent.stats.catalogue import BY_KEY, CATALOGUE, DEFAULT, FLEET, OPT_IN

GRAFANA = Path(__file__).resolve().parents[2] / "packaging" / "grafana" / "dnscache-agent.json"
PROM_NAMES = {m.prometheus_name for m in CATALOGUE if m.prometheus_name}
CW_NAMES = {m.cloudwatch_name for m in CATALOGUE if m.cloudwatch_name}


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    out = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for var in dashboard.get("templating", {}).get("list", []):
        if isinstance(var.get("query"), dict):
            out.append(var["query"]["query"])
    return out


def test_grafana_dashboard_references_only_catalogue_metrics() -> None:
    dashboard = json.loads(GRAFANA.read_text())
    exprs = _exprs(dashboard)
    assert len(exprs) >= 8
    used = {name for e in exprs for name in re.findall(r"\bdnscache_[a-z0-9_]+", e)}
    assert used and used <= PROM_NAMES, used - PROM_NAMES
    # the budget, the drops and the hit ratio are all on it
    assert {"dnscache_budget_headroom_ratio", "dnscache_ena_linklocal_allowance_exceeded_total",
            "dnscache_cache_hit_ratio"} <= used
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in dashboard["panels"])


def test_grafana_counters_are_rated_and_gauges_are_not() -> None:
    kinds = {m.prometheus_name: m.prometheus_type for m in CATALOGUE if m.prometheus_name}
    for expr in _exprs(json.loads(GRAFANA.read_text())):
        for name in re.findall(r"\bdnscache_[a-z0-9_]+", expr):
            rated = re.search(rf"\b(i?rate|increase)\({name}\b", expr) is not None
            if not expr.startswith("label_values"):
                assert rated == (kinds[name] == "counter"), expr


def _cloudwatch_names(body: dict[str, Any]) -> set[str]:
    text = json.dumps(body)
    return {n for n in re.findall(r"[A-Z][A-Za-z0-9]+", text) if n in CW_NAMES}


@pytest.mark.parametrize("fleet", ["asg-web", None])
def test_cloudwatch_dashboard_reads_only_series_that_are_sent(fleet: str | None) -> None:
    body = dashboard_body("DnscacheAgent", "eu-west-1", fleet=fleet, warn_headroom_pct=25)
    validate_dashboard("dnscache-agent", body)
    titles = [w["properties"].get("title", "") for w in body["widgets"]]
    assert any("headroom" in t.lower() for t in titles)
    assert any(t.startswith("Worst instances") for t in titles)
    assert any("Link-local" in t for t in titles) and "Cache hit ratio" in titles
    by_cw = {m.cloudwatch_name: m for m in CATALOGUE if m.cloudwatch_name}
    used = _cloudwatch_names(body)
    assert {"BudgetHeadroom", "EnaLinklocalAllowanceExceeded", "CacheHitRatio"} <= used
    # never an opt-in-only metric: a dashboard must not depend on what users turn on
    assert all(OPT_IN not in by_cw[name].cloudwatch_send for name in used)
    metrics = [row for w in body["widgets"] for row in w["properties"].get("metrics", [])]
    plain = [row for row in metrics if isinstance(row[0], str)]
    if fleet:
        assert plain and all(row[2:4] == ["Fleet", fleet] for row in plain)
        assert all(FLEET in by_cw[row[1]].cloudwatch_send for row in plain)
    else:
        assert not plain  # no fleet series exist: everything is SEARCH or Metrics Insights
    headroom = body["widgets"][1]["properties"]
    assert headroom["annotations"]["horizontal"][0]["value"] == 25
    assert DEFAULT in BY_KEY["budget_headroom"].cloudwatch_send  # worst instances' input


def test_dashboard_limits_that_moto_does_not_check() -> None:
    body = dashboard_body("NS", "us-east-1")
    for name in ("", "has space", "a/b", "x" * 256):
        with pytest.raises(ConfigError):
            validate_dashboard(name, body)
    too_many = {"widgets": [body["widgets"][0]] * (MAX_WIDGETS + 1)}
    with pytest.raises(ConfigError):
        validate_dashboard("d", too_many)
    no_region = json.loads(json.dumps(body))
    del no_region["widgets"][1]["properties"]["region"]
    with pytest.raises(ConfigError):
        validate_dashboard("d", no_region)
    with pytest.raises(ConfigError):
        dashboard_body("AWS/EC2", "us-east-1")


def test_put_dashboard_returns_validation_messages() -> None:
    class Client:
        def put_dashboard(self, **kw: Any) -> dict[str, Any]:
            self.kw = kw
            return {"DashboardValidationMessages": [{"DataPath": "/x", "Message": "hmm"}]}

    client = Client()
    assert put_dashboard(client, "d", dashboard_body("NS", "us-east-1")) == ["hmm"]
    assert json.loads(client.kw["DashboardBody"])["widgets"]


def test_dashboard_print_needs_no_cloudwatch(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from dnscache_agent.cli import main

    config = tmp_path / "agent.toml"
    config.write_text('[metrics]\nfleet = "asg-web"\nnamespace = "Dns"\n\n'
                      "[budget]\nwarn_headroom_pct = 30\n")
    args = ["dashboard", "create", "--print", "--config", str(config), "--root", str(tmp_path)]
    assert main([*args, "--region", "eu-central-1"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["widgets"][1]["properties"]["metrics"][0][:4] == [
        "Dns", "BudgetHeadroom", "Fleet", "asg-web"]
    assert body["widgets"][1]["properties"]["annotations"]["horizontal"][0]["value"] == 30
    assert main(args) == 3
    assert "metrics.region: no region" in capsys.readouterr().err
