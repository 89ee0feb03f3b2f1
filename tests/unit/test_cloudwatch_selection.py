"""Which metrics the CloudWatch sink sends, when (issue 13): the default set, opt-in by name,
fleet aggregates, and full detail while in trouble, with sample time as the clock."""
from __future__ import annotations

from typing import Any

import pytest

from dnscache_agent.errors import ConfigError
from dnscache_agent.settings import MetricsSettings, from_mapping
from dnscache_agent.sinks.cloudwatch import (
    CloudWatchSink,
    MinuteAggregator,
    Selection,
    TroubleDetector,
    build_cloudwatch_sink,
    create_fleet_headroom_alarm,
    resolve_fleet,
)
from dnscache_agent.stats.catalogue import (
    CATALOGUE,
    DEFAULT,
    FLEET,
    ON_TROUBLE,
    OPT_IN,
    SEND_TAGS,
    Sample,
)

T0 = 1_800_000_000.0
CW = [m for m in CATALOGUE if m.cloudwatch_name]
DEFAULT_NAMES = {"BudgetHeadroom", "BudgetPackets", "EnaLinklocalAllowanceExceeded",
                 "ClientServfail"}


def full_sample(ts: float, headroom: float = 0.9, ifaces: tuple[str, ...] = ("eth0",)) -> Sample:
    """A sample with a value for every catalogue metric."""
    host = {m.key: 1.0 for m in CATALOGUE if m.scope == "host"}
    per_iface = {m.key: 1.0 for m in CATALOGUE if m.scope == "interface"}
    return Sample(ts, host, {i: {**per_iface, "budget_headroom": headroom} for i in ifaces})


def names(datums: list[Any]) -> set[str]:
    return {d.name for d in datums}


def test_every_cloudwatch_metric_says_when_it_is_sent() -> None:
    for m in CW:
        tags = m.cloudwatch_send
        assert tags and set(tags) <= set(SEND_TAGS), m.key
        # exactly one of default / on-trouble / opt-in; fleet is an addition
        assert len(set(tags) & {DEFAULT, ON_TROUBLE, OPT_IN}) == 1, m.key
    assert {m.cloudwatch_name for m in CW if DEFAULT in m.cloudwatch_send} == DEFAULT_NAMES
    assert all(not m.cloudwatch_send for m in CATALOGUE if not m.cloudwatch_name)


def test_default_set_is_four_series_per_single_interface_host() -> None:
    agg = MinuteAggregator("i-1", selection=Selection.from_settings())
    for i in range(60):
        agg.add(full_sample(T0 + i))
    datums = agg.pop_complete(T0 + 60)
    assert names(datums) == DEFAULT_NAMES and len(datums) == 4
    assert all(d.dimensions[0] == ("InstanceId", "i-1") for d in datums)
    two = MinuteAggregator("i-1", selection=Selection.from_settings())
    two.add(full_sample(T0, ifaces=("eth0", "eth1")))
    assert len(two.pop_all()) == 1 + 3 * 2  # ClientServfail + 3 per interface


def test_include_adds_by_key_or_cloudwatch_name_and_rejects_unknown() -> None:
    s = from_mapping({"metrics": {"cloudwatch_include": ["client_qps", "UpstreamRttShareLt10ms",
                                                         "ClientQueries"]}}, "/etc/a.toml")
    assert s.metrics.cloudwatch_include == ("client_qps", "upstream_rtt_share_lt10ms")
    agg = MinuteAggregator("i-1", selection=Selection.from_settings(s.metrics.cloudwatch_include))
    agg.add(full_sample(T0))
    assert names(agg.pop_all()) == DEFAULT_NAMES | {"ClientQueries", "UpstreamRttShareLt10ms"}
    for bad in (["NoSuchMetric"], ["client_queries_total"], "client_qps", [1]):
        with pytest.raises(ConfigError) as exc:
            from_mapping({"metrics": {"cloudwatch_include": bad}}, "/etc/a.toml")
        msg = str(exc.value)
        assert msg.startswith("/etc/a.toml: metrics.cloudwatch_include:") and "\n" not in msg
    with pytest.raises(ConfigError):
        Selection.from_settings(["nope"])


