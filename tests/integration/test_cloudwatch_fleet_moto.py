"""Issue 13 against moto's server on 127.0.0.1 with real boto3 HTTP, read back: the default
set's series per host, fleet aggregates from three hosts (three sinks) merged by the service,
detail on trouble switching on and off, the dashboard (GetDashboard) and the fleet alarm
(DescribeAlarms), the last two through the CLI."""
from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from dnscache_agent.cli import main
from dnscache_agent.settings import MetricsSettings
from dnscache_agent.sinks.cloudwatch import build_client, build_cloudwatch_sink
from dnscache_agent.stats.catalogue import CATALOGUE, FLEET, ON_TROUBLE, Sample
from tests.machinery import missing_module, module_requires, optional_import

_machinery = module_requires(missing_module("moto.server", "pip install .[test]"))
moto_server = optional_import("moto.server")

REGION = "us-east-1"
NS = "DnscacheAgentFleet"
DEFAULT_NAMES = {"BudgetHeadroom", "BudgetPackets", "EnaLinklocalAllowanceExceeded",
                 "ClientServfail"}
FLEET_NAMES = {m.cloudwatch_name for m in CATALOGUE if FLEET in m.cloudwatch_send}
TROUBLE_NAMES = {m.cloudwatch_name for m in CATALOGUE if ON_TROUBLE in m.cloudwatch_send}


@pytest.fixture(autouse=True)
def _fake_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION,
                       # moto 5.2 cannot read gzip bodies (see test_cloudwatch_e2e.py)
                       "AWS_DISABLE_REQUEST_COMPRESSION": "true"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def endpoint() -> Iterator[str]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    # moto's backends are per process, not per server: start every test empty
    requests.post(f"{url}/moto-api/reset", timeout=10).raise_for_status()
    try:
        yield url
    finally:
        server.stop()


def _t0() -> float:
    now = time.time()
    return now - (now % 60) - 600  # ten minutes ago, on a minute boundary


def _sample(ts: float, *, pps: float, servfail: float = 0.0, drops: float = 0.0,
            limit: float = 1024.0) -> Sample:
    """One second of a host: every host metric at 1.0, the budget from `pps`."""
    host = {m.key: 1.0 for m in CATALOGUE if m.scope == "host"}
    host["client_servfail_ps"] = servfail
    iface = {m.key: 1.0 for m in CATALOGUE if m.scope == "interface"}
    iface.update(budget_pps=pps, budget_headroom=1 - pps / limit,
                 ena_linklocal_allowance_exceeded=drops)
    return Sample(ts, host, {"eth0": iface})


def _series(client: Any) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """Distinct (metric, dimensions) in NS (moto's ListMetrics repeats entries)."""
    out = set()
    kw: dict[str, Any] = {"Namespace": NS}
    while True:
        page = client.list_metrics(**kw)
        for m in page["Metrics"]:
            out.add((m["MetricName"], tuple(sorted((d["Name"], d["Value"])
                                                  for d in m["Dimensions"]))))
        if not page.get("NextToken"):
            return out
        kw["NextToken"] = page["NextToken"]


def _stats(client: Any, name: str, dims: list[tuple[str, str]], t0: float,
           minutes: int) -> list[dict[str, Any]]:
    got = client.get_metric_statistics(
        Namespace=NS, MetricName=name, Period=60,
        StartTime=dt.datetime.fromtimestamp(t0, tz=dt.timezone.utc),
        EndTime=dt.datetime.fromtimestamp(t0 + 60 * minutes, tz=dt.timezone.utc),
        Dimensions=[{"Name": k, "Value": v} for k, v in dims],
        Statistics=["SampleCount", "Sum", "Minimum", "Maximum"])
    return sorted(got["Datapoints"], key=lambda p: p["Timestamp"])


def _sink(endpoint: str, instance_id: str, fleet: str | None, t0: float,
          **settings: Any) -> Any:
    m = MetricsSettings(cloudwatch=True, namespace=NS, region=REGION, endpoint_url=endpoint,
                        **settings)
    return build_cloudwatch_sink(m, instance_id, fleet=fleet, warn_headroom_pct=20.0,
                                 client=build_client(region=REGION, endpoint_url=endpoint),
                                 clock=lambda: t0)


