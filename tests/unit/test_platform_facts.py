"""The facts layer on fixture root trees: os-release → platform profile, named's version and the
options it gates, and `facts --json`'s shape. No process runs: a fake Runner answers `named -v`."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from dnscache_agent import host_facts
from dnscache_agent.bind_version import OPTION_SINCE, BindFeatures, parse_named_version
from dnscache_agent.commands import Result, Runner
from dnscache_agent.errors import FactsError
from dnscache_agent.platform import (
    DEBIAN,
    PROFILES,
    REDHAT,
    parse_os_release,
    profile_for,
)
from dnscache_agent.rootfs import Root
from dnscache_agent.settings import ImdsSettings, Settings

ROOTS = Path(__file__).resolve().parent.parent / "fixtures" / "roots"
SETTINGS = Settings(imds=ImdsSettings(enabled=False))

OS_RELEASES = {
    "debian12": ('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n'
                 'VERSION_ID="12"\nID=debian\n', DEBIAN),
    "ubuntu2204": ('NAME="Ubuntu"\nVERSION_ID="22.04"\nID=ubuntu\nID_LIKE=debian\n', DEBIAN),
    "al2": ('NAME="Amazon Linux"\nVERSION="2"\nID="amzn"\nID_LIKE="centos rhel fedora"\n'
            'VERSION_ID="2"\n', REDHAT),
    "al2023": ('NAME="Amazon Linux"\nVERSION="2023"\nID="amzn"\nID_LIKE="fedora"\n'
               'VERSION_ID="2023"\n', REDHAT),
    "rhel9": ("NAME='Red Hat Enterprise Linux'\nID='rhel'\nID_LIKE='fedora'\n"
              "VERSION_ID='9.3'\n", REDHAT),
    # Unknown ID, known ID_LIKE: the derivative follows its parent.
    "mint": ("ID=linuxmint\nID_LIKE=ubuntu debian\n", DEBIAN),
    "rocky": ("# comment\n\nID=rocky\nID_LIKE=\"rhel centos fedora\"\n", REDHAT),
}


class FakeRunner(Runner):
    """Answers `named -v` with a fixed string and records every command."""

    def __init__(self, named_v: str = "BIND 9.18.49-1~deb12u3-Debian (Extended Support Version)"
                 ) -> None:
        super().__init__()
        self.named_v = named_v
        self.calls: list[tuple[str, ...]] = []

    def which(self, name: str) -> str | None:
        return None

    def run(self, argv: Sequence[str], *, timeout: float | None = None, check: bool = False,
            input_text: str | None = None) -> Result:
        args = tuple(argv)
        self.calls.append(args)
        assert args[-1] == "-v", args
        return Result(args, 0, self.named_v + "\n", "")


def staged(tmp_path: Path, os_release: str, *, named: bool = True) -> Root:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text(os_release)
    (root / "etc/resolv.conf").write_text("nameserver 172.31.0.2\n")
    if named:
        (root / "usr/sbin").mkdir(parents=True)
        (root / "usr/sbin/named").write_text("#!/bin/sh\n")
    return Root(root)


@pytest.mark.parametrize("name", sorted(OS_RELEASES))
def test_os_release_maps_to_profile(name: str) -> None:
    text, profile = OS_RELEASES[name]
    assert profile_for(parse_os_release(text)) is profile


def test_os_release_parsing_strips_quotes_and_lowercases_ids() -> None:
    osr = parse_os_release('ID="AMZN"\nID_LIKE="centos rhel"\nVERSION_ID="2"\n'
                           'PRETTY_NAME="Amazon Linux 2"\nbroken line\n')
    assert (osr.id, osr.id_like, osr.version_id, osr.pretty_name) == (
        "amzn", ("centos", "rhel"), "2", "Amazon Linux 2")


def test_unsupported_platform_names_the_file_and_id() -> None:
    with pytest.raises(FactsError, match=r"/etc/os-release: ID='alpine'"):
        profile_for(parse_os_release("ID=alpine\n"))


def test_profiles_are_data() -> None:
    assert (DEBIAN.package, DEBIAN.options_path, DEBIAN.user, DEBIAN.unit) == (
        "bind9", "/etc/bind/named.conf.options", "bind", "named")
    assert (REDHAT.package, REDHAT.options_path, REDHAT.user, REDHAT.unit) == (
        "bind", "/etc/named.conf", "named", "named")
    assert not DEBIAN.owns_main_config and REDHAT.owns_main_config
    assert set(PROFILES.values()) == {DEBIAN, REDHAT}


@pytest.mark.parametrize(("text", "version"), [
    ("BIND 9.18.49-1~deb12u3-Debian (Extended Support Version) <id:>", (9, 18, 49)),
    ("BIND 9.11.4-P2-RedHat-9.11.4-26.P2.amzn2.13.7 (Extended Support Version) <id:7107deb>",
     (9, 11, 4)),
    ("BIND 9.16.48-RH (Extended Support Version) <id:>", (9, 16, 48)),
    ("named: command not found", None),
    ("", None),
])
def test_named_version(text: str, version: tuple[int, int, int] | None) -> None:
    assert parse_named_version(text) == version


def test_features_gate_options_by_version() -> None:
    al2 = BindFeatures((9, 11, 4))
    assert not any(al2.supports(o) for o in OPTION_SINCE)
    assert al2.supports("max-cache-size")  # ungated
    al2023 = BindFeatures((9, 16, 48))
    assert al2023.supports("stale-answer-enable") and al2023.supports("stale-cache-enable")
    assert not BindFeatures((9, 16, 2)).supports("stale-refresh-time")
    assert BindFeatures((9, 16, 3)).supports("stale-refresh-time")
    assert all(BindFeatures(None).supports(o) for o in OPTION_SINCE)


def test_missing_os_release_names_the_path(tmp_path: Path) -> None:
    root = Root(tmp_path)
    with pytest.raises(FactsError) as exc:
        host_facts.read_os_release(root)
    assert str(tmp_path / "etc/os-release") in str(exc.value)


def test_usr_lib_os_release_is_the_fallback(tmp_path: Path) -> None:
    (tmp_path / "usr/lib").mkdir(parents=True)
    (tmp_path / "usr/lib/os-release").write_text("ID=ubuntu\n")
    assert host_facts.read_os_release(Root(tmp_path)).id == "ubuntu"


def test_bind_missing_runs_nothing(tmp_path: Path) -> None:
    runner = FakeRunner()
    root = staged(tmp_path, "ID=debian\n", named=False)
    bind = host_facts.read_bind(root, DEBIAN, runner)
    assert (bind.installed, bind.version, runner.calls) == (False, None, [])


def test_staged_tree_never_asks_the_build_hosts_named(tmp_path: Path) -> None:
    """A staged tree's version comes from its package database or --bind-version
    (tests/unit/test_root_facts.py); the build host's `named -v` is never run."""
    runner = FakeRunner("BIND 9.18.49-1~deb12u3-Debian")
    root = staged(tmp_path, OS_RELEASES["al2"][0])
    with pytest.raises(FactsError, match="--bind-version"):
        host_facts.read_bind(root, REDHAT, runner)
    bind = host_facts.read_bind(root, REDHAT, runner, "9.11")
    assert bind.installed and bind.version == (9, 11, 0)
    assert runner.calls == []