def test_fleet_aggregates_carry_only_the_fleet_dimension() -> None:
    agg = MinuteAggregator("i-1", selection=Selection.from_settings(fleet_name="asg-web"))
    for i in range(60):
        agg.add(full_sample(T0 + i, headroom=0.5 + i / 200, ifaces=("eth0", "eth1")))
    datums = agg.pop_complete(T0 + 60)
    fleet = [d for d in datums if d.dimensions == (("Fleet", "asg-web"),)]
    expected = {m.cloudwatch_name for m in CW if FLEET in m.cloudwatch_send}
    assert names(fleet) == expected and len(fleet) == len(expected)
    head = next(d for d in fleet if d.name == "BudgetHeadroom")
    # both interfaces fold into one series: 120 interface-seconds
    assert head.sample_count == 120 and head.minimum == 50.0
    assert head.maximum == pytest.approx(50 + 59 / 2)
    per_instance = [d for d in datums if d.dimensions[0][0] == "InstanceId"]
    assert names(per_instance) == DEFAULT_NAMES


def test_trouble_detector_hysteresis_with_sample_clock() -> None:
    det = TroubleDetector(20.0, hysteresis_pct=10.0, hold_seconds=60)
    seq = [(0, 0.5, False), (1, 0.19, True), (2, 0.25, True),  # 25% < 30%: still in trouble
           (3, 0.35, True), (40, 0.35, True), (50, 0.25, True),  # dip resets the hold
           (51, 0.40, True), (110, 0.40, True), (111, 0.40, False), (112, 0.21, False)]
    for t, headroom, on in seq:
        assert det.update(full_sample(T0 + t, headroom)) is on, t
    det.update(full_sample(T0 + 200, 0.1, ifaces=("eth1",)))
    assert det.interfaces == ("eth1",)
    # a second without a headroom figure keeps the state
    assert det.update(Sample(T0 + 201, {}, {"eth1": {"budget_pps": 1.0}}))


def test_detail_on_trouble_switches_on_for_whole_minutes_and_off_after_recovery() -> None:
    agg = MinuteAggregator("i-1", selection=Selection.from_settings(),
                           trouble=TroubleDetector(20.0, hold_seconds=60))
    on_trouble = {m.cloudwatch_name for m in CW if ON_TROUBLE in m.cloudwatch_send}
    opt_in = {m.cloudwatch_name for m in CW if OPT_IN in m.cloudwatch_send}
    headroom = ([0.9] * 60 +            # minute 0: fine
                [0.9] * 30 + [0.1] * 30 +  # minute 1: trouble from :30
                [0.5] * 60 +            # minute 2: recovering (hold 60 s from :00)
                [0.5] * 60)             # minute 3: recovered at :00
    for i, h in enumerate(headroom):
        agg.add(full_sample(T0 + i, h))
    minutes = [agg.pop_complete(T0 + 60 * (n + 1)) for n in range(4)]
    assert names(minutes[0]) == DEFAULT_NAMES
    for m in minutes[1:3]:
        assert names(m) == DEFAULT_NAMES | on_trouble and not names(m) & opt_in
    # the whole minute is in the detail, not just the seconds after the onset
    client_qps = next(d for d in minutes[1] if d.name == "ClientQueries")
    assert client_qps.sample_count == 60
    # minute 3's first second completes the 60 s hold above 30%: detail off again
    assert names(minutes[3]) == DEFAULT_NAMES
    assert not agg.trouble.active


def test_everything_selection_is_the_old_behaviour() -> None:
    agg = MinuteAggregator("i-1")
    agg.add(full_sample(T0))
    assert names(agg.pop_all()) == {m.cloudwatch_name for m in CW}