def test_default_set_is_four_series_per_host(endpoint: str) -> None:
    t0 = _t0()
    sink = _sink(endpoint, "i-0aaa", None, t0)
    for i in range(60):
        sink.add(_sample(t0 + i, pps=100.0 + i))
    assert sink.flush(t0 + 60) == 4 and sink.counters.sent == 4
    client = sink.client
    per_iface = (("InstanceId", "i-0aaa"), ("Interface", "eth0"))
    assert _series(client) == {
        ("BudgetHeadroom", per_iface), ("BudgetPackets", per_iface),
        ("EnaLinklocalAllowanceExceeded", per_iface),
        ("ClientServfail", (("InstanceId", "i-0aaa"),)),
    }
    (peak,) = _stats(client, "BudgetPackets", [("InstanceId", "i-0aaa"), ("Interface", "eth0")],
                     t0, 1)
    assert peak["Maximum"] == 159.0 and peak["SampleCount"] == 60
    (head,) = _stats(client, "BudgetHeadroom", [("InstanceId", "i-0aaa"),
                                                ("Interface", "eth0")], t0, 1)
    assert head["Minimum"] == pytest.approx(100 * (1 - 159 / 1024))


def test_fleet_aggregates_of_three_hosts_merge_in_cloudwatch(endpoint: str) -> None:
    t0 = _t0()
    hosts = {"i-0001": 100.0, "i-0002": 400.0, "i-0003": 700.0}
    sinks = {iid: _sink(endpoint, iid, "asg-web", t0) for iid in hosts}
    for iid, base in hosts.items():
        for i in range(60):
            sinks[iid].add(_sample(t0 + i, pps=base + i, servfail=base / 100, drops=1.0))
        assert sinks[iid].flush(t0 + 60) == len(DEFAULT_NAMES) + len(FLEET_NAMES)
    client = next(iter(sinks.values())).client
    series = _series(client)
    fleet = {name for name, dims in series if dims == (("Fleet", "asg-web"),)}
    assert fleet == FLEET_NAMES  # 8 fleet series for 3 hosts, not 24
    assert len(series) == len(FLEET_NAMES) + 3 * len(DEFAULT_NAMES)
    (packets,) = _stats(client, "BudgetPackets", [("Fleet", "asg-web")], t0, 1)
    every = [base + i for base in hosts.values() for i in range(60)]
    assert packets["SampleCount"] == 180 and packets["Sum"] == pytest.approx(sum(every))
    assert packets["Maximum"] == 759.0 and packets["Minimum"] == 100.0
    (headroom,) = _stats(client, "BudgetHeadroom", [("Fleet", "asg-web")], t0, 1)
    assert headroom["Minimum"] == pytest.approx(100 * (1 - 759 / 1024))  # the worst host
    (drops,) = _stats(client, "EnaLinklocalAllowanceExceeded", [("Fleet", "asg-web")], t0, 1)
    assert drops["Sum"] == 180.0
    (servfail,) = _stats(client, "ClientServfail", [("Fleet", "asg-web")], t0, 1)
    assert servfail["Sum"] == pytest.approx(60 * (1 + 4 + 7))


def test_detail_on_trouble_switches_on_and_off(endpoint: str) -> None:
    t0 = _t0()
    sink = _sink(endpoint, "i-0bad", None, t0)
    # minute 0 fine; minute 1 under the 20% warning from :20; minutes 2-3 back at 50%
    # headroom: detail stays on for the 120 s hold; minute 4 fine, detail off
    pps = [200.0] * 60 + [200.0] * 20 + [900.0] * 40 + [512.0] * 180 + [200.0] * 60
    for i, value in enumerate(pps):
        sink.add(_sample(t0 + i, pps=value))
        if i % 60 == 59:
            sink.flush(t0 + i + 1)
    client = sink.client
    iid = [("InstanceId", "i-0bad")]
    detail = _stats(client, "ClientQueries", iid, t0, 5)
    minutes = [round((p["Timestamp"].timestamp() - t0) / 60) for p in detail]
    assert minutes == [1, 2, 3]
    assert all(p["SampleCount"] == 60 for p in detail)  # whole minutes, from their start
    always = _stats(client, "ClientServfail", iid, t0, 5)
    assert len(always) == 5
    names = {name for name, dims in _series(client)}
    assert names == DEFAULT_NAMES | TROUBLE_NAMES  # opt-in metrics never sent


