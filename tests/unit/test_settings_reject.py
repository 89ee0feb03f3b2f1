"""Values the settings file used to accept and the agent then tripped over (issue 12): each is
rejected at load time with one line naming the file and the key."""
from __future__ import annotations

from pathlib import Path

import pytest

from dnscache_agent.errors import ConfigError
from dnscache_agent.resolvers import BACKENDS
from dnscache_agent.settings import from_mapping, load, with_overrides


def _error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load(path, environ={})
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"{path}: "), msg
    return msg


@pytest.mark.parametrize(("address", "why"), [
    ("127.0.0.1", "loopback"),
    ("127.0.0.53", "loopback"),
    ("::1", "loopback"),
    ("::ffff:127.0.0.1", "loopback"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("0.1.2.3", "this network"),
    ("224.0.0.251", "multicast"),
    ("ff02::fb", "multicast"),
    ("255.255.255.255", "broadcast"),
    ("240.0.0.1", "reserved"),
])
def test_forwarders_must_be_another_host(tmp_path: Path, address: str, why: str) -> None:
    msg = _error(tmp_path, f'[cache]\nforwarders = ["169.254.169.253", "{address}"]\n')
    assert ": cache.forwarders: " in msg and why in msg


@pytest.mark.parametrize("address", ["169.254.169.253", "fd00:ec2::253", "10.0.0.2",
                                     "2001:db8::53"])
def test_real_resolvers_are_accepted(tmp_path: Path, address: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(f'[cache]\nforwarders = ["{address}"]\n')
    assert load(path, environ={}).cache.forwarders == (address,)


def test_prometheus_port_must_differ_from_statistics_port(tmp_path: Path) -> None:
    msg = _error(tmp_path, "[cache]\nstatistics_port = 9100\n[metrics]\nprometheus_port = 9100\n")
    assert ": metrics.prometheus_port: 9100 is also cache.statistics_port" in msg
    msg = _error(tmp_path, "[metrics]\nprometheus_port = 8053\n")  # the default statistics port
    assert "metrics.prometheus_port" in msg


def test_an_override_cannot_make_ports_collide() -> None:
    settings = from_mapping({"metrics": {"prometheus_port": 9100}}, "agent.toml")
    with pytest.raises(ConfigError, match=r"^environment: metrics.prometheus_port: 9100 is also "
                       r"cache.statistics_port"):
        with_overrides(settings, {"cache": {"statistics_port": 9100}}, origin="environment")


@pytest.mark.parametrize(("key", "port"), [("cache.statistics_port", 53),
                                           ("cache.statistics_port", 953),
                                           ("cache.statistics_port", 1),
                                           ("metrics.prometheus_port", 53),
                                           ("metrics.prometheus_port", 80)])
def test_system_ports_are_refused(tmp_path: Path, key: str, port: int) -> None:
    section, name = key.split(".")
    msg = _error(tmp_path, f"[{section}]\n{name} = {port}\n")
    assert f": {key}: {port} is a system port" in msg


def test_prometheus_port_zero_still_means_off(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("[metrics]\nprometheus_port = 0\n[cache]\nstatistics_port = 1024\n")
    s = load(path, environ={})
    assert (s.metrics.prometheus_port, s.cache.statistics_port) == (0, 1024)


@pytest.mark.parametrize("url", [
    "http://[", "http://[::1", "http://[zz::1]", "https://", "http://:80", "http://a:",
    "http://a:99999", "http://a:0", "http://a..b", "http://-a", "http://a b",
    "http://user@host", "http://host/path", "http://host?x=1", "ftp://host",
    "http://host:80:90", "http://h\u00e9te",
])
def test_unparseable_endpoint_urls_are_refused(tmp_path: Path, url: str) -> None:
    msg = _error(tmp_path, f'[metrics]\nendpoint_url = "{url}"\n')
    assert ": metrics.endpoint_url: " in msg


@pytest.mark.parametrize("url", ["http://127.0.0.1:5000", "https://monitoring.eu-west-1."
                                 "amazonaws.com", "http://[::1]:4566/", "http://localhost"])
def test_endpoint_urls_that_botocore_can_use_are_accepted(tmp_path: Path, url: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(f'[metrics]\nendpoint_url = "{url}"\n')
    assert load(path, environ={}).metrics.endpoint_url == url.rstrip("/")


def test_unknown_backend_is_refused_at_load_naming_file_and_key(tmp_path: Path) -> None:
    msg = _error(tmp_path, '[resolver]\nbackend = "bogus"\n')
    assert ": resolver.backend: unknown backend 'bogus'" in msg
    for name in BACKENDS:
        assert name in msg


@pytest.mark.parametrize("name", ["auto", *BACKENDS])
def test_every_known_backend_loads(tmp_path: Path, name: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(f'[resolver]\nbackend = "{name}"\n')
    assert load(path, environ={}).resolver.backend == name
