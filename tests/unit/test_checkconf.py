"""Staging a config for named-checkconf without copying the tree or chrooting (pure part, and
the writer on a temporary directory)."""

from __future__ import annotations

from pathlib import Path

from dnscache_agent import checkconf

MAIN = b"""include "/etc/bind/named.conf.options";
include "/etc/bind/named.conf.local";
include "zones.local";
// include "/etc/bind/missing.conf";
"""
HOST = {
    "/etc/bind/named.conf": MAIN,
    "/etc/bind/named.conf.options": b'options { directory "/var/cache/bind"; };\n',
    "/etc/bind/named.conf.local": b'include "/etc/bind/named.conf";\n',  # a cycle
    "/var/cache/bind/zones.local": b"// relative to the working directory\n",
}


def stage(planned: dict[str, bytes] | None = None) -> checkconf.StagedConfig:
    files = {**HOST, **(planned or {})}
    return checkconf.staged_config(
        "/etc/bind/named.conf", files.get, working_directory="/var/cache/bind",
        existing_directory=lambda p: "/exists" + p, host_path=lambda p: "/root" + p)


def test_includes_point_at_staged_copies_and_planned_content_is_swapped_in() -> None:
    planned = b'options { directory "/var/cache/bind"; forward only; };\n'
    config = stage({"/etc/bind/named.conf.options": planned})
    assert config.main == "000-named.conf"
    assert config.origins == {
        "000-named.conf": "/etc/bind/named.conf",
        "001-named.conf.options": "/etc/bind/named.conf.options",
        "002-named.conf.local": "/etc/bind/named.conf.local",
        "003-zones.local": "/var/cache/bind/zones.local",
    }
    main = config.files["000-named.conf"].decode()
    token = checkconf.STAGE_TOKEN
    assert f'include "{token}/001-named.conf.options";' in main
    assert f'include "{token}/003-zones.local";' in main  # relative: from the working dir
    # A missing include stays a path under the root, for named-checkconf to report.
    assert 'include "/root/etc/bind/missing.conf";' in main
    # The cycle ends at the already staged main file.
    assert config.files["002-named.conf.local"] == f'include "{token}/000-named.conf";\n'.encode()
    # The planned bytes, with `directory` pointing somewhere that exists.
    assert config.files["001-named.conf.options"] == (
        b'options { directory "/exists/var/cache/bind"; forward only; };\n')


def test_the_main_file_can_be_the_planned_one() -> None:
    """Red Hat: the agent owns named.conf whole, and it does not exist yet."""
    config = checkconf.staged_config(
        "/etc/named.conf", {"/etc/named.conf": b"options { };\n"}.get,
        working_directory="/var/named", existing_directory=str)
    assert config.files == {"000-named.conf": b"options { };\n"}


def test_stage_writes_plain_files_and_maps_messages_back(tmp_path: Path) -> None:
    config = stage()
    main = checkconf.stage(config, tmp_path)
    assert main == tmp_path / "000-named.conf"
    assert f'include "{tmp_path}/001-named.conf.options";' in main.read_text()
    assert all(p.stat().st_mode & 0o7777 == 0o600 for p in tmp_path.iterdir())
    message = f"{tmp_path}/001-named.conf.options:3: unknown option 'forward-onyl'"
    assert config.host_message(message, tmp_path) == (
        "/etc/bind/named.conf.options:3: unknown option 'forward-onyl'")
