"""The image-check facts in verify.py (forwarders, listeners, cache hit, exposure) and the
shipped checks' option and report handling: pure functions on values."""

from __future__ import annotations

import json

import pytest

from dnscache_agent import verify
from dnscache_agent.checks.options import (
    CheckOptions,
    agent_command_line,
    locate_command,
    resolve,
)
from dnscache_agent.checks.report import AgentUnavailable, describe, parse_report
from dnscache_agent.verify import Answer, Check, Listener

OPTIONS = """options {
	// forwarders { 8.8.8.8; };  a comment must not count
	forward only;
	forwarders {
		169.254.169.253;
	};
};
"""


def test_forwarders_only_to_the_amazon_resolver_pass() -> None:
    check = verify.check_forwarders(OPTIONS, verify.AMAZON_RESOLVERS, "/etc/bind/o")
    assert check.ok and check.detail == "forward only to 169.254.169.253"
    assert check.line == 4  # the block, not the commented-out line
    assert verify.parse_forwarding(OPTIONS) == ("only", ("169.254.169.253",))


def test_forwarder_outside_the_allowed_set_fails_naming_it() -> None:
    text = OPTIONS.replace("169.254.169.253;", "169.254.169.253; 10.9.9.9 port 5353;")
    check = verify.check_forwarders(text, verify.AMAZON_RESOLVERS, "/etc/bind/o")
    assert not check.ok and "10.9.9.9" in check.detail and "cache.forwarders" in check.fix
    # An image that forwards there on purpose passes by configuration.
    allowed = (*verify.AMAZON_RESOLVERS, "10.9.9.9")
    assert verify.check_forwarders(text, allowed, "/etc/bind/o").ok


def test_forward_first_or_no_forwarders_fail() -> None:
    first = verify.check_forwarders(OPTIONS.replace("forward only", "forward first"),
                                    verify.AMAZON_RESOLVERS, "o")
    assert not first.ok and "forward first" in first.detail
    none = verify.check_forwarders("options { recursion yes; };", verify.AMAZON_RESOLVERS, "o")
    assert not none.ok and "root servers" in none.detail
    missing = verify.check_forwarders(None, verify.AMAZON_RESOLVERS, "o")
    assert not missing.ok and missing.fix


def _sockets(*extra: Listener) -> list[Listener]:
    return [Listener("udp", "127.0.0.1", 53, "named"), Listener("tcp", "127.0.0.1", 53, "named"),
            Listener("tcp", "::1", 53, "named"), Listener("tcp", "127.0.0.1", 8053, "named"),
            Listener("udp", "169.254.169.253", 53, "python3"), *extra]


def test_loopback_listeners_pass_and_other_processes_are_ignored() -> None:
    check = verify.check_listeners(_sockets(), process="named", port=53, name="n")
    assert check.ok and "127.0.0.1:53/udp" in check.detail and "[::1]:53/tcp" in check.detail


@pytest.mark.parametrize("address", ["0.0.0.0", "192.0.2.7", "::"])
def test_a_non_loopback_listener_fails(address: str) -> None:
    check = verify.check_listeners(_sockets(Listener("udp", address, 53, "named")),
                                   process="named", port=53, name="n")
    assert not check.ok and address in check.detail and "listen-on" in check.fix


def test_a_missing_protocol_fails() -> None:
    sockets = [s for s in _sockets() if not (s.proto == "tcp" and s.port == 53)]
    check = verify.check_listeners(sockets, process="named", port=53, name="n")
    assert not check.ok and check.detail.endswith("127.0.0.1:53/tcp")


def test_a_socket_with_an_invisible_owner_counts_as_named() -> None:
    # Without CAP_SYS_PTRACE (a container) the owner of bind's sockets is not visible.
    sockets = [Listener("udp", "127.0.0.1", 53, ""), Listener("tcp", "127.0.0.1", 53, "")]
    assert verify.check_listeners(sockets, process="named", port=53, name="n").ok
    exposed = verify.check_listeners([*sockets, Listener("tcp", "0.0.0.0", 53, "")],
                                     process="named", port=53, name="n")
    assert not exposed.ok


