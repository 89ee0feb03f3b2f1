"""agent.toml → Settings: defaults, every key checked, and each bad input rejected with one line
that names the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnscache_agent import settings as settings_mod
from dnscache_agent.errors import ConfigError
from dnscache_agent.settings import (
    AMAZON_DNS_V4,
    AMAZON_DNS_V6,
    SCHEMA,
    Settings,
    from_mapping,
    load,
    to_toml,
    with_overrides,
)


def write(tmp_path: Path, text: str | bytes) -> Path:
    p = tmp_path / "agent.toml"
    if isinstance(text, str):
        p.write_text(text)
    else:
        p.write_bytes(text)
    return p


def config_error(tmp_path: Path, text: str | bytes) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load(path, environ={})
    msg = str(exc.value)
    assert "\n" not in msg, msg
    assert msg.startswith(f"{path}: "), msg
    return msg


def test_defaults_forward_only_to_the_amazon_resolver() -> None:
    s = Settings()
    assert s.all_forwarders == (AMAZON_DNS_V4,)
    assert s.cache.max_cache_size_mb is None  # derived from facts
    assert s.resolver.fallback_servers == 2


def test_missing_file_gives_defaults_unless_required(tmp_path: Path) -> None:
    s = load(tmp_path / "absent.toml", environ={})
    assert s.cache == Settings().cache
    with pytest.raises(ConfigError, match="absent.toml: no such settings file"):
        load(tmp_path / "absent.toml", required=True, environ={})


def test_valid_file_is_parsed_and_normalised(tmp_path: Path) -> None:
    path = write(tmp_path, """
[cache]
forwarders = ["169.254.169.253", "FD00:EC2:0:0::253"]
ipv6_forwarder = true
max_cache_size_mb = "auto"
recursive_clients = 5000
min_cache_ttl = 90
health_name = "example.com."

[resolver]
backend = "static"
fallback_servers = 1

