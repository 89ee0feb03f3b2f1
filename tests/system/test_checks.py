"""The shipped checks (`pytest --pyargs dnscache_agent.checks`) run from here through
testinfra's podman:// backend against a container booting systemd: they pass on a converged
host, and each broken fact fails its own check with a message naming the fix.

The container has no network. Its "VPC resolver" 169.254.169.253 (and a second resolver
169.254.169.252 for the custom-forwarder case) is an address on its own loopback answered by
molecule/shared/files/fake_vpc.py; eth1 (a veth) gives it a non-loopback address to probe."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rig.containers import SystemdContainer, install_agent

REPO = Path(__file__).resolve().parents[2]
FAKE_VPC = REPO / "molecule" / "shared" / "files" / "fake_vpc.py"
IMDS = "http://127.0.0.1:9"
EXPOSED = "169.254.77.2"


@dataclass(frozen=True)
class Run:
    code: int
    output: str

    def failed(self) -> set[str]:
        return {line.split("::", 1)[1].split("[", 1)[0] for line in self.output.splitlines()
                if line.startswith("FAILED ") and "::" in line}


def sh(box: SystemdContainer, script: str, timeout: float = 120) -> str:
    return box.exec(["sh", "-ec", script], timeout=timeout).stdout


def run_checks(box: SystemdContainer, *args: str) -> Run:
    """The shipped checks from the controller, exactly as an image pipeline runs them."""
    assert box.container_id is not None
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
            "-p", "dnscache_agent.checks.plugin", f"--hosts=podman://{box.container_id}",
            "--pyargs", "dnscache_agent.checks", "-q", "-rfEs", "--tb=line",
            "--dnscache-imds-endpoint", IMDS, *args]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300, check=False)
    return Run(result.returncode, result.stdout + result.stderr)


@pytest.fixture(scope="module")
def converged(system_image: Callable[[str], str], agent_wheelhouse: Path) -> Iterator[
        SystemdContainer]:
    """A base image with the agent applied and its service running."""
    with SystemdContainer(system_image("base")) as box:
        venv = install_agent(box, agent_wheelhouse)
        box.copy_in(FAKE_VPC, "/root/fake_vpc.py")
        sh(box, f"""
            systemctl stop named
            ip addr add 169.254.169.253/32 dev lo
            ip addr add 169.254.169.252/32 dev lo
            ip link add eth1 type veth peer name eth1p
            ip link set eth1 up; ip link set eth1p up
            ip addr add {EXPOSED}/24 dev eth1
            systemd-run --unit fake-vpc python3 /root/fake_vpc.py
            printf 'nameserver 169.254.169.253\\n' > /etc/resolv.conf
            mkdir -p /etc/dnscache-agent
            printf '[imds]\\nendpoint = "{IMDS}"\\n' > /etc/dnscache-agent/agent.toml
            ln -sf {venv}/bin/dnscache-agent /usr/local/bin/dnscache-agent
            dnscache-agent apply
            dnscache-agent install-service
            """, timeout=240)
        yield box


def test_checks_pass_on_a_converged_host(converged: SystemdContainer) -> None:
    run = run_checks(converged)
    assert run.code == 0, run.output
    assert "11 passed" in run.output, run.output


def test_stopped_bind_fails_the_running_checks_naming_the_fix(
        converged: SystemdContainer) -> None:
    # The daemon would repair it: stop the agent service first and tell the checks so.
    sh(converged, "systemctl stop dnscache-agent named")
    try:
        run = run_checks(converged, "--dnscache-skip-service")
    finally:
        sh(converged, "systemctl start named dnscache-agent")
    assert run.code == 1
    assert {"test_bind_running", "test_listens_on_loopback_port_53_only_udp_and_tcp",
            "test_name_resolves_through_the_cache_and_repeat_is_a_hit"} <= run.failed()
    assert "test_bind_installed" not in run.failed()
    assert "named running: not running" in run.output
    assert "fix: `systemctl start named`; see `journalctl -u named`" in run.output
    assert "SKIPPED" in run.output and "--dnscache-skip-service" in run.output


def test_cache_open_to_the_network_fails_listen_and_exposure(
        converged: SystemdContainer) -> None:
    sh(converged, "systemctl stop dnscache-agent; cp /etc/bind/named.conf.options /root/o; "
                  "sed -i -e 's/listen-on port 53 { 127.0.0.1; }/listen-on port 53 { any; }/' "
                  "-e 's/allow-\\(query\\|query-cache\\|recursion\\) { localhost; }/"
                  "allow-\\1 { any; }/' /etc/bind/named.conf.options; "
                  "systemctl restart named; sleep 1")
    try:
        run = run_checks(converged, "--dnscache-skip-service")
    finally:
        sh(converged, "cp /root/o /etc/bind/named.conf.options; systemctl restart named; "
                      "systemctl start dnscache-agent")
    assert {"test_listens_on_loopback_port_53_only_udp_and_tcp",
            "test_cache_does_not_answer_off_loopback", "test_config_matches_the_plan"} \
        == run.failed(), run.output
    assert re.search(rf"named listens on [^\n]*{re.escape(EXPOSED)}:53/udp", run.output), \
        run.output
    assert re.search(rf"the cache answers on [^\n]*{re.escape(EXPOSED)} \(NOERROR\)",
                     run.output), run.output
    assert "fix: restrict listen-on to 127.0.0.1" in run.output


def test_custom_forwarder_passes_only_by_configuration(converged: SystemdContainer) -> None:
    # A second resolver only while this test runs: any other DNS server on a non-loopback
    # address would fail the exposure check, which cannot tell it from the cache.
    sh(converged, "systemctl stop fake-vpc; "
                  "systemd-run --unit fake-vpc-2 python3 /root/fake_vpc.py 169.254.169.252; "
                  "sleep 0.5; cp /etc/dnscache-agent/agent.toml /root/agent.toml; "
                  "printf '[cache]\\nforwarders = [\"169.254.169.252\"]\\n' "
                  ">> /etc/dnscache-agent/agent.toml; "
                  "DNSCACHE_AGENT_IMDS_ENDPOINT=http://127.0.0.1:9 dnscache-agent apply")
    try:
        strict = run_checks(converged)
        allowed = run_checks(converged, "--dnscache-forwarder", "169.254.169.252")
    finally:
        sh(converged, "systemd-run --unit fake-vpc python3 /root/fake_vpc.py; sleep 0.5; "
                      "cp /root/agent.toml /etc/dnscache-agent/agent.toml; "
                      "DNSCACHE_AGENT_IMDS_ENDPOINT=http://127.0.0.1:9 dnscache-agent apply; "
                      "systemctl stop fake-vpc-2")
    assert strict.failed() == {"test_forwards_only_to_the_amazon_resolver"}, strict.output
    assert "forwards to 169.254.169.252, which is not an allowed resolver" in strict.output
    assert "allow it with --dnscache-forwarder ADDR" in strict.output
    assert allowed.code == 0, allowed.output


def test_probe_name_option_reaches_verify_on_the_target(converged: SystemdContainer) -> None:
    run = run_checks(converged, "--dnscache-probe-name", "probe.example.test", "-k", "cache",
                     "-v")
    assert run.code == 0, run.output
    out = converged.exec(["env", "DNSCACHE_AGENT_HEALTH_NAME=probe.example.test",
                          f"DNSCACHE_AGENT_IMDS_ENDPOINT={IMDS}", "dnscache-agent", "verify"],
                         check=False).stdout
    assert "probe.example.test -> 192.0.2.10; the repeat came from the cache" in out, out