def test_stats_port_needs_tcp_only() -> None:
    assert verify.check_listeners(_sockets(), process="named", port=8053, name="s",
                                  need=("tcp",)).ok


HIT = Answer("NOERROR", ("192.0.2.10",), "NOERROR from 127.0.0.1")


def test_cache_hit_when_the_non_recursive_repeat_answers_the_same() -> None:
    assert verify.check_cache_hit("example.test", HIT, HIT).ok
    nx = Answer("NXDOMAIN", (), "NXDOMAIN")
    assert verify.check_cache_hit("example.test", nx, nx).ok


def test_no_cache_hit_when_the_repeat_is_a_referral_or_nothing() -> None:
    referral = Answer("NOERROR", (), "NOERROR from 127.0.0.1")
    miss = verify.check_cache_hit("example.test", HIT, referral)
    assert not miss.ok and "not served from cache" in miss.detail
    assert not verify.check_cache_hit("example.test", referral, referral).ok


def test_no_cache_hit_when_the_name_does_not_resolve() -> None:
    dead = Answer(None, (), "no answer from 127.0.0.1 in 2s")
    check = verify.check_cache_hit("example.test", dead, dead)
    assert not check.ok and "does not resolve" in check.detail and "dig @127.0.0.1" in check.fix


def test_exposure() -> None:
    silent = Answer(None, (), "refused")
    assert verify.check_not_exposed([]).ok
    assert verify.check_not_exposed([("192.0.2.7", silent)]).ok
    assert verify.check_not_exposed([("192.0.2.7", Answer("REFUSED", (), "REFUSED"))]).ok
    answered = verify.check_not_exposed([("192.0.2.7", HIT)])
    assert not answered.ok and "192.0.2.7 (NOERROR)" in answered.detail


def test_options_from_flags_then_environment() -> None:
    env = {"DNSCACHE_CHECKS_FORWARDERS": "10.0.0.2, 10.0.0.3",
           "DNSCACHE_CHECKS_SKIP_SERVICE": "yes", "DNSCACHE_CHECKS_PROBE_NAME": "env.test"}
    opts = resolve({"dnscache_probe_name": "flag.test"}, env)
    assert opts.forwarders == ("10.0.0.2", "10.0.0.3") and opts.forwarders_given
    assert opts.skip_service and opts.probe_name == "flag.test"
    assert resolve({"dnscache_forwarder": ["10.1.1.1"]}, env).forwarders == ("10.1.1.1",)
    default = resolve({}, {})
    assert default == CheckOptions() and not default.forwarders_given


def test_agent_command_line_passes_the_options_quoted() -> None:
    opts = CheckOptions(probe_name="a b.test", imds_endpoint="http://127.0.0.1:9",
                        config="/etc/x.toml")
    line = agent_command_line("/opt/venv/bin/dnscache-agent", ["verify", "--json"], opts)
    assert line == ("env DNSCACHE_AGENT_HEALTH_NAME='a b.test' /opt/venv/bin/dnscache-agent "
                    "verify --json --config /etc/x.toml --imds-endpoint http://127.0.0.1:9")
    assert "command -v dnscache-agent" in locate_command(CheckOptions())
    assert locate_command(CheckOptions(agent_command="/x y")) == "command -v '/x y'"


def test_report_round_trip_from_verify_json() -> None:
    report = verify.VerifyReport((Check("named running", False, "not running", fix="start"),
                                  Check("file /etc/a", True, "matches", "/etc/a")))
    parsed = parse_report(json.dumps(report.to_dict()))
    assert parsed.get("named running") == report.checks[0]
    assert parsed.files == (report.checks[1],)
    assert describe(report.checks[0], "hint") == "named running: not running\n  fix: start\n  hint"


def test_unparseable_report_names_the_exit_status_and_stderr() -> None:
    with pytest.raises(AgentUnavailable, match="exited 2 .*no such settings file"):
        parse_report("", "dnscache-agent: error: no such settings file", 2)