def test_resolve_fleet_prefers_the_setting_then_the_tag() -> None:
    asked: list[str] = []

    def tag(key: str) -> str | None:
        asked.append(key)
        return {"aws:autoscaling:groupName": "asg-1"}.get(key)

    assert resolve_fleet(MetricsSettings(fleet="web", fleet_tag="x"), tag) == "web"
    assert not asked
    m = MetricsSettings(fleet_tag="aws:autoscaling:groupName")
    assert resolve_fleet(m, tag) == "asg-1"
    assert resolve_fleet(MetricsSettings(fleet_tag="other"), tag) is None
    assert resolve_fleet(m, None) is None
    assert resolve_fleet(m, lambda k: "x" * 1025) is None
    assert resolve_fleet(MetricsSettings(), tag) is None


@pytest.mark.parametrize("section", [{"fleet": "a\nb"}, {"fleet": "x" * 1025},
                                     {"fleet": " web"}, {"fleet_tag": "a/b"},
                                     {"fleet_tag": "t" * 129}, {"fleet_tag": 3}])
def test_fleet_settings_are_validated(section: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as exc:
        from_mapping({"metrics": section}, "/etc/a.toml")
    assert str(exc.value).startswith(f"/etc/a.toml: metrics.{next(iter(section))}:")


class FakeClient:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.alarms: list[dict[str, Any]] = []

    def put_metric_data(self, **kw: Any) -> None:
        self.calls.append(kw)

    def put_metric_alarm(self, **kw: Any) -> None:
        self.alarms.append(kw)


def test_build_cloudwatch_sink_from_settings() -> None:
    client = FakeClient()
    m = MetricsSettings(cloudwatch=True, namespace="NS", cloudwatch_include=("client_qps",))
    sink = build_cloudwatch_sink(m, "i-9", fleet="web", warn_headroom_pct=50.0, client=client,
                                 clock=lambda: T0, random=lambda: 0.0)
    assert isinstance(sink, CloudWatchSink) and sink.namespace == "NS"
    sink.add(full_sample(T0, headroom=0.6))
    sink.flush(T0 + 60)
    sent = client.calls[0]["MetricData"]
    assert {d["MetricName"] for d in sent if d["Dimensions"][0]["Name"] == "InstanceId"} == \
        DEFAULT_NAMES | {"ClientQueries"}
    sink.add(full_sample(T0 + 60, headroom=0.4))  # under the 50% warning: detail
    sink.flush(T0 + 120)
    assert len(client.calls[1]["MetricData"]) > len(sent)


def test_fleet_alarm_arguments() -> None:
    client = FakeClient()
    name = create_fleet_headroom_alarm(client, "NS", "asg-web", threshold_pct=15)
    (alarm,) = client.alarms
    assert name == "dnscache-fleet-asg-web-budget-headroom"
    assert alarm["Dimensions"] == [{"Name": "Fleet", "Value": "asg-web"}]
    assert alarm["Statistic"] == "Minimum" and alarm["Threshold"] == 15.0
    assert alarm["TreatMissingData"] == "notBreaching"
    for bad in ({"fleet": ""}, {"fleet": "a\nb"}, {"threshold_pct": 0.0},
                {"fleet": "f" * 300}):
        kw: dict[str, Any] = {"fleet": "web", **bad}
        with pytest.raises(ConfigError):
            create_fleet_headroom_alarm(client, "NS", **kw)


def test_limits_hold_for_fleet_datums_that_moto_would_accept() -> None:
    client = FakeClient()
    sink = CloudWatchSink("NS", "i-1", client=client, clock=lambda: T0, random=lambda: 0.0,
                          selection=Selection.from_settings(fleet_name="f" * 1025))
    sink.add(full_sample(T0, ifaces=tuple(f"eth{i}" for i in range(400))))
    sent = sink.flush(T0 + 60)
    # 1 + 3 x 400 per-instance datums in calls of at most 1000; the fleet ones (a dimension
    # value over 1024 characters) refused here, not sent for moto to accept
    assert sent == 1201 and [len(c["MetricData"]) for c in client.calls] == [1000, 201]
    assert sink.counters.rejected == 8
    assert all(len(d["Dimensions"]) <= 2 for c in client.calls for d in c["MetricData"])