def _write_config(tmp_path: Path, endpoint: str, extra: str = "") -> str:
    path = tmp_path / "agent.toml"
    path.write_text(f'[agent]\nstate_dir = "{tmp_path}/state"\n\n'
                    f'[metrics]\ncloudwatch = true\nnamespace = "{NS}"\nregion = "{REGION}"\n'
                    f'endpoint_url = "{endpoint}"\n{extra}')
    return str(path)


def test_dashboard_create_cli_read_back_with_get_dashboard(
        endpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _write_config(tmp_path, endpoint, 'fleet = "asg-web"\n')
    assert main(["dashboard", "create", "--config", config, "--name", "dns-fleet"]) == 0
    assert "dashboard dns-fleet: 7 widgets, fleet asg-web" in capsys.readouterr().out
    client = build_client(region=REGION, endpoint_url=endpoint)
    got = client.get_dashboard(DashboardName="dns-fleet")
    body = json.loads(got["DashboardBody"])
    titles = [w["properties"].get("title") for w in body["widgets"]]
    assert titles[1:] == ["Fleet budget headroom (lowest second)",
                          "Worst instances: lowest headroom (top 10)",
                          "Link-local drops (linklocal_allowance_exceeded)",
                          "Busiest second: upstream packets/s", "Cache hit ratio",
                          "Failed lookups (SERVFAIL to clients)"]
    fleet_headroom = body["widgets"][1]["properties"]["metrics"][0]
    assert fleet_headroom[:4] == [NS, "BudgetHeadroom", "Fleet", "asg-web"]
    worst = body["widgets"][2]["properties"]["metrics"][0][0]["expression"]
    assert worst.startswith(f'SELECT MIN(BudgetHeadroom) FROM SCHEMA("{NS}", InstanceId')
    assert all(w["properties"].get("region") == REGION for w in body["widgets"][1:])
    # a dashboard name CloudWatch rejects is refused before any call, in one line
    assert main(["dashboard", "create", "--config", config, "--name", "bad name"]) == 3
    assert "dashboard name 'bad name'" in capsys.readouterr().err
    assert [d["DashboardName"] for d in client.list_dashboards()["DashboardEntries"]] == [
        "dns-fleet"]


def test_fleet_alarm_cli_read_back_with_describe_alarms(
        endpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _write_config(tmp_path, endpoint, 'fleet = "asg-web"\n')
    assert main(["alarm", "create", "--config", config, "--fleet", "--threshold", "15"]) == 0
    assert capsys.readouterr().out.startswith(
        "alarm dnscache-fleet-asg-web-budget-headroom: BudgetHeadroom < 15% anywhere")
    client = build_client(region=REGION, endpoint_url=endpoint)
    (alarm,) = client.describe_alarms(
        AlarmNames=["dnscache-fleet-asg-web-budget-headroom"])["MetricAlarms"]
    assert alarm["Namespace"] == NS and alarm["MetricName"] == "BudgetHeadroom"
    assert alarm["Dimensions"] == [{"Name": "Fleet", "Value": "asg-web"}]
    assert alarm["Statistic"] == "Minimum" and alarm["Threshold"] == 15.0
    assert alarm["ComparisonOperator"] == "LessThanThreshold"
    # no fleet in the settings, none given: one line naming the file and key
    bare = _write_config(tmp_path, endpoint)
    assert main(["alarm", "create", "--config", bare, "--fleet"]) == 3
    assert f"{bare}: metrics.fleet: no fleet name" in capsys.readouterr().err
