"""The Transaction on a staged root, with fakes for everything that would start a process: a
FakeRunner answers named-checkconf, a FakeService stands for named, the health check is a
callable. Rollback is checked byte for byte, with mode, owner, symlinks, files and directories
that did not exist. The real named-checkconf and real filesystem failures (ENOSPC, read-only,
kill -9, SIGTERM) are in tests/integration/test_transaction_failures.py."""

from __future__ import annotations

import os
import re
import shutil
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Callable

import pytest

from dnscache_agent.checkpoint import StateStore
from dnscache_agent.commands import Result, Runner
from dnscache_agent.errors import ApplyError, ValidationError
from dnscache_agent.health import Health
from dnscache_agent.plan_model import Command, FileChange, Plan, Validator
from dnscache_agent.platform import DEBIAN, PlatformProfile
from dnscache_agent.rootfs import Root
from dnscache_agent.services import NamedService, NoService
from dnscache_agent.transaction import Transaction, pending
from tests.machinery import missing_root, requires, tree_snapshot

OPTIONS = "/etc/bind/named.conf.options"
NEW_DIR_FILE = "/etc/systemd/resolved.conf.d/dnscache-agent.conf"
STATE = "/var/lib/dnscache-agent"

PLAN = Plan(
    files=(
        FileChange(OPTIONS, b'options { directory "/var/cache/bind"; forward only; };\n',
                   validator=Validator.NAMED_CHECKCONF, owner="bind", group="bind"),
        FileChange("/etc/resolv.conf", b"nameserver 127.0.0.1\nnameserver 172.31.0.2\n",
                   owner="static"),
        FileChange("/etc/odd-owner.conf", b"managed\n", owner="static"),
        FileChange(NEW_DIR_FILE, b"[Resolve]\nDNS=127.0.0.1\n", mode=0o640, owner="static"),
    ),
    resolver_backend="static",
    activate=(Command(("resolvconf", "-u"), optional=True),),
)


class FakeRunner(Runner):
    """named-checkconf accepts (or rejects with `reject`); every command is recorded with the
    staged file it was shown."""

    def __init__(self, reject: str | None = None) -> None:
        super().__init__()
        self.reject = reject
        self.calls: list[tuple[str, ...]] = []
        self.checked: list[bytes] = []

    def which(self, name: str) -> str | None:
        return f"/usr/bin/{name}"

    def run(self, argv: Sequence[str], *, timeout: float | None = None, check: bool = False,
            input_text: str | None = None) -> Result:
        args = tuple(argv)
        self.calls.append(args)
        if "named-checkconf" in args[0]:
            # One staged main file, read by path (no -t: the repair unit cannot chroot);
            # record the staged options it includes.
            assert len(args) == 2
            main = Path(args[1])
            for inc in re.findall(r'include "([^"]+)"', main.read_text()):
                if inc.endswith("-" + OPTIONS.rsplit("/", 1)[-1]):
                    self.checked.append(Path(inc).read_bytes())
            if self.reject:
                return Result(args, 1, "", f"{self.reject}\nsecond line\n")
        return Result(args, 0, "", "")


class FakeService(NamedService):
    """named as a flag; records the actions taken."""

    name = "fake"

    def __init__(self, root: Root, profile: PlatformProfile, runner: Runner,
                 active: bool = False) -> None:
        super().__init__(root, profile, runner)
        self.active = active
        self.actions: list[str] = []

    @classmethod
    def available(cls, root: Root) -> bool:
        return True

    def is_active(self) -> bool:
        return self.active

    def start(self) -> None:
        self.actions.append("start")
        self.active = True

    def reload(self) -> None:
        self.actions.append("reload")

    def stop(self) -> None:
        self.actions.append("stop")
        self.active = False

    def enable(self) -> None:
        self.actions.append("enable")


class LiveLikeRoot(Root):
    """A staged tree that the transaction treats as the live host, so service actions, the
    health check and activation commands run (against the fakes)."""

    @property
    def is_live(self) -> bool:
        return True


def build_root(base: Path) -> Path:
    (base / "etc/bind").mkdir(parents=True)
    (base / "run/resolvconf").mkdir(parents=True)
    (base / "var/lib").mkdir(parents=True)
    (base / "etc/bind/named.conf").write_text('include "/etc/bind/named.conf.options";\n')
    opts = base / OPTIONS.lstrip("/")
    opts.write_text('options { directory "/var/cache/bind"; };\n')
    os.chown(opts, 0, 123)
    (base / "run/resolvconf/resolv.conf").write_text("nameserver 172.31.0.2\noptions rotate\n")
    (base / "etc/resolv.conf").symlink_to("../run/resolvconf/resolv.conf")
    odd = base / "etc/odd-owner.conf"
    odd.write_bytes(b"original\x00bytes\r\nno newline")
    os.chown(odd, 1234, 2345)
    odd.chmod(0o600)
    return base


