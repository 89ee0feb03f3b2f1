"""`cli.main` on staged roots: exit codes, one-line errors naming the file and key, and nothing
changed when the settings are bad. No process runs: the staged roots have no named binary, so
neither `named -v` nor named-checkconf is reached (an apply with named is in
tests/integration/test_transaction_failures.py)."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from test_transaction_staged import FakeRunner, snapshot

from dnscache_agent import cli
from dnscache_agent.app import Agent, Options
from dnscache_agent.checkpoint import StateStore
from dnscache_agent.errors import ApplyError, ConfigError, FactsError
from dnscache_agent.rootfs import Root
from dnscache_agent.transaction import Transaction

ROOTS = Path(__file__).resolve().parent.parent / "fixtures" / "roots"
FIXTURE = "dhclient-debian12"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    dst = tmp_path / "root"
    shutil.copytree(ROOTS / FIXTURE, dst, symlinks=True)
    (dst / "var/lib").mkdir(parents=True)  # the state directory's parent, as on any host
    return dst


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def apply_with_fakes(root: Path) -> None:
    """What `apply` does, with named-checkconf answered by a fake and bind taken as present."""
    runner = FakeRunner()
    agent = Agent(Options(root=str(root)), runner=runner)
    plan = replace(agent.plan(), bind_installed=True)
    Transaction(agent.root, agent.facts.profile, runner=runner, service=agent.service,
                health_check=agent.health,
                store=StateStore(agent.root, agent.settings.agent.state_dir)).apply(plan)


def test_plan_exit_codes(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plan", "--root", str(root))
    assert code == cli.EXIT_PENDING == 2
    assert "# bind9 is not installed: apply needs --install-packages" in out
    assert "+++ b/etc/resolv.conf" in out and "+nameserver 127.0.0.1" in out
    assert "+++ b/etc/bind/named.conf.options" in out
    before = snapshot(Root(root))
    apply_with_fakes(root)
    assert snapshot(Root(root)) != before
    code, out, _ = run(capsys, "plan", "--root", str(root))
    assert (code, out.splitlines()[-1]) == (0, "nothing to do: the host matches the plan")


def test_rollback_restores_the_staged_root(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(Root(root))
    code, out, _ = run(capsys, "rollback", "--root", str(root))
    assert (code, out.strip()) == (0, "nothing to roll back: the agent has not changed this host")
    apply_with_fakes(root)
    code, out, _ = run(capsys, "rollback", "--root", str(root))
    assert code == 0 and "restored /etc/resolv.conf" in out
    assert snapshot(Root(root)) == before


@pytest.mark.parametrize("damage", ["invalid", "gone"])
def test_rollback_needs_only_the_checkpoint(root: Path, capsys: pytest.CaptureFixture[str],
                                            caplog: pytest.LogCaptureFixture,
                                            damage: str) -> None:
    """agent.toml broken or removed after apply: rollback still restores everything (the
    checkpoint holds all it needs), and says which settings it could not read."""
    config = root / "etc/dnscache-agent/agent.toml"
    config.parent.mkdir(parents=True)
    config.write_text("[cache]\nmax_ncache_ttl = 120\n")
    before = snapshot(Root(root))
    apply_with_fakes(root)
    if damage == "invalid":
        config.write_text("[cache]\nforwarders = [\"1.2.3\"]\n")
    else:
        config.unlink()
    code, out, err = run(capsys, "rollback", "--root", str(root))
    assert code == 0, err
    assert "restored /etc/resolv.conf" in out and "rolled back to the pre-agent state" in out
    if damage == "invalid":
        assert [r.getMessage().split(";")[0] for r in caplog.records] == [
            f"{config}: cache.forwarders: '1.2.3' is not an IP address"]
    config.write_text("[cache]\nmax_ncache_ttl = 120\n")  # the file is the user's
    assert snapshot(Root(root)) == before


def test_apply_without_bind_fails_cleanly(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(Root(root), include_state=True)
    code, out, err = run(capsys, "apply", "--root", str(root))
    assert code == ApplyError.exit_code
    assert err.count("\n") == 1
    assert "bind9 is not installed; rerun with --install-packages" in err
    assert snapshot(Root(root), include_state=True) == before


def test_facts_json_on_a_staged_root(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "facts", "--json", "--root", str(root))
    data = json.loads(out)
    assert code == 0
    assert (data["platform"], data["bind"]["installed"], data["ec2"]) == ("debian", False, None)
    code, out, _ = run(capsys, "facts", "--root", str(root))
    assert code == 0 and "not on EC2" in out


def test_verify_reports_a_staged_root_that_does_not_match(
        root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "verify", "--json", "--root", str(root))
    report = json.loads(out)
    assert code == 1 and report["ok"] is False


def test_missing_os_release(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (root / "etc/os-release").unlink()
    before = snapshot(Root(root), include_state=True)
    code, _, err = run(capsys, "plan", "--root", str(root))
    assert code == FactsError.exit_code
    assert err == f"dnscache-agent: error: {root}/etc/os-release: missing; cannot tell which " \
                  "platform this is\n"
    assert snapshot(Root(root), include_state=True) == before


BAD_SETTINGS = [
    ("[cache]\nforwarder = [\"1.2.3.4\"]\n", "cache.forwarder"),
    ("[cache]\nforwarders = [\"1.2.3.4; }; include \\\"/etc/shadow\"]\n", "cache.forwarders"),
    ("[cache]\nforwarders = [\"1.2.3\"]\n", "cache.forwarders"),
    ("[cache]\nforwarders = [\"fe80::1%eth0;};include\"]\n", "cache.forwarders"),
    ("[cache]\nstatistics_port = 70000\n", "cache.statistics_port"),
    ("[cache]\nmin_cache_ttl = 3600\n", "cache.min_cache_ttl"),
    ("[cache]\nhealth_name = \"a\\\"b.com\"\n", "cache.health_name"),
    ("[cache]\nhealth_name = \"a.com;b\"\n", "cache.health_name"),
    ("[cache]\nhealth_name = \"a.com\\n\"\n", "cache.health_name"),
    ("[resolver]\nfallback_servers = -1\n", "resolver.fallback_servers"),
    ("[agent]\nstate_dir = \"\"\n", "agent.state_dir"),
    ("[cache\n", "not valid TOML"),
]


@pytest.mark.parametrize(("text", "key"), BAD_SETTINGS)
@pytest.mark.parametrize("where", ["--config", "in-root"])
@pytest.mark.parametrize("command", ["plan", "apply"])
def test_bad_settings(root: Path, capsys: pytest.CaptureFixture[str], text: str, key: str,
                      where: str, command: str) -> None:
    if where == "--config":
        config = root.parent / "agent.toml"
        args = ["--config", str(config)]
    else:
        config = root / "etc/dnscache-agent/agent.toml"
        config.parent.mkdir(parents=True)
        args = []
    config.write_text(text)
    before = snapshot(Root(root), include_state=True)
    code, out, err = run(capsys, command, "--root", str(root), *args)
    assert code == ConfigError.exit_code
    assert out == ""
    assert err.count("\n") == 1, err
    assert err.startswith(f"dnscache-agent: error: {config}: ")
    assert key in err
    assert snapshot(Root(root), include_state=True) == before


def test_unknown_backend_on_the_command_line(root: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "plan", "--root", str(root), "--resolver-backend", "bogus")
    assert code == ConfigError.exit_code and "unknown backend 'bogus'" in err
    code, _, err = run(capsys, "plan", "--root", str(root), "--resolver-backend", "Bad;Name")
    assert code == ConfigError.exit_code and "command line: resolver.backend" in err


def test_missing_config_given_explicitly(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "plan", "--root", str(root), "--config", str(root / "nope.toml"))
    assert code == ConfigError.exit_code and "nope.toml: no such settings file" in err


def test_staged_root_plans_name_the_host_settings_path(root: Path) -> None:
    """An image built with --root must render what the booted instance will: the header
    names /etc/dnscache-agent/agent.toml, not <root>/etc/..."""
    agent = Agent(Options(root=str(root)), runner=FakeRunner())
    options = next(f for f in agent.plan().files if f.path == "/etc/bind/named.conf.options")
    assert b"// Change /etc/dnscache-agent/agent.toml and run" in options.content
    assert str(root).encode() not in options.content


def test_imds_env_points_at_loopback() -> None:
    assert os.environ["DNSCACHE_AGENT_IMDS_ENDPOINT"] == "http://127.0.0.1:9"




def test_alarm_options_are_parsed_once_never_silently_dropped() -> None:
    """`alarm --config F create` used to parse and then drop F (the `create` subparser reset
    it to its default); options now belong to `create` alone, and misplaced ones are an
    error instead of a silently ignored setting."""
    from dnscache_agent.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["alarm", "create", "--config", "/x/agent.toml",
                              "--root", "/r", "--threshold", "25"])
    assert (args.config, args.root, args.threshold) == ("/x/agent.toml", "/r", 25.0)
    with pytest.raises(SystemExit):
        parser.parse_args(["alarm", "--config", "/x/agent.toml", "create"])
