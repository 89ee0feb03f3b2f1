"""The agent applied for real: a real named started by `dnscache-agent apply` inside the
simulated VPC's instance namespace, forwarding to the authoritative server behind
169.254.169.253, checked with real dig and the statistics channel."""
from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rig import SimulatedVpc

AGENT = [sys.executable, "-m", "dnscache_agent"]
# Inside the instance namespace 169.254.169.254 is the rig's fake IMDS, so the suite-wide
# loopback override is dropped for these runs only.
ENV = ["env", "-u", "DNSCACHE_AGENT_IMDS_ENDPOINT", "PYTHONPATH=" + str(Path(__file__).parents[2])]

SETTINGS = """\
[cache]
health_name = "h1.vpc.test"
"""


def settings_path(vpc: SimulatedVpc) -> Path:
    return vpc.workdir / "agent.toml"


def agent(vpc: SimulatedVpc, *args: str, timeout: float = 90.0) -> tuple[int, str, str]:
    cp = vpc.exec_instance([*ENV, *AGENT, *args[:1], "--config", str(settings_path(vpc)),
                            *args[1:]], timeout=timeout)
    return cp.returncode, cp.stdout, cp.stderr


def write_settings(vpc: SimulatedVpc, text: str) -> None:
    """Settings in the rig's work directory, with the agent's state kept there too, so the
    host's own /var/lib/dnscache-agent is never touched."""
    settings_path(vpc).write_text(vpc.agent_toml(text))


def dig_short(vpc: SimulatedVpc, server: str, *args: str) -> list[str]:
    cp = vpc.dig("+short", *args, server=server)
    assert cp.returncode == 0, cp.stderr
    return sorted(cp.stdout.split("\n"))


def dig_status(vpc: SimulatedVpc, server: str, *args: str) -> str:
    cp = vpc.dig("+noall", "+comments", *args, server=server)
    for line in cp.stdout.splitlines():
        if "status:" in line:
            return line.split("status:")[1].split(",")[0].strip()
    return f"no answer: {cp.stdout.strip()[-200:]}"


def stats_json(vpc: SimulatedVpc) -> dict:  # type: ignore[type-arg]
    code = ("import urllib.request,sys;"
            "sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:8053/json/v1',"
            "timeout=5).read().decode())")
    cp = vpc.exec_instance([sys.executable, "-c", code], timeout=20)
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def applied(vpc: SimulatedVpc) -> Iterator[SimulatedVpc]:
    """The VPC with the agent applied once; rolled back at the end of the module."""
    write_settings(vpc, SETTINGS)
    code, out, err = agent(vpc, "apply", "-v")
    assert code == 0, f"apply failed: {out}{err}"
    yield vpc
    agent(vpc, "rollback")


def test_apply_wires_resolv_conf_with_fallback(applied: SimulatedVpc) -> None:
    lines = (applied.instance_etc / "resolv.conf").read_text().splitlines()
    servers = [ln.split()[1] for ln in lines if ln.startswith("nameserver")]
    assert servers == ["127.0.0.1", "169.254.169.253"]
    assert "search ec2.internal" in lines
    assert not any("rotate" in ln for ln in lines)


def test_second_apply_changes_nothing(applied: SimulatedVpc) -> None:
    code, out, err = agent(applied, "apply")
    assert code == 0, err
    assert out.startswith("nothing to do"), out
    code, out, _ = agent(applied, "plan")
    assert code == 0 and "nothing to do" in out


def test_verify_passes_with_live_probes(applied: SimulatedVpc) -> None:
    code, out, err = agent(applied, "verify", "--json")
    assert code == 0, out + err
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    for name in ("named running", "cache answers", "statistics channel", "resolver wiring"):
        assert checks[name]["ok"], checks[name]


def test_facts_come_from_imds_inside_the_namespace(applied: SimulatedVpc) -> None:
    code, out, err = agent(applied, "facts", "--json")
    assert code == 0, err
    facts = json.loads(out)
    assert applied.imds_facts is not None
    assert facts["ec2"]["instance_id"] == applied.imds_facts.instance_id


