"""`--root` image builds take their facts from the tree, never from the build host: named's
version from the tree's dpkg database (or `--bind-version`; an rpm tree needs it), and CPUs and
memory left to first boot (tuned for the smallest instance unless settings give numbers). This
machine runs bind 9.18 with more than 512 MiB of memory, so a leak of either host fact shows."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from dnscache_agent import cli, host_facts, planner, tuning
from dnscache_agent.bind_version import OPTION_SINCE, BindFeatures
from dnscache_agent.commands import Result, Runner
from dnscache_agent.errors import ConfigError, FactsError
from dnscache_agent.platform import DEBIAN
from dnscache_agent.rootfs import Root
from dnscache_agent.settings import ImdsSettings, Settings, from_mapping

DPKG = Path(__file__).resolve().parent.parent / "fixtures" / "dpkg"
SETTINGS = Settings(imds=ImdsSettings(enabled=False))
# Options bind 9.11 does not know (every gated option starts after 9.11.x).
NEWER_THAN_911 = sorted(o for o, since in OPTION_SINCE.items() if since > (9, 11, 99)
                        and not o.endswith("-nonzero"))


class NoRunner(Runner):
    """Fails the test if any command runs: a staged tree's facts need none."""

    def run(self, argv: Sequence[str], *, timeout: float | None = None, check: bool = False,
            input_text: str | None = None) -> Result:
        raise AssertionError(f"a staged tree's facts ran {list(argv)}")


def tree(tmp_path: Path, *, os_release: str = "ID=debian\nVERSION_ID=10\n",
         dpkg: str | None = "status-debian10", rpm: bool = False) -> Path:
    base = tmp_path / "root"
    (base / "etc/bind").mkdir(parents=True)
    (base / "etc/os-release").write_text(os_release)
    (base / "etc/resolv.conf").write_text("nameserver 172.31.0.2\n")
    (base / "etc/bind/named.conf").write_text('include "/etc/bind/named.conf.options";\n')
    (base / "usr/sbin").mkdir(parents=True)
    (base / "usr/sbin/named").write_text("#!/bin/sh\necho BIND 9.99.0\n")
    if dpkg:
        (base / "var/lib/dpkg").mkdir(parents=True)
        (base / "var/lib/dpkg/status").write_text((DPKG / dpkg).read_text())
    if rpm:
        (base / "var/lib/rpm").mkdir(parents=True)
    return base


def options_rendered(facts: host_facts.Facts, settings: Settings = SETTINGS) -> str:
    return planner.render_bind_config(facts, settings).content.decode()


def test_dpkg_tree_with_bind_911_renders_no_newer_option(tmp_path: Path) -> None:
    facts = host_facts.gather(Root(tree(tmp_path)), SETTINGS, runner=NoRunner())
    assert facts.bind.installed and facts.bind.version == (9, 11, 5)
    assert "1:9.11.5.P4+dfsg-5.1+deb10u9" in facts.bind.version_text
    text = options_rendered(facts)
    assert NEWER_THAN_911 and not [o for o in NEWER_THAN_911 if f"\t{o} " in text]
    assert not BindFeatures((9, 11, 5)).supports("stale-answer-enable")
    assert "max-cache-size" in text


def test_staged_tree_is_tuned_for_first_boot_not_the_builder(tmp_path: Path) -> None:
    facts = host_facts.gather(Root(tree(tmp_path)), SETTINGS, runner=NoRunner())
    assert facts.resources == host_facts.Resources(
        tuning.FIRST_BOOT_CPUS, tuning.FIRST_BOOT_MEMORY_BYTES, measured=False)
    text = options_rendered(facts)
    assert "\tmax-cache-size 32m;" in text and "\trecursive-clients 1000;" in text
    # Numbers the settings give win, as on a live host.
    fixed = from_mapping({"cache": {"max_cache_size_mb": 300, "recursive_clients": 4000},
                          "imds": {"enabled": False}})
    text = options_rendered(facts, fixed)
    assert "\tmax-cache-size 300m;" in text and "\trecursive-clients 4000;" in text


