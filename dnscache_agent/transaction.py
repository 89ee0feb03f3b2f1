"""The one way the agent changes a host: validate staged files, register and back up each path
before writing it, replace atomically, reload named, health-check with a real query, then rewire
the resolver and check again. Any failure, or SIGTERM/SIGINT mid-way, restores every file byte
for byte and reloads again. A journal left by a killed run is restored at the next start."""

from __future__ import annotations

import logging
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Callable

from . import hostfs
from .checkpoint import Checkpoint, StateStore
from .commands import Runner
from .errors import ApplyError, DnscacheError, ValidationError
from .health import Health
from .plan_model import Command, FileChange, FileDiff, Plan, Validator
from .platform import PlatformProfile, checkconf_context
from .rootfs import Root
from .services import NamedService

log = logging.getLogger(__name__)


class Interrupted(DnscacheError):
    """SIGTERM or SIGINT arrived during a transaction."""

    exit_code = 130


@dataclass
class ApplyReport:
    changed: list[str] = field(default_factory=list)
    service_action: str | None = None
    health: Health | None = None
    recovered: list[str] = field(default_factory=list)

    @property
    def nothing_to_do(self) -> bool:
        return not self.changed and self.service_action is None


@dataclass
class RollbackReport:
    restored: list[str] = field(default_factory=list)
    service_action: str | None = None
    had_state: bool = True


def pending(plan: Plan, root: Root) -> list[FileDiff]:
    """The plan's files whose live bytes differ from what the plan wants."""
    diffs = [FileDiff(f.path, root.read_bytes(f.path), f.content) for f in plan.files]
    return [d for d in diffs if d.changed]


