"""Root keeps every read inside the staged tree, links included."""
from __future__ import annotations

import os
from pathlib import Path

from dnscache_agent.rootfs import Root


def test_absolute_symlink_is_followed_inside_the_root(tmp_path: Path) -> None:
    (tmp_path / "run/systemd/resolve").mkdir(parents=True)
    (tmp_path / "run/systemd/resolve/stub-resolv.conf").write_text("nameserver 127.0.0.53\n")
    (tmp_path / "etc").mkdir()
    os.symlink("/run/systemd/resolve/stub-resolv.conf", tmp_path / "etc/resolv.conf")
    root = Root(tmp_path)
    assert root.read_text("/etc/resolv.conf") == "nameserver 127.0.0.53\n"
    assert root.readlink("/etc/resolv.conf") == "/run/systemd/resolve/stub-resolv.conf"


def test_relative_and_dangling_links(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "run/resolv.conf").write_text("nameserver 10.0.0.2\n")
    os.symlink("../run/resolv.conf", tmp_path / "etc/resolv.conf")
    os.symlink("/nowhere/file", tmp_path / "etc/dangling")
    root = Root(tmp_path)
    assert root.read_text("/etc/resolv.conf") == "nameserver 10.0.0.2\n"
    assert root.read_bytes("/etc/dangling") is None
