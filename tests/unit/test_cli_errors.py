"""The CLI's one error boundary: any exception a command raises reaches the user as one line,
`dnscache-agent: error: <what failed>: <reason> (run with -vv for the traceback)`, with the
documented exit code (docs/reliability.md); the traceback is logged only at -vv. Failures are
injected through `cli.main`'s `agent_factory` and the Agent's runner: no monkeypatching."""
from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from dnscache_agent import cli
from dnscache_agent.app import Agent, Options
from dnscache_agent.commands import Result, Runner
from dnscache_agent.errors import ConfigError, InternalError

ROOTS = Path(__file__).resolve().parent.parent / "fixtures" / "roots"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    dst = tmp_path / "root"
    shutil.copytree(ROOTS / "dhclient-debian12", dst, symlinks=True)
    (dst / "var/lib").mkdir(parents=True)
    return dst


class _ExplodingRunner(Runner):
    """Every tool is installed, and running any of them raises what no caller expects."""

    def which(self, name: str) -> str | None:
        return f"/usr/sbin/{name}"

    def run(self, argv: Sequence[str], *, timeout: float | None = None, check: bool = False,
            input_text: str | None = None) -> Result:
        raise RuntimeError(f"runner exploded on {argv[0]}\nsecond line")


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_an_unexpected_exception_is_one_line_with_exit_code_70(
        root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def factory(opts: Options) -> Agent:
        return Agent(opts, runner=_ExplodingRunner())

    code = cli.main(["apply", "--install-packages", "--root", str(root)], agent_factory=factory)
    line = _one_line(capsys.readouterr().err)
    assert code == InternalError.exit_code == 70
    assert line.startswith("dnscache-agent: error: apply: internal error in "
                           "dnscache_agent.app.install_bind: RuntimeError: runner exploded on ")
    assert "RuntimeError: runner exploded on " in line and "second line" in line
    assert line.endswith("(run with -vv for the traceback)")


def test_a_failure_building_the_agent_names_the_command(
        root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def factory(opts: Options) -> Agent:
        raise PermissionError(13, "Permission denied", "/var/lib/dnscache-agent/manifest.json")

    code = cli.main(["alarm", "create", "--root", str(root), "--instance-id", "i-1"],
                    agent_factory=factory)
    line = _one_line(capsys.readouterr().err)
    assert code == 70
    assert line == ("dnscache-agent: error: alarm create: internal error: PermissionError: "
                    "Permission denied: /var/lib/dnscache-agent/manifest.json "
                    "(run with -vv for the traceback)")


def test_vv_logs_the_traceback(root: Path, capsys: pytest.CaptureFixture[str],
                               caplog: pytest.LogCaptureFixture) -> None:
    def factory(opts: Options) -> Agent:
        raise KeyError("missing")

    with caplog.at_level(logging.DEBUG, logger="dnscache_agent"):
        assert cli.main(["plan", "--root", str(root), "-vv"], agent_factory=factory) == 70
    assert any(r.exc_info and r.exc_info[0] is KeyError for r in caplog.records)
    _one_line(capsys.readouterr().err)


def test_without_vv_no_traceback_is_logged(root: Path, capsys: pytest.CaptureFixture[str],
                                           caplog: pytest.LogCaptureFixture) -> None:
    def factory(opts: Options) -> Agent:
        raise KeyError("missing")

    with caplog.at_level(logging.WARNING, logger="dnscache_agent"):
        assert cli.main(["plan", "--root", str(root)], agent_factory=factory) == 70
    assert not any(r.exc_info for r in caplog.records)


def test_typed_errors_keep_their_codes(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def factory(opts: Options) -> Agent:
        raise ConfigError("agent.toml: cache.forwarders: 127.0.0.1 is a loopback address")

    assert cli.main(["plan", "--root", str(root)], agent_factory=factory) == 3
    assert _one_line(capsys.readouterr().err) == (
        "dnscache-agent: error: agent.toml: cache.forwarders: 127.0.0.1 is a loopback address")


def test_alarm_create_off_ec2_without_a_region_is_one_line(
        root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A staged root is never on EC2 (IMDS is not asked); with no region anywhere botocore
    raised NoRegionError through the CLI as a traceback."""
    # The process environment, not a module constant: botocore's own region lookup.
    for var in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    # Belt and braces: botocore must never try the real IMDS from a test (the fix checks the
    # region before botocore looks up credentials, which is what reached for it).
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    code = cli.main(["alarm", "create", "--root", str(root), "--instance-id", "i-0123"])
    line = _one_line(capsys.readouterr().err)
    assert code == ConfigError.exit_code == 3, line
    assert line.startswith("dnscache-agent: error: ") and "metrics.region" in line