@contextmanager
def trap_signals() -> Iterator[None]:
    """Turn SIGTERM/SIGINT into an exception, so the rollback path runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(f"interrupted by {signal.Signals(signum).name}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class Transaction:
    """Carries out plans on one root. Collaborators are passed in, so tests can use a staged
    root with `NoService` and a health check that always passes."""

    def __init__(self, root: Root, profile: PlatformProfile, *, runner: Runner,
                 service: NamedService, health_check: Callable[[], Health],
                 store: StateStore | None = None) -> None:
        self.root = root
        self.profile = profile
        self.runner = runner
        self.service = service
        self.health_check = health_check
        self.store = store or StateStore(root)

    # --- recovery -------------------------------------------------------------------------

    def recover(self) -> list[str]:
        """Restore a journal a killed run left behind; returns the paths put back."""
        journal = self.store.journal
        if not journal.exists:
            return []
        log.warning("found an unfinished transaction in %s; restoring it", journal.dir)
        restored = journal.restore()
        self._forget_new(journal)
        journal.discard()
        for path in restored:
            log.info("restored %s from the interrupted transaction", path)
        return restored

    def _forget_new(self, journal: Checkpoint) -> None:
        """An undone transaction must not leave its first registrations in `original/`: they
        would go stale, and a later plan or rollback would bring back content the host has
        since replaced. Planning then reads the (restored) host again. The checkpoint's meta
        (named's pre-agent state) is kept for `rollback`."""
        new = journal.meta.get("new_in_original") or []
        if new:
            self.store.original.forget(list(new))

    # --- validation -----------------------------------------------------------------------

    def validate(self, files: Sequence[FileChange]) -> None:
        """Check staged bind files with named-checkconf, in a copy of the config tree, before
        anything is swapped in. Raises ValidationError with named-checkconf's first line."""
        to_check = [f for f in files if f.validator is Validator.NAMED_CHECKCONF]
        if not to_check:
            return
        checkconf = shutil.which("named-checkconf") or self.profile.checkconf_binary
        # Staged outside the root, so a rejected config leaves no trace on the host.
        stage = Path(tempfile.mkdtemp(prefix="dnscache-agent-checkconf-"))
        try:
            staged = Root(stage)
            for path in checkconf_context(self.profile):
                src = self.root.path(path)
                dst = staged.path(path)
                dst.parent.mkdir(parents=True, exist_ok=True)
                if src.is_dir():
                    shutil.copytree(src, dst, symlinks=True)
                elif src.exists():
                    shutil.copy2(src, dst)
            staged.path(self.profile.working_directory).mkdir(parents=True, exist_ok=True)
            for f in to_check:
                dst = staged.path(f.path)
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_bytes(f.content)
            main = staged.path(self.profile.named_conf)
            argv = ([checkconf, "-t", str(stage), self.profile.named_conf] if main.exists()
                    else [checkconf, str(staged.path(to_check[0].path))])
            result = self.runner.run(argv, timeout=30)
            if result.returncode == 127:
                raise ValidationError(f"{checkconf}: not found; install {self.profile.package} "
                                      "(or bind9-utils) to validate the config")
            if not result.ok:
                raise ValidationError(f"{to_check[0].path}: named-checkconf rejected the "
                                      f"rendered config: {result.first_error_line()}")
        finally:
            shutil.rmtree(stage, ignore_errors=True)

    # --- apply ----------------------------------------------------------------------------

    def _write(self, change: FileChange) -> None:
        journal, original = self.store.journal, self.store.original
        journal.register(change.path)
        original.register(change.path)
        host = self.root.path(change.path)
        existing = hostfs.meta_of(host)
        if existing is not None and not host.is_symlink():
            meta = existing
        else:
            meta = hostfs.FileMeta(change.mode, 0, self._gid(change.group))
        hostfs.atomic_write(host, change.content, meta)
        log.info("wrote %s (checkpoint %s)", change.path, journal.dir)

    def _gid(self, group: str | None) -> int:
        if not group:
            return 0
        try:
            import grp

            return grp.getgrnam(group).gr_gid
        except KeyError:
            return 0

    def _run_commands(self, commands: Sequence[Command]) -> None:
        if not self.root.is_live:
            return
        for cmd in commands:
            if cmd.optional and not self.runner.which(cmd.argv[0]):
                continue
            result = self.runner.run(cmd.argv, timeout=60)
            if not result.ok:
                raise ApplyError(f"{' '.join(cmd.argv)}: {result.first_error_line()}")
            log.info("ran %s", " ".join(cmd.argv))

    def _check_health(self, stage: str) -> Health:
        health = self.health_check()
        if not health.ok:
            raise ApplyError(f"health check {stage} failed: {health.detail}")
        return health

    def apply(self, plan: Plan) -> ApplyReport:
        """Make the host match `plan`. Raises ValidationError (nothing touched) or ApplyError
        (everything restored)."""
        report = ApplyReport(recovered=self.recover())
        if not plan.bind_installed:
            raise ApplyError(f"{self.profile.named_binary}: {self.profile.package} is not "
                             "installed; rerun with --install-packages to install it")
        changes = {d.path for d in pending(plan, self.root)}
        bind_files = [f for f in plan.files if f.owner == "bind" and f.path in changes]
        resolver_files = [f for f in plan.files if f.owner != "bind" and f.path in changes]
        was_active = self.service.is_active()
        if not changes and (was_active or not self.root.is_live):
            if self.root.is_live:
                report.health = self.health_check()
            return report
        self.validate(bind_files)
        original = self.store.original
        # Recorded before any host file is touched, so recovery after a kill knows them too.
        self.store.journal.set_meta("new_in_original",
                                    sorted(p for p in changes if not original.has(p)))
        if "named_was_active" not in original.meta:
            original.set_meta("named_was_active", was_active)
        with trap_signals():
            try:
                for f in bind_files:
                    self._write(f)
                    report.changed.append(f.path)
                if self.root.is_live and (bind_files or not was_active):
                    # A resolv.conf-only repair (a DHCP renew undid it) needs no reload.
                    report.service_action = self.service.reload_or_start()
                    self.service.enable()
                    report.health = self._check_health("after reloading named")
                for f in resolver_files:
                    self._write(f)
                    report.changed.append(f.path)
                if resolver_files:
                    self._run_commands(plan.activate)
                    if self.root.is_live:
                        report.health = self._check_health("after rewiring the resolver")
            except BaseException as exc:
                restored = self._undo(plan, was_active)
                reason = str(exc) or type(exc).__name__
                raise ApplyError(f"{reason}; rolled back {len(restored)} file(s)") from exc
        self.store.journal.discard()
        return report

    def _undo(self, plan: Plan, was_active: bool) -> list[str]:
        journal = self.store.journal
        restored = journal.restore()
        for path in restored:
            log.info("restored %s", path)
        self._forget_new(journal)
        try:
            if self.root.is_live:
                if was_active:
                    self.service.reload_or_start()
                else:
                    self.service.stop()
                self._run_commands(plan.activate)
        finally:
            journal.discard()
        return restored

    # --- rollback -------------------------------------------------------------------------

    def rollback(self, activate: Sequence[Command] = ()) -> RollbackReport:
        """Restore the pre-agent state: every file the agent ever touched, and named's
        running state."""
        recovered = self.recover()
        original = self.store.original
        if not original.exists:
            return RollbackReport(restored=recovered, had_state=bool(recovered))
        report = RollbackReport(restored=list(dict.fromkeys(recovered + original.restore())))
        for path in report.restored:
            log.info("restored %s to its pre-agent content", path)
        self._run_commands(activate)
        if self.root.is_live:
            if original.meta.get("named_was_active"):
                report.service_action = self.service.reload_or_start()
            elif self.service.is_active():
                self.service.stop()
                report.service_action = "stopped"
        self.store.clear()
        return report
