"""CloudWatch end to end through the real cache (issue 4).

In the simulated VPC's instance namespace: the agent applied for real, moto's CloudWatch server
on 127.0.0.1, and `dnscache-agent run --no-repair` exporting to it. dnsperf sends a known, paced
load through the cache; the daemon is stopped with SIGTERM (which must flush the minute in
progress); the datapoints are read back over HTTP with boto3 and checked against what dnsperf
sent and what the resolver's limit rule counted. The InstanceId dimension must be the fake
IMDS's instance id (inside the namespace 169.254.169.254 is the rig's fake, so the suite-wide
loopback IMDS override is dropped for these runs only).

moto 5.2 cannot read a gzip-compressed PutMetricData (botocore compresses bodies over 10 KB:
moto answers HTTP 500 "Not a gzipped file", the getmoto/moto#7377 family), and a run that
crosses a minute boundary sends two minutes in one call. The agent's processes here therefore
get AWS_DISABLE_REQUEST_COMPRESSION=true; real CloudWatch takes compressed bodies.
"""
from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rig import SimulatedVpc, write_queries_file
from rig.netns import stop_process
from rig.zone import host_label, host_ttl
from tests.machinery import first_missing, missing_module, module_requires

_machinery = module_requires(first_missing([missing_module("moto.server", "pip install .[test]"),
                                             missing_module("boto3")]))

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
NAMESPACE = "DnscacheAgentE2E"
#: Any port is free in the fresh instance namespace except named's 53, 953 and 8053.
MOTO_PORT = 5055
ENDPOINT = f"http://127.0.0.1:{MOTO_PORT}"
QPS = 300
SECONDS = 10
#: Sum of the per-second rates against an exact count (dnsperf's, or the nft counter): the
#: rates are counter deltas divided by ~1 s of monotonic time, so a late sample shifts a few
#: queries between seconds; the daemon's own health and verify queries add a handful.
REL_TOLERANCE = 0.03
ABS_TOLERANCE = 15
#: SampleCount against the seconds the daemon ran (start-up and the priming sample excluded).
SAMPLE_COUNT_SLACK = 2


def _aws_env(vpc: SimulatedVpc) -> list[str]:
    """`env` prefix: fake credentials, no host AWS config, no request compression (moto), the
    fake IMDS (no loopback override)."""
    nowhere = vpc.workdir / "no-aws-config"
    return ["env", "-u", "DNSCACHE_AGENT_IMDS_ENDPOINT", "-u", "AWS_PROFILE",
            "-u", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID=testing",
            "AWS_SECRET_ACCESS_KEY=testing", f"AWS_DEFAULT_REGION={REGION}",
            f"AWS_CONFIG_FILE={nowhere}", f"AWS_SHARED_CREDENTIALS_FILE={nowhere}",
            "AWS_DISABLE_REQUEST_COMPRESSION=true",
            f"PYTHONPATH={REPO}"]


def _agent(vpc: SimulatedVpc, *command: str, args: tuple[str, ...] = ()) -> list[str]:
    """`dnscache-agent COMMAND... --config FILE ARGS...`: the options go after the innermost
    subcommand (`alarm --config F create` loses F to the `create` parser's default)."""
    return [*_aws_env(vpc), sys.executable, "-m", "dnscache_agent", *command,
            "--config", str(vpc.workdir / "agent.toml"), *args]


SETTINGS = f"""\
[cache]
health_name = "h1.vpc.test"

[metrics]
cloudwatch = true
endpoint_url = "{ENDPOINT}"
region = "{REGION}"
namespace = "{NAMESPACE}"
high_resolution = true
# beyond the default set (BudgetPackets is in it): what the read-back compares
cloudwatch_include = ["ClientQueries", "UpstreamPackets"]
"""

# Polls until moto answers any HTTP request (bounded by argv[2] seconds).
WAIT_HTTP = r"""
import sys, time, urllib.error, urllib.request
url, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
while True:
    try:
        urllib.request.urlopen(url, timeout=1).read()
        break
    except urllib.error.HTTPError:
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit("no answer from " + url)
        time.sleep(0.2)
"""

# GetMetricStatistics per (metric, dimensions) and ListMetrics, printed as JSON.
READ_BACK = r"""
import boto3, datetime as dt, json, sys
endpoint, namespace, start, end, queries = sys.argv[1:6]
cw = boto3.client("cloudwatch", endpoint_url=endpoint, region_name="us-east-1")
t = lambda s: dt.datetime.fromtimestamp(float(s), tz=dt.timezone.utc)
out = {"points": [], "listed": {}}
for name, dims in json.loads(queries):
    got = cw.get_metric_statistics(
        Namespace=namespace, MetricName=name, StartTime=t(start), EndTime=t(end), Period=60,
        Dimensions=[{"Name": k, "Value": v} for k, v in dims],
        Statistics=["SampleCount", "Sum", "Minimum", "Maximum"])
    out["points"].append([{**p, "Timestamp": p["Timestamp"].timestamp()}
                          for p in got["Datapoints"]])
    listed = cw.list_metrics(Namespace=namespace, MetricName=name)["Metrics"]
    out["listed"][name] = sorted({json.dumps(sorted((d["Name"], d["Value"])
                                                    for d in m["Dimensions"]))
                                  for m in listed})
print(json.dumps(out))
"""

