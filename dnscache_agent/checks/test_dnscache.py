"""The image checks, one test per fact. The facts come from `dnscache-agent verify --json` run
on the target (one implementation, shared with the `verify` command); only the agent's own
service and the allowed forwarders, which depend on the checks' options, are judged here."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from .. import resolv_conf
from .. import verify as facts
from ..planner import PACER_CONFIG
from ..settings import AMAZON_DNS_V6, tomllib
from ..verify import Check
from .options import CheckOptions
from .report import AgentUnavailable, Report, describe


def expect(report: Report | AgentUnavailable, name: str, hint: str = "") -> Check:
    """Fail with verify's message (and `hint`) unless check `name` passed on the target."""
    if isinstance(report, AgentUnavailable):
        pytest.fail(str(report), pytrace=False)
    check = report.get(name)
    if check is None:
        pytest.fail(f"{name}: the agent's verify did not report this check (an older agent, "
                    "or no systemd on the target)\n  fix: install the agent version these "
                    "checks came with", pytrace=False)
    if not check.ok:
        pytest.fail(describe(check, hint), pytrace=False)
    return check


def test_bind_installed(verify_report: Report | AgentUnavailable) -> None:
    expect(verify_report, facts.BIND_INSTALLED)


def test_bind_enabled(verify_report: Report | AgentUnavailable) -> None:
    expect(verify_report, facts.NAMED_ENABLED)


def test_bind_running(verify_report: Report | AgentUnavailable) -> None:
    expect(verify_report, facts.NAMED_RUNNING)


def test_listens_on_loopback_port_53_only_udp_and_tcp(
        verify_report: Report | AgentUnavailable) -> None:
    expect(verify_report, facts.LISTENS_LOOPBACK)


def test_forwards_only_to_the_amazon_resolver(
        verify_report: Report | AgentUnavailable, host: Any,
        dnscache_options: CheckOptions) -> None:
    # verify judges the forwarders against the agent's settings; the image contract is
    # stricter: only the allowed resolvers, whatever the settings say.
    configured = expect(verify_report, facts.FORWARDERS)
    assert configured.path is not None
    text = host.file(configured.path).content_string
    upstreams, where = pacer_upstreams(host, text)
    if upstreams is not None:
        # named forwards to the pacer on loopback; the pacer's upstreams are the contract.
        check = forwarders_allowed(upstreams, dnscache_options.forwarders, where)
    else:
        check = facts.check_forwarders(text, dnscache_options.forwarders, configured.path)
    if not check.ok:
        hint = ("" if dnscache_options.forwarders_given else
                "intentional? allow it with --dnscache-forwarder ADDR "
                "(env DNSCACHE_CHECKS_FORWARDERS)")
        pytest.fail(describe(check, hint), pytrace=False)


def test_config_matches_the_plan(verify_report: Report | AgentUnavailable) -> None:
    if isinstance(verify_report, AgentUnavailable):
        pytest.fail(str(verify_report), pytrace=False)
    drift = [describe(c) for c in verify_report.files if not c.ok]
    if not verify_report.files:
        pytest.fail("verify reported no files: the agent has no plan for this host",
                    pytrace=False)
    if drift:
        pytest.fail("\n".join(drift), pytrace=False)


def test_resolv_conf_lists_the_cache_first_with_fallback(
        verify_report: Report | AgentUnavailable) -> None:
    expect(verify_report, facts.RESOLVER_WIRING)


def test_statistics_channel_answers_on_loopback_only(
        verify_report: Report | AgentUnavailable) -> None:
    expect(verify_report, facts.STATISTICS_CHANNEL)
    expect(verify_report, facts.STATISTICS_LOOPBACK)


def test_name_resolves_through_the_cache_and_repeat_is_a_hit(
        verify_report: Report | AgentUnavailable) -> None:
    hint = ("a build network where the name does not resolve? pass --dnscache-probe-name "
            "NAME (env DNSCACHE_CHECKS_PROBE_NAME)")
    expect(verify_report, facts.CACHE_ANSWERS, hint)
    expect(verify_report, facts.CACHE_HIT, hint)


def test_cache_does_not_answer_off_loopback(verify_report: Report | AgentUnavailable) -> None:
    expect(verify_report, facts.NOT_EXPOSED)


def test_agent_service_active(host: Any, dnscache_options: CheckOptions) -> None:
    if dnscache_options.skip_service:
        pytest.skip("--dnscache-skip-service: the image runs without the agent's service")
    unit = dnscache_options.agent_unit
    service = host.service(unit)
    problems = []
    if not service.is_enabled:
        problems.append("not enabled at boot")
    if not service.is_running:
        problems.append("not active")
    if problems:
        pytest.fail(f"agent service {unit}: {' and '.join(problems)}\n  fix: "
                    f"`dnscache-agent install-service` then `systemctl enable --now {unit}` "
                    f"(see `journalctl -u {unit}`); an image without the daemon passes with "
                    "--dnscache-skip-service", pytrace=False)


def pacer_upstreams(host: Any, named_options: str) -> tuple[tuple[str, ...] | None, str]:
    """The pacer's resolvers when named forwards to it (from the settings file the plan
    renders for it), else None."""
    _, servers = facts.parse_forwarding(named_options)
    if not servers or any(not resolv_conf.is_loopback(s) for s in servers):
        return None, ""
    settings_file = host.file(PACER_CONFIG)
    if not settings_file.exists:
        return (), PACER_CONFIG
    data = tomllib.loads(settings_file.content_string)
    cache = data.get("cache", {})
    out = tuple(cache.get("forwarders", ()))
    if cache.get("ipv6_forwarder"):
        out += (AMAZON_DNS_V6,)
    return out, PACER_CONFIG


def forwarders_allowed(servers: tuple[str, ...], allowed: tuple[str, ...],
                       path: str) -> Check:
    """The pacer sends only to allowed resolvers (the same rule as named's forwarders)."""
    allowed_set = {_normal_ip(a) for a in allowed}
    stray = [s for s in servers if _normal_ip(s) not in allowed_set]
    if not servers:
        return Check(facts.FORWARDERS, False, "the pacer has no resolvers", path, None,
                           "run `dnscache-agent apply`")
    if stray:
        return Check(facts.FORWARDERS, False, f"forwards to {', '.join(stray)}, which is "
                           "not an allowed resolver (named, through the pacer)", path, None,
                           "set cache.forwarders in the agent settings and run "
                           f"`dnscache-agent apply`; allowed here: {', '.join(allowed)}")
    return Check(facts.FORWARDERS, True, f"named forwards to the pacer, which sends only "
                       f"to {', '.join(servers)}", path)


def _normal_ip(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address
