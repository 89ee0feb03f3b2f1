"""CloudWatch sink with a fake client: aggregation, limits, batching, retries, buffer."""
from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from dnscache_agent.errors import ConfigError
from dnscache_agent.sinks.cloudwatch import (
    MAX_DATUMS_PER_CALL,
    CloudWatchLimitError,
    CloudWatchSink,
    Datum,
    MinuteAggregator,
    create_headroom_alarm,
    make_batches,
    payload_size,
    validate_batch,
    validate_datum,
    validate_namespace,
)
from dnscache_agent.stats.catalogue import Sample

T0 = 1_800_000_000.0  # a minute boundary
assert T0 % 60 == 0


def _error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "PutMetricData")


class FakeClient:
    def __init__(self, failures: list[Exception] | None = None) -> None:
        self.failures = list(failures or [])
        self.calls: list[dict[str, Any]] = []
        self.attempts = 0
        self.alarms: list[dict[str, Any]] = []

    def put_metric_data(self, **kw: Any) -> None:
        self.attempts += 1
        if self.failures:
            raise self.failures.pop(0)
        self.calls.append(kw)

    def put_metric_alarm(self, **kw: Any) -> None:
        self.alarms.append(kw)


def sink(client: FakeClient, **kw: Any) -> tuple[CloudWatchSink, list[float]]:
    sleeps: list[float] = []
    s = CloudWatchSink("DnscacheAgent", "i-0123", client=client, sleep=sleeps.append,
                       random=lambda: 1.0, clock=lambda: T0, **kw)
    return s, sleeps


def feed(s: CloudWatchSink, seconds: int, start: float = T0) -> None:
    for i in range(seconds):
        s.add(Sample(start + i, {"client_qps": float(i), "cache_hit_ratio": 0.5},
                     {"eth0": {"budget_pps": 100.0 + i, "budget_headroom": 0.9,
                               "ena_linklocal_allowance_exceeded": 1.0}}))


def by_name(call: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["MetricName"]: d for d in call["MetricData"]}


def test_one_second_samples_become_one_statistic_set_per_minute() -> None:
    client = FakeClient()
    s, _ = sink(client)
    feed(s, 60)
    assert s.flush(T0 + 59) == 0  # the minute is not over yet
    assert s.flush(T0 + 61) == 5
    data = by_name(client.calls[0])
    q = data["ClientQueries"]
    assert q["StatisticValues"] == {"SampleCount": 60.0, "Sum": float(sum(range(60))),
                                    "Minimum": 0.0, "Maximum": 59.0}
    assert q["Dimensions"] == [{"Name": "InstanceId", "Value": "i-0123"}]
    assert q["Unit"] == "Count/Second" and q["StorageResolution"] == 60
    assert q["Timestamp"].timestamp() == T0
    assert data["CacheHitRatio"]["StatisticValues"]["Maximum"] == 50.0  # ratio sent as Percent
    assert data["CacheHitRatio"]["Unit"] == "Percent"
    b = data["BudgetPackets"]
    assert b["Dimensions"] == [{"Name": "InstanceId", "Value": "i-0123"},
                               {"Name": "Interface", "Value": "eth0"}]
    assert b["StatisticValues"]["Maximum"] == 159.0  # the minute's peak second
    assert data["EnaLinklocalAllowanceExceeded"]["StatisticValues"]["Sum"] == 60.0
    assert client.calls[0]["Namespace"] == "DnscacheAgent"


def test_high_resolution_sets_storage_resolution_1() -> None:
    client = FakeClient()
    s, _ = sink(client, high_resolution=True)
    feed(s, 3)
    s.flush(T0 + 60)
    assert {d["StorageResolution"] for d in client.calls[0]["MetricData"]} == {1}


def test_tick_sends_once_a_minute_after_jitter() -> None:
    client = FakeClient()
    s, _ = sink(client, jitter_seconds=10)
    assert s.next_send == T0 + 60 + 10
    feed(s, 60)
    assert not s.tick(T0 + 65)
    assert s.tick(T0 + 70) and len(client.calls) == 1
    assert s.next_send == T0 + 120 + 10


@pytest.mark.parametrize("namespace", ["AWS/EC2", "", "a" * 256, "bad space", "x\n"])
def test_namespace_validation(namespace: str) -> None:
    with pytest.raises(ConfigError):
        validate_namespace(namespace)


def _datum(**kw: Any) -> Datum:
    base: dict[str, Any] = dict(name="M", dimensions=(("InstanceId", "i-1"),), timestamp=T0,
                                unit="Count", sample_count=1.0, total=1.0, minimum=1.0,
                                maximum=1.0, storage_resolution=60)
    base.update(kw)
    return Datum(**base)


@pytest.mark.parametrize("kw", [
    {"dimensions": tuple((f"d{i}", "v") for i in range(31))},
    {"storage_resolution": 7}, {"unit": "Parsecs"}, {"name": ""}, {"name": "x" * 256},
    {"total": float("nan")}, {"maximum": 2e108}, {"minimum": 1e-200, "maximum": 1.0},
    {"minimum": 5.0, "maximum": 1.0}, {"sample_count": 0.0},
    {"timestamp": T0 - 15 * 86400}, {"timestamp": T0 + 3 * 3600},
    {"dimensions": (("a", "1"), ("a", "2"))}, {"dimensions": (("a", ""),)},
])
def test_datum_limits_that_moto_does_not_check(kw: dict[str, Any]) -> None:
    with pytest.raises(CloudWatchLimitError):
        validate_datum(_datum(**kw), T0)