DESCRIBE_ALARM = r"""
import boto3, json, sys
cw = boto3.client("cloudwatch", endpoint_url=sys.argv[1], region_name="us-east-1")
alarms = cw.describe_alarms(AlarmNames=[sys.argv[2]])["MetricAlarms"]
keep = ("AlarmName", "Namespace", "MetricName", "Dimensions", "Statistic", "Period",
        "Threshold", "ComparisonOperator", "EvaluationPeriods", "Unit")
print(json.dumps([{k: a.get(k) for k in keep} for a in alarms]))
"""


@pytest.fixture(scope="module")
def cloud(vpc: SimulatedVpc) -> Iterator[SimulatedVpc]:
    """The VPC with the agent applied and moto's server answering on 127.0.0.1 inside the
    instance namespace; moto stopped by PID and the agent rolled back at the end."""
    (vpc.workdir / "agent.toml").write_text(vpc.agent_toml(SETTINGS))
    cp = vpc.exec_instance(_agent(vpc, "apply"), timeout=120)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    moto_log = (vpc.workdir / "moto.log").open("w")
    moto = vpc.popen_instance(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(MOTO_PORT)],
        stdout=moto_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        cp = vpc.exec_instance([sys.executable, "-c", WAIT_HTTP, ENDPOINT, "20"], timeout=30)
        assert cp.returncode == 0, cp.stderr + (vpc.workdir / "moto.log").read_text()[-2000:]
        yield vpc
    finally:
        stop_process(moto, grace=10)
        moto_log.close()
        vpc.exec_instance(_agent(vpc, "rollback"), timeout=120)


def _read_back(vpc: SimulatedVpc, start: float, end: float,
               queries: list[tuple[str, list[tuple[str, str]]]]) -> dict[str, Any]:
    cp = vpc.exec_instance(
        [*_aws_env(vpc), sys.executable, "-c", READ_BACK, ENDPOINT, NAMESPACE, str(start),
         str(end), json.dumps(queries)], timeout=60)
    assert cp.returncode == 0, cp.stderr
    result: dict[str, Any] = json.loads(cp.stdout)
    return result


@dataclass(frozen=True)
class Totals:
    """The datapoints of one metric added up (all periods of the run)."""

    sample_count: float
    total: float
    maximum: float
    timestamps: tuple[float, ...]


def _totals(points: list[dict[str, Any]]) -> Totals:
    assert points, "no datapoints"
    for p in points:
        assert p["Unit"] == "Count/Second", p
    return Totals(sum(p["SampleCount"] for p in points), sum(p["Sum"] for p in points),
                  max(p["Maximum"] for p in points),
                  tuple(sorted(p["Timestamp"] for p in points)))