@pytest.mark.parametrize("name", sorted(p.name for p in ROOTS.iterdir()))
def test_gather_on_fixture_roots(tmp_path: Path, name: str) -> None:
    dst = tmp_path / name
    shutil.copytree(ROOTS / name, dst, symlinks=True)
    facts = host_facts.gather(Root(dst), SETTINGS, runner=FakeRunner())
    assert facts.ec2 is None  # IMDS disabled: nothing was asked
    expected = DEBIAN if facts.os.id in ("debian", "ubuntu") else REDHAT
    assert facts.profile is expected
    assert facts.resources.cpus >= 1 and facts.resources.memory_bytes > 0
    data = json.loads(json.dumps(host_facts.to_dict(facts)))
    assert data["platform"] == expected.name
    assert data["bind"]["package"] == expected.package
    assert data["resolver"]["backend"] == facts.resolver.backend
    assert data["ec2"] is None


def test_gather_fails_cleanly_without_os_release(tmp_path: Path) -> None:
    with pytest.raises(FactsError, match="os-release: missing"):
        host_facts.gather(Root(tmp_path), SETTINGS, runner=FakeRunner())


def test_root_maps_host_paths_and_refuses_relative_ones(tmp_path: Path) -> None:
    root = Root(tmp_path)
    assert root.path("/etc/bind/named.conf") == tmp_path / "etc/bind/named.conf"
    assert not root.is_live and Root(Path("/")).is_live
    with pytest.raises(ValueError):
        root.path("etc/passwd")
    (tmp_path / "link").symlink_to("/nonexistent/target")
    assert root.exists("/link") and root.readlink("/link") == "/nonexistent/target"
    assert root.read_bytes("/absent") is None
