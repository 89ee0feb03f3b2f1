"""CloudWatch sink over real HTTP: moto's server on 127.0.0.1, a dead endpoint, and a local
server answering 400 Throttling; plus the Prometheus endpoint scraped over HTTP."""
from __future__ import annotations

import datetime as dt
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from dnscache_agent.sinks.cloudwatch import CloudWatchSink, build_client, create_headroom_alarm
from dnscache_agent.sinks.prometheus import PrometheusServer
from dnscache_agent.stats.catalogue import Sample
from tests.machinery import missing_module, module_requires, optional_import

_machinery = module_requires(missing_module("moto.server", "pip install .[test]"))
moto_server = optional_import("moto.server")

REGION = "us-east-1"
NS = "DnscacheAgentTest"


@pytest.fixture(autouse=True)
def _fake_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def moto_endpoint() -> Iterator[str]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def _minute_start() -> float:
    now = time.time()
    return now - (now % 60) - 120  # two minutes ago: complete, and inside GetMetricStatistics


def test_statistic_sets_read_back_from_moto(moto_endpoint: str) -> None:
    client = build_client(region=REGION, endpoint_url=moto_endpoint)
    t0 = _minute_start()
    sink = CloudWatchSink(NS, "i-0abc", client=client, clock=lambda: t0 + 120)
    pps = [float(100 + 10 * i) for i in range(60)]
    for i, value in enumerate(pps):
        sink.add(Sample(t0 + i, {"client_qps": 50.0, "cache_hit_ratio": 0.8},
                        {"eth0": {"budget_pps": value, "budget_headroom": 1 - value / 1024}}))
    assert sink.flush(t0 + 120) == 4 and sink.counters.sent == 4
    start = dt.datetime.fromtimestamp(t0 - 60, tz=dt.timezone.utc)
    end = dt.datetime.fromtimestamp(t0 + 120, tz=dt.timezone.utc)
    got = client.get_metric_statistics(
        Namespace=NS, MetricName="BudgetPackets", StartTime=start, EndTime=end, Period=60,
        Dimensions=[{"Name": "InstanceId", "Value": "i-0abc"},
                    {"Name": "Interface", "Value": "eth0"}],
        Statistics=["SampleCount", "Sum", "Minimum", "Maximum", "Average"])
    (point,) = got["Datapoints"]
    assert point["SampleCount"] == 60 and point["Sum"] == pytest.approx(sum(pps))
    assert point["Maximum"] == max(pps) and point["Minimum"] == min(pps)
    assert point["Unit"] == "Count/Second"
    data = client.get_metric_data(
        MetricDataQueries=[{"Id": "hit", "MetricStat": {"Metric": {
            "Namespace": NS, "MetricName": "CacheHitRatio",
            "Dimensions": [{"Name": "InstanceId", "Value": "i-0abc"}]},
            "Period": 60, "Stat": "Average"}}],
        StartTime=start, EndTime=end)
    assert data["MetricDataResults"][0]["Values"] == [pytest.approx(80.0)]


def test_alarm_created_in_moto(moto_endpoint: str) -> None:
    client = build_client(region=REGION, endpoint_url=moto_endpoint)
    name = create_headroom_alarm(client, NS, "i-0abc", "eth0", threshold_pct=20)
    (alarm,) = client.describe_alarms(AlarmNames=[name])["MetricAlarms"]
    assert alarm["MetricName"] == "BudgetHeadroom" and alarm["Threshold"] == 20.0
    assert alarm["Statistic"] == "Minimum"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_endpoint_down_buffers_and_counts_drops() -> None:
    client = build_client(region=REGION, endpoint_url=f"http://127.0.0.1:{_free_port()}",
                          connect_timeout=0.5, read_timeout=0.5)
    t0 = _minute_start()
    sleeps: list[float] = []
    sink = CloudWatchSink(NS, "i-0abc", client=client, buffer_limit=5, sleep=sleeps.append,
                          clock=lambda: t0)
    for minute in range(3):
        sink.add(Sample(t0 + 60 * minute, {"client_qps": 1.0, "upstream_pps": 2.0,
                                           "cache_hit_ratio": 0.5}))
        assert sink.flush(t0 + 60 * (minute + 1)) == 0
    assert len(sink.buffer) == 5 and sink.counters.dropped == 4 and not sleeps


def _cbor_text_map(items: dict[str, str]) -> bytes:
    """Minimal CBOR: a map of short text strings (enough for an error body)."""
    def text(t: str) -> bytes:
        raw = t.encode()
        assert len(raw) < 256
        return (bytes([0x60 + len(raw)]) if len(raw) < 24 else bytes([0x78, len(raw)])) + raw

    assert len(items) < 24
    return bytes([0xA0 + len(items)]) + b"".join(text(k) + text(v) for k, v in items.items())


class _Throttler(BaseHTTPRequestHandler):
    """Answers every call like CloudWatch does when throttling, in the protocol the client
    spoke: rpc-v2-cbor (current botocore), JSON, or the older query/XML protocol."""

    hits = 0

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        type(self).hits += 1
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        ctype = self.headers.get("Content-Type", "")
        headers = {"x-amzn-query-error": "Throttling;Sender", "x-amzn-requestid": "1"}
        if "cbor" in ctype:
            body = _cbor_text_map({"__type": "com.amazonaws.cloudwatch#Throttling",
                                   "message": "Rate exceeded"})
            headers.update({"Content-Type": "application/cbor", "smithy-protocol": "rpc-v2-cbor"})
        elif "json" in ctype:
            body = b'{"__type": "Throttling", "message": "Rate exceeded"}'
            headers["Content-Type"] = "application/x-amz-json-1.0"
        else:
            body = (b'<ErrorResponse xmlns="http://monitoring.amazonaws.com/doc/2010-08-01/">'
                    b"<Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded"
                    b"</Message></Error><RequestId>1</RequestId></ErrorResponse>")
            headers["Content-Type"] = "text/xml"
        self.send_response(400)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_sustained_throttling_backs_off_and_keeps_buffer() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Throttler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = build_client(region=REGION,
                              endpoint_url=f"http://127.0.0.1:{server.server_port}")
        t0 = _minute_start()
        sleeps: list[float] = []
        sink = CloudWatchSink(NS, "i-0abc", client=client, max_attempts=4, base_delay=1.0,
                              max_delay=4.0, sleep=sleeps.append, random=lambda: 0.5,
                              clock=lambda: t0)
        for minute in range(3):  # three minutes of throttling
            sink.add(Sample(t0 + 60 * minute, {"client_qps": 1.0}))
            assert sink.flush(t0 + 60 * (minute + 1)) == 0
        assert _Throttler.hits == 12  # 4 attempts per minute, botocore adds none
        assert sleeps == [0.5, 1.0, 2.0] * 3
        assert len(sink.buffer) == 3 and sink.counters.throttled == 12
        assert sink.counters.dropped == 0
    finally:
        server.shutdown()
        server.server_close()


def test_prometheus_endpoint_scraped_over_http() -> None:
    sample = Sample(1.0, {"client_qps": 42.0, "upstream_pps": 7.5},
                    {"eth0": {"budget_headroom": 0.25}})
    server = PrometheusServer(lambda: sample, port=0)
    try:
        resp = requests.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5)
        assert resp.status_code == 200
        assert "dnscache_client_queries_per_second 42.0" in resp.text
        assert "dnscache_upstream_packets_per_second 7.5" in resp.text
        assert 'dnscache_budget_headroom_ratio{interface="eth0"} 0.25' in resp.text
    finally:
        server.close()