def _wait_for_line(path: Path, needle: str, proc: subprocess.Popen[Any],
                   timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while needle not in path.read_text():
        assert proc.poll() is None, f"daemon exited {proc.returncode}: {path.read_text()}"
        assert time.monotonic() < deadline, f"no {needle!r} in {timeout:g}s: {path.read_text()}"
        time.sleep(0.1)


def _near(value: float, expected: float) -> bool:
    return abs(value - expected) <= max(ABS_TOLERANCE, REL_TOLERANCE * expected)


def test_datapoints_read_back_match_the_load_and_the_resolver_counter(
        cloud: SimulatedVpc) -> None:
    vpc = cloud
    assert vpc.imds_facts is not None
    instance_id = vpc.imds_facts.instance_id
    # Every other query is a name never asked before (one upstream packet each); the rest
    # repeat one long-TTL name (answered from cache), so client and upstream totals differ.
    zone = vpc.zone
    repeated = next(i for i in range(100, 200) if host_ttl(zone, i) == max(zone.ttls))
    names: list[tuple[str, str]] = []
    for i in range(QPS * SECONDS):  # twice what dnsperf can send: the file never wraps
        names += [(f"{host_label(1000 + i)}.vpc.test", "A"),
                  (f"{host_label(repeated)}.vpc.test", "A")]
    queries = write_queries_file(vpc.workdir / "mixed.txt", names)

    daemon_log = vpc.workdir / "daemon.log"
    before = vpc.counters()
    started = time.time()
    with daemon_log.open("w") as out:
        daemon = vpc.popen_instance(_agent(vpc, "run", args=("--no-repair",)), stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    # "ready:" comes after the first (priming) sample, so the whole load is measured.
    _wait_for_line(daemon_log, "ready:", daemon, timeout=30)
    ready = time.time()
    assert "sinks: cloudwatch" in daemon_log.read_text()
    result = vpc.dnsperf(queries, server="127.0.0.1", qps=QPS, seconds=SECONDS, clients=2,
                         max_outstanding=QPS)
    time.sleep(2.5)  # the last seconds of the load reach a sample
    stopped = time.time()
    daemon.send_signal(signal.SIGTERM)
    code = daemon.wait(10)
    exited = time.time()
    after = vpc.counters()
    text = daemon_log.read_text()
    assert code == 0, text
    assert exited - stopped < 2.0, "SIGTERM must stop the daemon within a second or so"
    moto_tail = (vpc.workdir / "moto.log").read_text()[-3000:]
    assert "final flush still running" not in text and "CloudWatch" not in text, \
        text + moto_tail
    assert result.lost == 0 and result.completed > 0.95 * QPS * SECONDS

    minute0 = started - started % 60
    read = _read_back(vpc, minute0 - 60, exited + 120, [
        ("ClientQueries", [("InstanceId", instance_id)]),
        ("UpstreamPackets", [("InstanceId", instance_id)]),
        ("BudgetPackets", [("InstanceId", instance_id), ("Interface", "eth0")]),
    ])
    client, upstream, budget = (_totals(p) for p in read["points"])
    passed = after.passed_packets - before.passed_packets
    unique_sent = (result.sent + 1) // 2
    report = (f"dnsperf completed={result.completed} unique={unique_sent} nft passed={passed} "
              f"ClientQueries={client} UpstreamPackets={upstream} "
              f"ran={exited - started:.1f}s sampled_after_ready={stopped - ready:.1f}s "
              f"sigterm_to_exit={exited - stopped:.2f}s")
    log.info("figures: %s", report)  # shown with -o log_cli=true, and on failure

    # Sum of per-second rates = queries counted; SampleCount = seconds sampled.
    assert _near(client.total, result.completed), report
    assert _near(upstream.total, passed), report
    assert _near(upstream.total, unique_sent), report
    # The budget charges what the pacer sent (named forwards to it), read from its stats
    # file a second behind named's counters: the same packets, the limit rule's count.
    assert _near(budget.total, passed), report
    assert client.sample_count == upstream.sample_count == budget.sample_count, report
    assert stopped - ready - SAMPLE_COUNT_SLACK <= client.sample_count <= exited - started, report
    # The peak second is the paced load (dnsperf -Q), not a burst or a double count.
    assert 0.8 * QPS <= client.maximum <= 1.25 * QPS, report
    # One datum per minute sampled, stamped with the minute's start; the minute in progress
    # at SIGTERM is there, so the final flush sent it.
    for ts in client.timestamps:
        assert ts % 60 == 0 and minute0 <= ts <= exited, report
    assert len(set(client.timestamps)) == len(client.timestamps), report
    last_sample_minutes = {t - t % 60 for t in (stopped - 1.5, stopped)}
    assert client.timestamps[-1] in last_sample_minutes, report
    # Only the fake IMDS's instance id was used, never a hostname fallback.
    assert read["listed"]["ClientQueries"] == [json.dumps([["InstanceId", instance_id]])]
    assert read["listed"]["BudgetPackets"] == [
        json.dumps([["InstanceId", instance_id], ["Interface", "eth0"]])]


def test_alarm_create_cli_against_moto(cloud: SimulatedVpc) -> None:
    vpc = cloud
    assert vpc.imds_facts is not None
    instance_id = vpc.imds_facts.instance_id
    cp = vpc.exec_instance(_agent(vpc, "alarm", "create",
                                  args=("--interface", "eth0", "--threshold", "25")), timeout=60)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    name = f"dnscache-{instance_id}-eth0-budget-headroom"
    assert cp.stdout.startswith(f"alarm {name}: BudgetHeadroom < 25%"), cp.stdout
    cp = vpc.exec_instance([*_aws_env(vpc), sys.executable, "-c", DESCRIBE_ALARM, ENDPOINT,
                            name], timeout=60)
    assert cp.returncode == 0, cp.stderr
    (alarm,) = json.loads(cp.stdout)
    assert alarm["Namespace"] == NAMESPACE and alarm["MetricName"] == "BudgetHeadroom"
    assert sorted((d["Name"], d["Value"]) for d in alarm["Dimensions"]) == [
        ("InstanceId", instance_id), ("Interface", "eth0")]
    assert alarm["Threshold"] == 25.0 and alarm["Statistic"] == "Minimum"
    assert alarm["ComparisonOperator"] == "LessThanThreshold"
    assert alarm["Period"] == 60 and alarm["Unit"] == "Percent"