def test_live_root_measures_the_host() -> None:
    live = host_facts.read_resources(Root(Path("/")))
    assert live.measured and live.memory_bytes > tuning.FIRST_BOOT_MEMORY_BYTES


def test_rpm_tree_needs_bind_version(tmp_path: Path) -> None:
    al2 = 'ID="amzn"\nID_LIKE="centos rhel fedora"\nVERSION_ID="2"\n'
    base = tree(tmp_path, os_release=al2, dpkg=None, rpm=True)
    with pytest.raises(FactsError) as exc:
        host_facts.gather(Root(base), SETTINGS, runner=NoRunner())
    assert "\n" not in str(exc.value)
    assert "rpm" in str(exc.value) and "--bind-version X.Y" in str(exc.value)
    facts = host_facts.gather(Root(base), SETTINGS, runner=NoRunner(), bind_version="9.11")
    assert facts.bind.version == (9, 11, 0)
    assert not [o for o in NEWER_THAN_911 if f"\t{o} " in options_rendered(facts)]


def test_tree_without_a_package_database_needs_bind_version(tmp_path: Path) -> None:
    with pytest.raises(FactsError, match=r"dpkg/status: missing.*--bind-version"):
        host_facts.gather(Root(tree(tmp_path, dpkg=None)), SETTINGS, runner=NoRunner())


def test_bind_version_option_wins_over_the_database(tmp_path: Path) -> None:
    facts = host_facts.gather(Root(tree(tmp_path)), SETTINGS, runner=NoRunner(),
                              bind_version="9.16.23")
    assert facts.bind.version == (9, 16, 23)


@pytest.mark.parametrize("bad", ["9", "nine.eleven", "9.11;", "9.11.4-P2", ""])
def test_bad_bind_version_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="--bind-version"):
        host_facts.parse_bind_version_option(bad)


def test_dpkg_version_parser() -> None:
    status = (DPKG / "status-debian10").read_text()
    assert host_facts.dpkg_version(status, "bind9") == (
        (9, 11, 5), "1:9.11.5.P4+dfsg-5.1+deb10u9")
    # Only installed packages count; a removed package's leftover stanza does not.
    assert host_facts.dpkg_version(status, "dnsutils") == (None, "")
    assert host_facts.dpkg_version(status, "bind") == (None, "")
    assert host_facts.dpkg_version("Package: bind9\nStatus: install ok installed\n"
                                   "Version: 9.18.28-1\n", "bind9")[0] == (9, 18, 28)
    assert host_facts.read_bind(Root(Path("/nonexistent")), DEBIAN, NoRunner()).installed is False


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_on_a_staged_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = tree(tmp_path)
    code, out, err = run(capsys, "facts", "--json", "--root", str(base))
    assert code == 0, err
    data = json.loads(out)
    assert data["bind"]["version"] == "9.11.5"
    assert data["resources"] == {"cpus": 1, "memory_bytes": 512 * 2**20, "measured": False}
    code, out, err = run(capsys, "facts", "--json", "--root", str(base), "--bind-version", "9.16")
    assert json.loads(out)["bind"]["version"] == "9.16.0"
    rpm = tree(tmp_path / "rpm", os_release='ID="rhel"\nID_LIKE="fedora"\nVERSION_ID="9"\n',
               dpkg=None, rpm=True)
    code, out, err = run(capsys, "plan", "--root", str(rpm))
    assert code == FactsError.exit_code and err.count("\n") == 1
    assert "pass --bind-version X.Y" in err and "Traceback" not in err
    code, out, err = run(capsys, "plan", "--root", str(base), "--bind-version", "latest")
    assert code == ConfigError.exit_code and "--bind-version: 'latest'" in err