@pytest.mark.parametrize("query", [
    ("h1.vpc.test", "A"),
    ("h10.vpc.test", "AAAA"),
    ("cname1.vpc.test", "A"),
    ("vpc.test", "MX"),
    ("txt.vpc.test", "TXT"),
    ("_sip._tcp.vpc.test", "SRV"),
    ("bigtxt.vpc.test", "TXT"),
])
def test_cache_answers_equal_upstream(applied: SimulatedVpc, query: tuple[str, str]) -> None:
    name, rtype = query
    upstream = dig_short(applied, "169.254.169.253", name, rtype)
    cached = dig_short(applied, "127.0.0.1", name, rtype)
    assert upstream != [""], f"upstream has no {rtype} for {name}"
    assert cached == upstream


def test_negative_answers_equal_upstream(applied: SimulatedVpc) -> None:
    assert dig_status(applied, "127.0.0.1", "no-such-name.vpc.test", "A") == "NXDOMAIN"
    # NODATA: the name exists, the type does not.
    assert dig_status(applied, "127.0.0.1", "nodata.vpc.test", "AAAA") == "NOERROR"
    assert dig_short(applied, "127.0.0.1", "nodata.vpc.test", "AAAA") == [""]


def test_large_answer_is_truncated_over_udp_and_complete_over_tcp(applied: SimulatedVpc) -> None:
    udp = applied.dig("+notcp", "+ignore", "bigtxt.vpc.test", "TXT", server="127.0.0.1")
    assert " tc" in udp.stdout.split("flags:")[1].split(";")[0]
    tcp = dig_short(applied, "127.0.0.1", "+tcp", "bigtxt.vpc.test", "TXT")
    assert tcp == dig_short(applied, "169.254.169.253", "+tcp", "bigtxt.vpc.test", "TXT")


def test_repeated_query_is_a_cache_hit(applied: SimulatedVpc) -> None:
    def cache_hits() -> tuple[int, int]:
        stats = stats_json(applied)
        cache = stats["views"]["_default"]["resolver"]["cachestats"]
        return cache.get("QueryHits", 0), cache.get("QueryMisses", 0)

    dig_short(applied, "127.0.0.1", "h77.vpc.test", "A")
    hits0, misses0 = cache_hits()
    dig_short(applied, "127.0.0.1", "h77.vpc.test", "A")
    hits1, misses1 = cache_hits()
    assert (hits1 - hits0, misses1 - misses0) == (1, 0)


def test_cache_ignores_queries_to_non_loopback_addresses(applied: SimulatedVpc) -> None:
    instance_ip = applied.addresses.instance_ip
    # From the VPC side, to the instance's own address, and from the instance itself.
    cp = applied.exec_vpc(["dig", f"@{instance_ip}", "+time=1", "+tries=1", "h1.vpc.test"])
    assert "status: NOERROR" not in cp.stdout
    assert cp.returncode != 0
    cp = applied.exec_instance(["dig", f"@{instance_ip}", "+time=1", "+tries=1",
                                "h1.vpc.test"])
    assert "status: NOERROR" not in cp.stdout


def test_broken_settings_are_rolled_back_and_dns_keeps_working(applied: SimulatedVpc) -> None:
    options = applied.instance_etc / "bind" / "named.conf.options"
    before = options.read_bytes()
    # Valid syntax, but a forwarder nothing answers at: named reloads, the health query fails.
    write_settings(applied, SETTINGS + 'forwarders = ["169.254.100.77"]\n')
    try:
        code, out, err = agent(applied, "apply", timeout=120)
        assert code != 0
        assert "health check" in err and "rolled back" in err, err
        assert options.read_bytes() == before
        assert dig_short(applied, "127.0.0.1", "h2.vpc.test", "A") != [""]
    finally:
        write_settings(applied, SETTINGS)


def test_operator_breakage_is_caught_by_named_checkconf(applied: SimulatedVpc) -> None:
    local = applied.instance_etc / "bind" / "named.conf.local"
    options = applied.instance_etc / "bind" / "named.conf.options"
    saved_local, saved_options = local.read_bytes(), options.read_bytes()
    local.write_text("zone broken {\n")
    # Force a pending change, so apply has something to validate.
    options.write_text(saved_options.decode().replace("prefetch 2 9", "prefetch 3 9"))
    try:
        code, _, err = agent(applied, "apply")
        assert code == 5, err
        assert "named-checkconf" in err and len(err.strip().splitlines()) == 1
        assert "prefetch 3 9" in options.read_text(), "a rejected apply must touch nothing"
    finally:
        local.write_bytes(saved_local)
        options.write_bytes(saved_options)