Snapshot = dict[str, tuple[object, ...]]


def snapshot(root: Root, *, include_state: bool = False) -> Snapshot:
    """Every file, symlink and directory under the root: kind, mode, owner, bytes or target."""
    return tree_snapshot(root.base, skip=None if include_state else STATE)


def copy_preserving(src: Path, dst: Path) -> None:
    """cp -a without a process: a frozen image of a root mid-transaction (a kill -9)."""
    shutil.copytree(src, dst, symlinks=True)
    for path in [dst, *dst.rglob("*")]:
        st = (src / path.relative_to(dst)).lstat()
        os.lchown(path, st.st_uid, st.st_gid)
        if not path.is_symlink():
            os.chmod(path, st.st_mode & 0o7777)


def txn(root: Root, *, runner: FakeRunner | None = None, service: NamedService | None = None,
        health: Callable[[], Health] | None = None) -> Transaction:
    runner = runner or FakeRunner()
    return Transaction(root, DEBIAN, runner=runner,
                       service=service or NoService(root, DEBIAN, runner),
                       health_check=health or (lambda: Health(True, "fake: ok")))


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Root]:
    yield Root(build_root(tmp_path / "root"))


@pytest.fixture
def live_root(tmp_path: Path) -> Iterator[Root]:
    yield LiveLikeRoot(build_root(tmp_path / "root"))


needs_root = requires(missing_root("chown to other owners"))


@needs_root
def test_apply_writes_the_plan(root: Root) -> None:
    runner = FakeRunner()
    report = txn(root, runner=runner).apply(PLAN)
    assert report.changed == [f.path for f in PLAN.files]
    for f in PLAN.files:
        assert root.path(f.path).read_bytes() == f.content
    # The symlink is replaced by a file; an existing file keeps its mode and owner; a new one
    # gets the plan's mode.
    assert not root.path("/etc/resolv.conf").is_symlink()
    st = root.path("/etc/odd-owner.conf").stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o600, 1234, 2345)
    assert root.path(OPTIONS).stat().st_gid == 123
    assert root.path(NEW_DIR_FILE).stat().st_mode & 0o7777 == 0o640
    # named-checkconf saw the staged options, in a copy outside the root, with `directory`
    # pointing at a directory that exists (this root has no /var/cache/bind).
    assert [re.sub(rb'directory "[^"]+"', b'directory "/var/cache/bind"', c)
            for c in runner.checked] == [PLAN.files[0].content]
    assert b"/tmp/dnscache-agent-checkconf-" in runner.checked[0]
    assert not any(str(root.base) in a for c in runner.calls for a in c)
    # Committed: no journal left, the pre-agent state recorded.
    store = StateStore(root)
    assert not store.journal.exists
    assert store.pristine("/etc/odd-owner.conf") == b"original\x00bytes\r\nno newline"
    assert store.pristine_link("/etc/resolv.conf") == "../run/resolvconf/resolv.conf"
    assert not list(root.path("/etc").glob(".*dnscache-tmp"))


@needs_root
def test_second_apply_changes_nothing(root: Root) -> None:
    txn(root).apply(PLAN)
    before = snapshot(root, include_state=True)
    inodes = {f.path: root.path(f.path).stat().st_ino for f in PLAN.files}
    runner = FakeRunner()
    report = txn(root, runner=runner).apply(PLAN)
    assert report.nothing_to_do and report.changed == []
    assert pending(PLAN, root) == []
    assert snapshot(root, include_state=True) == before
    assert inodes == {f.path: root.path(f.path).stat().st_ino for f in PLAN.files}
    assert runner.calls == []  # not even validated again


@needs_root
def test_rollback_restores_everything_byte_for_byte(root: Root) -> None:
    before = snapshot(root)
    txn(root).apply(PLAN)
    assert snapshot(root) != before
    # Applying twice must not make the agent's own output the "original".
    txn(root).apply(PLAN)
    report = txn(root).rollback(PLAN.activate)
    assert sorted(report.restored) == sorted(f.path for f in PLAN.files)
    # Directories the agent created for new files are gone too.
    assert snapshot(root) == before
    assert not root.path(STATE).exists()
    # Nothing left to roll back.
    assert not txn(root).rollback().had_state


def test_validator_rejection_touches_nothing(root: Root) -> None:
    before = snapshot(root, include_state=True)
    runner = FakeRunner(reject="named.conf.options:1: unknown option 'forward-onyl'")
    with pytest.raises(ValidationError) as exc:
        txn(root, runner=runner).apply(PLAN)
    assert str(exc.value) == (f"{OPTIONS}: named-checkconf rejected the rendered config: "
                              "named.conf.options:1: unknown option 'forward-onyl'")
    assert snapshot(root, include_state=True) == before