def test_thirty_dimensions_are_fine() -> None:
    validate_datum(_datum(dimensions=tuple((f"d{i}", "v") for i in range(30))), T0)


def test_batches_respect_count_and_size() -> None:
    many = [_datum(name=f"M{i}") for i in range(2500)]
    batches = make_batches("NS", many)
    assert [len(b) for b in batches] == [1000, 1000, 500]
    for b in batches:
        validate_batch("NS", b, T0)
    with pytest.raises(CloudWatchLimitError):
        validate_batch("NS", many[:MAX_DATUMS_PER_CALL + 1], T0)
    fat = [_datum(name=f"M{i}", dimensions=tuple((f"d{j}", "v" * 1000) for j in range(30)))
           for i in range(40)]
    fat_batches = make_batches("NS", fat)
    assert len(fat_batches) > 1
    assert all(payload_size("NS", b) <= 1_000_000 for b in fat_batches)
    with pytest.raises(CloudWatchLimitError):
        validate_batch("NS", fat, T0)


def test_large_flush_is_split_into_calls_within_limits() -> None:
    client = FakeClient()
    s, _ = sink(client)
    for i in range(60):
        s.add(Sample(T0 + i, {}, {f"eth{n}": {"budget_pps": 1.0, "budget_headroom": 1.0,
                                             "ena_present": 1.0} for n in range(700)}))
    assert s.flush(T0 + 61) == 1400
    assert [len(c["MetricData"]) for c in client.calls] == [1000, 400]


def test_throttling_retries_with_capped_full_jitter_backoff() -> None:
    client = FakeClient([_error("Throttling", 400), _error("ThrottlingException", 400),
                         _error("InternalFailure", 500)])
    s, sleeps = sink(client, base_delay=1.0, max_delay=3.0, max_attempts=5)
    feed(s, 2)
    assert s.flush(T0 + 60) == 5
    assert sleeps == [1.0, 2.0, 3.0]  # random()=1.0 shows the cap: min(3, 1 * 2**n)
    assert s.counters.retries == 3 and s.counters.throttled == 3 and s.counters.sent == 5


def test_backoff_is_full_jitter() -> None:
    s, _ = sink(FakeClient(), base_delay=1.0, max_delay=20.0)
    s.random = lambda: 0.25
    assert [s.backoff(n) for n in range(6)] == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0]


def test_sustained_throttling_keeps_data_buffered() -> None:
    client = FakeClient([_error("Throttling", 400)] * 10)
    s, sleeps = sink(client, max_attempts=3)
    feed(s, 2)
    assert s.flush(T0 + 60) == 0
    assert client.attempts == 3 and len(sleeps) == 2
    assert len(s.buffer) == 5 and s.counters.dropped == 0
    client.failures.clear()
    assert s.flush(T0 + 120) == 5 and not s.buffer


def test_other_client_errors_are_not_retried() -> None:
    client = FakeClient([_error("InvalidParameterValue", 400)])
    s, sleeps = sink(client)
    feed(s, 1)
    assert s.flush(T0 + 60) == 0
    assert client.attempts == 1 and not sleeps and s.counters.rejected == 5
    assert not s.buffer


def test_unreachable_endpoint_fills_bounded_buffer_dropping_oldest() -> None:
    client = FakeClient([EndpointConnectionError(endpoint_url="http://x")] * 100)
    s, sleeps = sink(client, buffer_limit=12)
    for minute in range(4):
        feed(s, 1, start=T0 + 60 * minute)
        s.flush(T0 + 60 * (minute + 1))
    assert not sleeps  # connection errors wait for the next minute, they do not spin
    assert len(s.buffer) == 12 and s.counters.dropped == 4 * 5 - 12
    assert min(d.timestamp for d in s.buffer) == T0 + 60  # the oldest minute went first
    client.failures.clear()
    assert s.flush(T0 + 300) == 12


def test_flush_never_raises() -> None:
    client = FakeClient([RuntimeError("boom")])
    s, _ = sink(client)
    feed(s, 1)
    assert s.flush(T0 + 60) == 0
    s.add(None)  # type: ignore[arg-type]
    assert len(s.buffer) == 5


def test_aggregator_rejects_period_not_dividing_a_minute() -> None:
    with pytest.raises(ConfigError):
        MinuteAggregator("i-1", period=7)


def test_create_headroom_alarm() -> None:
    client = FakeClient()
    name = create_headroom_alarm(client, "DnscacheAgent", "i-0123", "eth0", threshold_pct=25,
                                 alarm_actions=["arn:aws:sns:us-east-1:1:topic"])
    (alarm,) = client.alarms
    assert name == alarm["AlarmName"] == "dnscache-i-0123-eth0-budget-headroom"
    assert alarm["MetricName"] == "BudgetHeadroom" and alarm["Statistic"] == "Minimum"
    assert alarm["Threshold"] == 25.0 and alarm["ComparisonOperator"] == "LessThanThreshold"
    assert {"Name": "Interface", "Value": "eth0"} in alarm["Dimensions"]
    assert alarm["ActionsEnabled"]
    with pytest.raises(ConfigError):
        create_headroom_alarm(client, "AWS/Foo", "i-1", "eth0")
    with pytest.raises(ConfigError):
        create_headroom_alarm(client, "NS", "i-1", "eth0", period=45)
