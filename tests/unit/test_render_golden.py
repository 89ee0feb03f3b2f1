"""The rendered bind config per platform and bind version, against golden files.

Regenerate after an intended template change with
    DNSCACHE_UPDATE_GOLDEN=1 pytest tests/unit/test_render_golden.py
and review the diff. tests/integration/test_transaction_failures.py runs the real
named-checkconf over the same golden files.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

import jinja2
import pytest

from dnscache_agent import __version__, planner
from dnscache_agent.bind_version import Version
from dnscache_agent.host_facts import BindFacts, Facts, Resources
from dnscache_agent.imds import Ec2Facts, Ec2Interface
from dnscache_agent.plan_model import Validator
from dnscache_agent.platform import DEBIAN, REDHAT, PlatformProfile, parse_os_release
from dnscache_agent.render import render
from dnscache_agent.resolvers import Detection, HostView
from dnscache_agent.settings import DEFAULT_CONFIG_PATH, Settings, from_mapping

GOLDEN = Path(__file__).resolve().parent.parent / "fixtures" / "golden" / "bind"
UPDATE_GOLDEN = os.environ.get("DNSCACHE_UPDATE_GOLDEN") == "1"
GIB = 1024 ** 3

# name → (os-release, profile, named version, golden file name)
CASES: dict[str, tuple[str, PlatformProfile, Version, str]] = {
    "debian12-9.18": ("ID=debian\nVERSION_ID=12\n", DEBIAN, (9, 18, 49),
                      "named.conf.options"),
    "al2-9.11": ('ID="amzn"\nID_LIKE="centos rhel fedora"\nVERSION_ID="2"\n', REDHAT,
                 (9, 11, 4), "named.conf"),
    "al2023-9.16": ('ID="amzn"\nID_LIKE="fedora"\nVERSION_ID="2023"\n', REDHAT, (9, 16, 48),
                    "named.conf"),
    "rhel9-9.16": ('ID="rhel"\nID_LIKE="fedora"\nVERSION_ID="9.3"\n', REDHAT, (9, 16, 23),
                   "named.conf"),
}
SERVE_STALE = ("stale-answer-enable", "stale-answer-ttl", "max-stale-ttl", "stale-refresh-time",
               "stale-cache-enable", "stale-answer-client-timeout")


def facts_for(case: str, *, cpus: int = 2, memory: int = 4 * GIB,
              ec2: Ec2Facts | None = None) -> Facts:
    os_text, profile, version, _ = CASES[case]
    view = HostView(files={}, links={}, binaries=frozenset(), units=frozenset(), current={})
    return Facts(
        os=parse_os_release(os_text),
        profile=profile,
        bind=BindFacts(True, version, f"BIND {'.'.join(map(str, version))}"),
        resources=Resources(cpus=cpus, memory_bytes=memory),
        ec2=ec2,
        resolver=Detection("static", "fixture", ()),
        view=view,
    )


def settings(**cache: object) -> Settings:
    return replace(from_mapping({"cache": cache} if cache else {}), source=DEFAULT_CONFIG_PATH)


def rendered(case: str, s: Settings | None = None, **kw: object) -> str:
    facts = facts_for(case, **kw)  # type: ignore[arg-type]
    return planner.render_bind_config(facts, s or settings()).content.decode()


def options_of(text: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^\t([a-z][a-z0-9-]+)\b", text, re.M)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    golden = GOLDEN / case / CASES[case][3]
    # The agent's version is in the header; golden files should not churn on every release.
    text = rendered(case).replace(f"dnscache-agent {__version__}:", "dnscache-agent VERSION:")
    if UPDATE_GOLDEN:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert golden.exists(), f"{golden} missing: run with DNSCACHE_UPDATE_GOLDEN=1"
    assert text == golden.read_text()


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_file_change_targets_the_profiles_options_path(case: str) -> None:
    profile = CASES[case][1]
    change = planner.render_bind_config(facts_for(case), settings())
    assert change.path == profile.options_path
    assert change.validator is Validator.NAMED_CHECKCONF
    assert (change.owner, change.group, change.mode) == ("bind", profile.user, 0o644)


@pytest.mark.parametrize("case", sorted(CASES))
def test_caching_only_on_loopback(case: str) -> None:
    text = rendered(case)
    for line in ("listen-on port 53 { 127.0.0.1; };", "listen-on-v6 port 53 { ::1; };",
                 "allow-query { localhost; };", "allow-recursion { localhost; };",
                 "forward only;", "allow-transfer { none; };", "version none;",
                 "inet 127.0.0.1 port 8053 allow { 127.0.0.1; };"):
        assert line in text, line
    assert re.search(r"forwarders \{\n\t\t127\.0\.0\.1 port 5354;\n\t\};", text)
    assert "zone " not in text  # caching only: no zones of our own
    assert "{{" not in text and "{%" not in text


def test_bind_9_11_renders_no_serve_stale_or_min_ttls() -> None:
    text = rendered("al2-9.11", settings(min_cache_ttl=30, min_ncache_ttl=10))
    assert not options_of(text) & set(SERVE_STALE)
    assert "min-cache-ttl" not in text and "min-ncache-ttl" not in text


def test_bind_9_16_48_has_every_serve_stale_option_and_never_client_timeout_0() -> None:
    opts = options_of(rendered("al2023-9.16"))
    assert set(SERVE_STALE) <= opts
    assert "stale-answer-client-timeout 1800;" in rendered("al2023-9.16")
    assert "stale-answer-client-timeout 0" not in rendered("debian12-9.18")


def test_serve_stale_off_renders_none_of_it() -> None:
    assert not options_of(rendered("debian12-9.18", settings(serve_stale=False))) & set(
        SERVE_STALE)


def test_min_ttls_only_when_set_and_supported() -> None:
    assert "min-cache-ttl" not in rendered("debian12-9.18")
    text = rendered("debian12-9.18", settings(min_cache_ttl=60, min_ncache_ttl=15))
    assert "\tmin-cache-ttl 60;\n" in text and "\tmin-ncache-ttl 15;\n" in text


def test_redhat_keeps_the_distribution_zones_include() -> None:
    text = rendered("rhel9-9.16")
    assert text.count("options {") == 1
    assert text.rstrip().endswith('include "/etc/named.rfc1912.zones";')
    assert 'directory "/var/named";' in text
    assert 'directory "/var/cache/bind";' in rendered("debian12-9.18")


def test_forwarders_and_ipv6_in_order() -> None:
    """Without the pacer, named forwards to the resolvers themselves."""
    s = from_mapping({"cache": {"forwarders": ["10.0.0.2", "169.254.169.253"],
                                "ipv6_forwarder": True}, "pacer": {"enabled": False}})
    text = rendered("debian12-9.18", replace(s, source=DEFAULT_CONFIG_PATH))
    block = text.split("forwarders {")[1].split("};")[0]
    assert block.split() == ["10.0.0.2;", "169.254.169.253;", "fd00:ec2::253;"]


def test_named_forwards_only_to_the_pacer_when_it_is_on() -> None:
    """Every cache miss must go through the pacer, which holds the packet budget: a second
    forwarder would let named send straight to the resolver whenever the pacer is slow."""
    text = rendered("debian12-9.18", settings(forwarders=["10.0.0.2", "169.254.169.253"]))
    block = text.split("forwarders {")[1].split("};")[0]
    assert block.split() == ["127.0.0.1", "port", "5354;"]
    assert "forward only;" in text


def test_tuning_follows_the_facts_and_explicit_settings_win() -> None:
    small = rendered("debian12-9.18", cpus=1, memory=512 * 1024 * 1024)
    assert "max-cache-size 32m;" in small and "recursive-clients 1000;" in small
    big = rendered("debian12-9.18", cpus=16, memory=64 * GIB)
    assert "max-cache-size 2048m;" in big and "recursive-clients 10000;" in big
    fixed = rendered("debian12-9.18", settings(max_cache_size_mb=100, recursive_clients=300))
    assert "max-cache-size 100m;" in fixed and "max-clients-per-query 300;" in fixed


def test_ec2_facts_do_not_change_the_bind_config() -> None:
    ec2 = Ec2Facts("i-0123", "t3.micro", "eu-west-1", "eu-west-1a",
                   (Ec2Interface("0e:00:00:00:00:01", 0, "eni-1", "vpc-1", ("10.1.0.0/16",)),))
    assert rendered("debian12-9.18", ec2=ec2) == rendered("debian12-9.18")


def test_header_names_the_settings_file_on_one_line() -> None:
    text = rendered("debian12-9.18", replace(settings(), source="/tmp/x\n};include \"/etc/shadow"))
    header = text.splitlines()[1]
    assert header.startswith("// Change /tmp/x\\n};include")
    assert text.splitlines()[2].startswith("// A caching-only resolver")


def test_strict_undefined_fails_at_render_time() -> None:
    with pytest.raises(jinja2.UndefinedError):
        render("named.conf.options.j2", agent_version="x")