def test_missing_checkconf_is_a_validation_error(root: Root) -> None:
    class Missing(FakeRunner):
        def run(self, argv: Sequence[str], **kw: object) -> Result:  # type: ignore[override]
            return Result(tuple(argv), 127, "", "not found")

    before = snapshot(root, include_state=True)
    with pytest.raises(ValidationError, match="not found; install bind9"):
        txn(root, runner=Missing()).apply(PLAN)
    assert snapshot(root, include_state=True) == before


def test_bind_missing_refuses_before_touching_anything(root: Root) -> None:
    before = snapshot(root, include_state=True)
    plan = Plan(files=PLAN.files, resolver_backend="static", bind_installed=False)
    with pytest.raises(ApplyError, match="bind9 is not installed; rerun with --install-packages"):
        txn(root).apply(plan)
    assert snapshot(root, include_state=True) == before


@needs_root
@pytest.mark.parametrize("failing_call", [1, 2])
def test_failing_health_check_rolls_back_everything(live_root: Root, failing_call: int) -> None:
    before = snapshot(live_root)
    calls: list[int] = []

    def health() -> Health:
        calls.append(1)
        return Health(len(calls) != failing_call, "fake: SERVFAIL")

    runner = FakeRunner()
    service = FakeService(live_root, DEBIAN, runner, active=True)
    with pytest.raises(ApplyError) as exc:
        txn(live_root, runner=runner, service=service, health=health).apply(PLAN)
    assert "failed: fake: SERVFAIL; rolled back" in str(exc.value)
    assert snapshot(live_root) == before
    assert not StateStore(live_root).journal.exists
    # named was running before: it is reloaded onto the restored config.
    assert service.actions[-1] == "reload" and service.active
    if failing_call == 2:  # the resolver had been rewired: activation runs again on the undo
        assert runner.calls.count(("resolvconf", "-u")) == 2


@needs_root
def test_failed_apply_leaves_no_stale_original(live_root: Root) -> None:
    """After a rolled-back apply, a later edit by the admin is what rollback restores."""
    failing = txn(live_root, health=lambda: Health(False, "fake: down"))
    with pytest.raises(ApplyError):
        failing.apply(PLAN)
    live_root.path("/run/resolvconf/resolv.conf").write_text("nameserver 10.9.9.9\n")
    live_root.path("/etc/odd-owner.conf").write_bytes(b"edited later\n")
    before = snapshot(live_root)
    txn(live_root).apply(PLAN)
    txn(live_root).rollback(PLAN.activate)
    assert snapshot(live_root) == before


@needs_root
def test_named_not_running_before_is_stopped_on_undo(live_root: Root) -> None:
    runner = FakeRunner()
    service = FakeService(live_root, DEBIAN, runner, active=False)
    with pytest.raises(ApplyError):
        txn(live_root, runner=runner, service=service,
            health=lambda: Health(False, "fake: down")).apply(PLAN)
    assert service.actions == ["start", "enable", "stop"] and not service.active


@needs_root
def test_write_failure_midway_restores_earlier_files(root: Root) -> None:
    before = snapshot(root)
    # A regular file where the new file's directory must go: mkdir fails after two writes.
    root.path("/etc/systemd").write_text("in the way\n")
    before = snapshot(root)
    with pytest.raises(ApplyError) as exc:
        txn(root).apply(PLAN)
    assert str(Path(root.path(NEW_DIR_FILE))) in str(exc.value)
    assert "rolled back 3 file(s)" in str(exc.value)
    assert snapshot(root) == before


@needs_root
def test_sigterm_midway_restores_everything(live_root: Root) -> None:
    before = snapshot(live_root)

    def health() -> Health:
        os.kill(os.getpid(), signal.SIGTERM)  # delivered before kill() returns
        raise AssertionError("the signal should have interrupted the transaction")

    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(ApplyError, match="interrupted by SIGTERM; rolled back 1 file"):
        txn(live_root, health=health).apply(PLAN)
    assert snapshot(live_root) == before
    assert signal.getsignal(signal.SIGTERM) == handler  # the trap is removed again


@needs_root
@pytest.mark.parametrize("then", ["apply", "rollback"])
def test_killed_midway_is_recovered_by_the_next_run(live_root: Root, tmp_path: Path,
                                                     then: str) -> None:
    """Freeze the tree at the last health check (every file written, journal present): that is
    what a kill -9 at that moment leaves. The next apply or rollback recovers from it."""
    before = snapshot(live_root)
    crashed = tmp_path / "crashed"
    calls: list[int] = []

    def freeze() -> Health:
        calls.append(1)
        if len(calls) == 2:
            copy_preserving(live_root.base, crashed)
        return Health(True, "fake: ok")

    txn(live_root, health=freeze).apply(PLAN)
    root = LiveLikeRoot(crashed)
    assert StateStore(root).journal.exists
    assert all(root.path(f.path).read_bytes() == f.content for f in PLAN.files)
    if then == "apply":
        report = txn(root).apply(PLAN)
        assert sorted(report.recovered) == sorted(f.path for f in PLAN.files)
        assert sorted(report.changed) == sorted(f.path for f in PLAN.files)
        txn(root).rollback(PLAN.activate)
    else:
        report_rb = txn(root).rollback(PLAN.activate)
        assert sorted(report_rb.restored) == sorted(f.path for f in PLAN.files)
    assert snapshot(root) == before
    assert not root.path(STATE).exists()


