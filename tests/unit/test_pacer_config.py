"""`[pacer]` settings and the process configuration built from them (root-aware paths,
command-line overrides, one-line errors)."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from dnscache_agent.errors import ConfigError
from dnscache_agent.pacer.main import add_arguments, build_config, parse_address
from dnscache_agent.rootfs import Root
from dnscache_agent.settings import Settings, from_mapping, to_toml


def args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(list(argv))


def test_defaults() -> None:
    s = Settings()
    assert s.pacer.enabled and s.pacer.listen == "127.0.0.1" and s.pacer.port == 5354
    assert s.pacer.stats_file == "/run/dnscache-agent-pacer/stats.json"
    assert s.pacer.warm_file == "/var/lib/dnscache-agent-pacer/warm.json"
    assert "[pacer]" in to_toml(s)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("listen", "10.0.0.1", "not a loopback address"),
    ("listen", "0.0.0.0", "not a loopback address"),
    ("port", 53, "out of range 1024..65535"),
    ("port", 70000, "out of range"),
    ("margin_pct", 60, "out of range"),
    ("burst", 0, "out of range"),
    ("warm_file", "relative/warm.json", "absolute"),
    ("warm_file", "/var/lib/../etc/shadow", "without '..'"),
    ("warm_seed", "/etc/seed\n.txt", "absolute"),
    ("warm_max", -1, "out of range"),
    ("enabled", "yes", "true or false"),
])
def test_bad_values_name_the_key(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        from_mapping({"pacer": {key: value}}, "agent.toml")
    assert str(err.value).startswith(f"agent.toml: pacer.{key}: ") and message in str(err.value)


def test_loopback_v6_is_accepted() -> None:
    assert from_mapping({"pacer": {"listen": "::1"}}).pacer.listen == "::1"


def test_build_config_from_settings_under_a_root(tmp_path: Path) -> None:
    s = from_mapping({"budget": {"limit_pps": 1000},
                      "pacer": {"margin_pct": 10, "burst": 4, "warm_seed": "/etc/seed.txt"},
                      "cache": {"forwarders": ["169.254.169.253", "10.0.0.2"]}})
    cfg = build_config(s, Root(tmp_path), args())
    assert cfg.pacing.ceiling == pytest.approx(900) and cfg.pacing.rate == pytest.approx(896)
    assert cfg.upstreams == ("169.254.169.253", "10.0.0.2") and cfg.upstream_port == 53
    assert cfg.stats_file == tmp_path / "run/dnscache-agent-pacer/stats.json"
    assert cfg.warm_file == tmp_path / "var/lib/dnscache-agent-pacer/warm.json"
    assert cfg.warm_seed == tmp_path / "etc/seed.txt"
    assert cfg.warm_via == ("127.0.0.1", 53) and cfg.listen == "127.0.0.1" and cfg.port == 5354
    assert cfg.limits.prefetch_window == s.cache.prefetch_trigger + 1.0


def test_flags_override_settings() -> None:
    cfg = build_config(Settings(), Root(Path("/")), args(
        "--listen", "127.0.0.2", "--port", "5400", "--upstream", "127.0.0.9",
        "--upstream-port", "5300", "--stats-file", "/tmp/s.json", "--warm-via",
        "127.0.0.1:5400", "--run-for", "3"))
    assert (cfg.listen, cfg.port, cfg.upstreams, cfg.upstream_port) == (
        "127.0.0.2", 5400, ("127.0.0.9",), 5300)
    assert cfg.stats_file == Path("/tmp/s.json") and cfg.warm_via == ("127.0.0.1", 5400)
    assert cfg.run_for == 3


def test_no_warm_disables_the_list() -> None:
    cfg = build_config(Settings(), Root(Path("/")), args("--no-warm"))
    assert cfg.warm_file is None and cfg.warm_via is None and cfg.warm_max == 0


@pytest.mark.parametrize("argv", [["--listen", "192.0.2.1"], ["--listen", "nohost"],
                                  ["--upstream", "resolver"], ["--warm-via", "x:53"],
                                  ["--warm-via", "127.0.0.1:0"]])
def test_bad_flags_are_config_errors(argv: list[str]) -> None:
    with pytest.raises(ConfigError):
        build_config(Settings(), Root(Path("/")), args(*argv))


def test_a_burst_that_leaves_no_rate_names_the_keys() -> None:
    s = from_mapping({"budget": {"limit_pps": 40}, "pacer": {"burst": 40}}, "agent.toml")
    with pytest.raises(ConfigError, match=r"agent.toml: pacer.burst / pacer.margin_pct"):
        build_config(s, Root(Path("/")), args())


def test_parse_address_forms() -> None:
    assert parse_address("127.0.0.1", 53) == ("127.0.0.1", 53)
    assert parse_address("127.0.0.1:5300", 53) == ("127.0.0.1", 5300)
    assert parse_address("[::1]:5300", 53) == ("::1", 5300)
    assert parse_address("::1", 53) == ("::1", 53)
