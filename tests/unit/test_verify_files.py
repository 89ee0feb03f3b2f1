"""verify's file check: byte drift is reported with file and line, except for files the
resolver manager regenerates itself (judged by wiring invariants instead)."""
from __future__ import annotations

from pathlib import Path

from dnscache_agent.plan_model import FileChange, Plan
from dnscache_agent.rootfs import Root
from dnscache_agent.verify import ROOT_ONLY, check_files, unjudged_files

WANTED = b"# managed\nnameserver 127.0.0.1\nnameserver 10.0.0.2\n"
RENEWED = b"domain ec2.internal\nnameserver 127.0.0.1\nnameserver 10.0.0.2\n"


def _root(tmp_path: Path) -> Root:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/resolv.conf").write_bytes(RENEWED)
    return Root(tmp_path)


def test_drift_names_file_and_line(tmp_path: Path) -> None:
    plan = Plan(files=(FileChange("/etc/resolv.conf", WANTED, owner="static"),),
                resolver_backend="static")
    [check] = check_files(plan, _root(tmp_path))
    assert not check.ok
    assert (check.path, check.line) == ("/etc/resolv.conf", 1)
    assert "expected '# managed'" in check.detail


def test_regenerated_file_is_not_byte_drift(tmp_path: Path) -> None:
    plan = Plan(files=(FileChange("/etc/resolv.conf", WANTED, owner="dhclient"),),
                resolver_backend="dhclient")
    [check] = check_files(plan, _root(tmp_path), frozenset({"/etc/resolv.conf"}))
    assert check.ok


def test_a_plan_from_unreadable_inputs_is_not_called_drift(tmp_path: Path) -> None:
    """The daemon's user cannot read netplan's 0600 sources: the backend's files are planned
    from a partial view, so they are reported as left to the privileged repair, not drift;
    bind's file is still judged byte for byte."""
    root = Root(tmp_path)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/override.yaml").write_text("something else\n")
    (tmp_path / "etc/options").write_text("drifted\n")
    plan = Plan(files=(FileChange("/etc/options", b"planned\n", owner="bind"),
                       FileChange("/etc/override.yaml", b"planned\n", owner="netplan")),
                resolver_backend="netplan")
    unjudged = unjudged_files(plan, frozenset({"/etc/netplan/50-cloud-init.yaml"}))
    checks = {c.path: c for c in check_files(plan, root, unjudged=unjudged)}
    assert checks["/etc/override.yaml"].ok and ROOT_ONLY in checks["/etc/override.yaml"].detail
    assert not checks["/etc/options"].ok
    assert unjudged_files(plan, frozenset()) == frozenset()