[agent]
state_dir = "/srv/dnscache"
""")
    s = load(path, environ={})
    assert s.source == str(path)
    assert s.cache.forwarders == ("169.254.169.253", "fd00:ec2::253")
    # The IPv6 Amazon resolver is not duplicated when listed and enabled.
    assert s.all_forwarders == ("169.254.169.253", AMAZON_DNS_V6)
    assert s.cache.max_cache_size_mb is None
    assert s.cache.recursive_clients == 5000
    assert s.resolver.backend == "static"
    assert s.agent.state_dir == "/srv/dnscache"


def test_ipv6_forwarder_is_appended() -> None:
    s = from_mapping({"cache": {"ipv6_forwarder": True}})
    assert s.all_forwarders == (AMAZON_DNS_V4, AMAZON_DNS_V6)


@pytest.mark.parametrize(("text", "names"), [
    ("[cache]\nforwarder = ['1.2.3.4']\n", "unknown key cache.forwarder"),
    ("[caches]\nx = 1\n", "unknown section [caches]"),
    ("cache = 3\n", "cache must be a table"),
    ("[cache]\n\"evil\\nkey\" = 1\n", "unknown key cache.'evil\\nkey'"),
    ("[\"a\\nb\"]\nx = 1\n", "unknown section ['a\\nb']"),
])
def test_unknown_keys_and_sections(tmp_path: Path, text: str, names: str) -> None:
    assert names in config_error(tmp_path, text)


@pytest.mark.parametrize(("key", "value", "why"), [
    ("cache.forwarders", '["1.2.3.4; }; include \\"/etc/shadow"]', "is not an IP address"),
    ("cache.forwarders", '["300.1.1.1"]', "is not an IP address"),
    ("cache.forwarders", '["1.2.3.4/32"]', "is not an IP address"),
    ("cache.forwarders", "[]", "non-empty list"),
    ("cache.forwarders", '"1.2.3.4"', "non-empty list"),
    ("cache.forwarders", '["1.1.1.1","1.1.1.2","1.1.1.3","1.1.1.4","1.1.1.5","1.1.1.6",'
                         '"1.1.1.7","1.1.1.8","1.1.1.9"]', "at most 8"),
    # Scoped IPv6 addresses carry free text that would reach named.conf verbatim.
    ("cache.forwarders", '["fe80::1%a;b"]', "scoped"),
    ("cache.forwarders", '["::1%x\\ny"]', "scoped"),
    ("cache.max_cache_size_mb", "7", "out of range 8..262144"),
    ("cache.max_cache_size_mb", '"big"', 'or "auto"'),
    ("cache.recursive_clients", "100001", "out of range"),
    ("cache.min_cache_ttl", "91", "out of range 0..90"),
    ("cache.min_ncache_ttl", "-1", "out of range 0..90"),
    ("cache.statistics_port", "0", "out of range 1..65535"),
    ("cache.statistics_port", "65536", "out of range"),
    ("cache.statistics_port", "true", "expected an integer"),
    ("cache.statistics_port", "8053.0", "expected an integer"),
    ("cache.serve_stale", '"yes"', "expected true or false"),
    ("cache.health_name", '"amazonaws.com\\"; }; include \\"/etc/shadow"', "domain name"),
    ("cache.health_name", '"a;b.com"', "domain name"),
    ("cache.health_name", '"amazonaws.com\\n"', "domain name"),
    ("cache.health_name", '"amazon aws.com"', "domain name"),
    ("cache.health_name", '""', "domain name"),
    ("cache.health_name", '"' + "a" * 64 + '.com"', "domain name"),
    ("resolver.backend", '"static\\n"', "backend name"),
    ("resolver.fallback_servers", "3", "out of range 0..2"),
    ("resolver.timeout", "0", "out of range 1..30"),
    ("imds.endpoint", '"http://169.254.169.254/latest\\n"', "URL"),
    ("imds.endpoint", '"file:///etc/passwd"', "URL"),
    ("imds.timeout", "nan", "out of range"),
    ("imds.timeout", "inf", "out of range"),
    ("metrics.namespace", '"AWS/EC2"', "reserved"),
    ("metrics.region", '"eu-west-1\\n"', "AWS region"),
    ("agent.state_dir", '""', "absolute directory"),
    ("agent.state_dir", '"/"', "absolute directory"),
    ("agent.state_dir", '"/var/lib/../../../etc"', "without '..'"),
    ("agent.state_dir", '"relative/dir"', "not an absolute path"),
])
def test_bad_values_name_file_and_key(tmp_path: Path, key: str, value: str, why: str) -> None:
    section, name = key.split(".")
    msg = config_error(tmp_path, f"[{section}]\n{name} = {value}\n")
    assert f": {key}: " in msg
    assert why in msg


def test_not_toml_and_not_utf8(tmp_path: Path) -> None:
    assert "not valid TOML" in config_error(tmp_path, "[cache\n")
    assert "not valid UTF-8" in config_error(tmp_path, b'[cache]\nhealth_name = "\xff"\n')


def test_unreadable_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path, environ={})  # a directory


def test_environment_override_is_checked() -> None:
    env = {"DNSCACHE_AGENT_IMDS_ENDPOINT": "http://127.0.0.1:9"}
    assert load(None, environ=env).imds.endpoint == "http://127.0.0.1:9"
    with pytest.raises(ConfigError, match=r"^environment: imds\.endpoint: "):
        load(None, environ={"DNSCACHE_AGENT_IMDS_ENDPOINT": "http://x\n"})


def test_overrides_are_checked_like_the_file() -> None:
    s = with_overrides(Settings(), {"resolver": {"backend": "resolvconf"}}, "command line")
    assert s.resolver.backend == "resolvconf"
    with pytest.raises(ConfigError, match=r"^command line: resolver\.backend: "):
        with_overrides(Settings(), {"resolver": {"backend": "Bad Name"}}, "command line")


def test_to_toml_round_trips(tmp_path: Path) -> None:
    s = from_mapping({"cache": {"forwarders": ["10.0.0.2"], "recursive_clients": 2000},
                      "metrics": {"cloudwatch": True}})
    again = load(write(tmp_path, to_toml(s)), environ={})
    for section in SCHEMA:
        assert getattr(again, section) == getattr(s, section), section


def test_every_schema_key_is_a_field_with_a_valid_default() -> None:
    """A key in SCHEMA without a dataclass field (or a default its own check rejects) would
    only fail on the host that sets it."""
    for section, (cls, schema) in SCHEMA.items():
        defaults = getattr(Settings(), section)
        assert isinstance(defaults, cls)
        for key, check in schema.items():
            value = getattr(defaults, key)
            if isinstance(value, tuple):
                value = list(value)
            if value is None:
                value = "auto"
            check(value)
    assert settings_mod.DEFAULT_CONFIG_PATH == "/etc/dnscache-agent/agent.toml"