@needs_root
def test_corrupt_backup_is_not_restored(root: Root) -> None:
    txn(root).apply(PLAN)
    files = root.path(STATE) / "original" / "files"
    for backup in files.iterdir():
        backup.write_bytes(b"tampered\n")
    with pytest.raises(Exception, match="is corrupt; not restoring it"):
        txn(root).rollback()


@needs_root
def test_resolver_only_repair_does_not_reload_named(live_root: Root) -> None:
    """A DHCP renew that undid resolv.conf is repaired without touching named."""
    runner = FakeRunner()
    service = FakeService(live_root, DEBIAN, runner, active=True)
    txn(live_root, runner=runner, service=service).apply(PLAN)
    assert "reload" in service.actions
    live_root.path("/etc/resolv.conf").write_text("nameserver 172.31.0.2\n")
    service.actions.clear()
    report = txn(live_root, runner=runner, service=service).apply(PLAN)
    assert report.changed == ["/etc/resolv.conf"]
    assert report.service_action is None and service.actions == []
    assert live_root.path("/etc/resolv.conf").read_bytes() == next(
        f.content for f in PLAN.files if f.path == "/etc/resolv.conf")


@needs_root
def test_apply_repairs_mode_drift_that_verify_reports(root: Root) -> None:
    """`chmod 666 /etc/resolv.conf` is drift (verify), so apply must put the mode right too:
    with bytes alone, the repair unit found "nothing to do" and the daemon asked forever."""
    from dnscache_agent import verify

    txn(root).apply(PLAN)
    resolv = root.path("/etc/resolv.conf")
    resolv.chmod(0o666)
    store = StateStore(root)
    assert not all(c.ok for c in verify.check_modes(PLAN, root, store))
    report = txn(root).apply(PLAN)
    assert report.changed == ["/etc/resolv.conf (mode 0644 owner 0:0)"]
    assert resolv.stat().st_mode & 0o777 == 0o644
    assert all(c.ok for c in verify.check_modes(PLAN, root, store))
    assert txn(root).apply(PLAN).nothing_to_do


@needs_root
@pytest.mark.parametrize("resolver_answers", [True, False])
def test_a_dark_vpc_resolver_is_not_blamed_on_the_change(live_root: Root,
                                                         resolver_answers: bool) -> None:
    """The cache's health check fails. If the host's own resolver (asked directly) answers,
    the change broke resolution: roll back. If it does not answer either (DNS disabled in the
    VPC, nothing answering at boot), keep the cache in place: rolling back would only leave
    the host without it once the resolver comes back, and repair would loop."""
    before = snapshot(live_root)
    runner = FakeRunner()
    service = FakeService(live_root, DEBIAN, runner, active=True)
    baseline = Health(resolver_answers, "172.31.0.2: " + ("NOERROR" if resolver_answers
                                                          else "no answer in 2s"))
    t = Transaction(live_root, DEBIAN, runner=runner, service=service,
                    health_check=lambda: Health(False, "fake: SERVFAIL", rcode="SERVFAIL"),
                    baseline_check=lambda: baseline)
    if resolver_answers:
        with pytest.raises(ApplyError, match="failed: fake: SERVFAIL; rolled back"):
            t.apply(PLAN)
        assert snapshot(live_root) == before
    else:
        report = t.apply(PLAN)
        assert report.health is not None and report.health.ok
        assert "upstream unreachable" in report.health.detail
        assert all(live_root.path(f.path).read_bytes() == f.content for f in PLAN.files)


@needs_root
def test_a_units_only_plan_keeps_the_recorded_activation_for_rollback(root: Root) -> None:
    """install-service applies the units alone (no resolver backend): the resolver manager's
    activation commands recorded by apply must survive it, or rollback restores the files but
    never tells resolvconf (found by molecule's rollback step)."""
    txn(root).apply(PLAN)
    units_only = Plan(files=(FileChange("/etc/systemd/system/x.service", b"[Unit]\n",
                                        owner="service"),), resolver_backend="")
    txn(root).apply(units_only)
    recorded = StateStore(root).original.meta["activate"]
    assert recorded == [{"argv": ["resolvconf", "-u"], "optional": True}]
