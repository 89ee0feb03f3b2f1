"""The one way the agent changes a host: validate staged files, register and back up each path
before writing it, replace atomically, reload named, health-check with a real query, then rewire
the resolver and check again. Any failure, or SIGTERM/SIGINT mid-way, restores every file byte
for byte and reloads again. A journal left by a killed run is restored at the next start."""

from __future__ import annotations

import logging
import os
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

from . import agent_units, checkconf, hostfs
from .checkpoint import READER_GROUP, Checkpoint, StateStore
from .commands import Runner
from .errors import ApplyError, DnscacheError, StateError, ValidationError
from .health import Health
from .pacer_service import NoPacer, PacerService, from_record
from .plan_model import (
    PACER_OWNER,
    Command,
    FileChange,
    FileDiff,
    LinkChange,
    PacerPlan,
    Plan,
    Validator,
)
from .platform import PlatformProfile
from .rootfs import Root
from .services import AgentUnits, NamedService, NoUnits

log = logging.getLogger(__name__)


class Interrupted(DnscacheError):
    """SIGTERM or SIGINT arrived during a transaction."""

    exit_code = 130


#: Started on demand by the path unit; stopped at rollback in case a repair is waiting.
REPAIR_SERVICE = "dnscache-agent-repair.service"


@dataclass
class ApplyReport:
    changed: list[str] = field(default_factory=list)
    service_action: str | None = None
    pacer_action: str | None = None
    health: Health | None = None
    recovered: list[str] = field(default_factory=list)
    unit_actions: list[str] = field(default_factory=list)

    @property
    def nothing_to_do(self) -> bool:
        return (not self.changed and self.service_action is None and not self.unit_actions
                and self.pacer_action is None)


@dataclass
class RollbackReport:
    restored: list[str] = field(default_factory=list)
    service_action: str | None = None
    pacer_action: str | None = None
    had_state: bool = True
    unit_actions: list[str] = field(default_factory=list)


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


def recorded_units(original: Checkpoint) -> list[str]:
    """The agent units apply recorded for rollback. Raises StateError when the record is not
    a list of unit names (a damaged manifest must not turn into a traceback)."""
    units = original.meta.get("units") or []
    if not isinstance(units, list) or not all(
            isinstance(u, str) and u.startswith("dnscache-agent") and "/" not in u
            for u in units):
        raise StateError(f"{original.dir / 'manifest.json'}: meta.units is not a list of the "
                         "agent's unit names; restore it from a backup, or move it aside and "
                         "rerun")
    return units


def recorded_commands(original: Checkpoint, default: tuple[Command, ...]) -> tuple[Command, ...]:
    """The resolver manager's activation commands apply recorded for rollback (`default` for
    checkpoints older than the record). Raises StateError when the record is malformed."""
    recorded = original.meta.get("activate")
    if recorded is None:
        return default
    ok = isinstance(recorded, list) and all(
        isinstance(c, dict) and isinstance(c.get("argv"), list) and c["argv"]
        and all(isinstance(a, str) for a in c["argv"])
        and isinstance(c.get("optional", False), bool) for c in recorded)
    if not ok:
        raise StateError(f"{original.dir / 'manifest.json'}: meta.activate is not a list of "
                         "commands; restore it from a backup, or move it aside and rerun")
    return tuple(Command(tuple(c["argv"]), bool(c.get("optional"))) for c in recorded)


class Transaction:
    """Carries out plans on one root. Collaborators are passed in, so tests can use a staged
    root with `NoService` and a health check that always passes."""

    def __init__(self, root: Root, profile: PlatformProfile, *, runner: Runner,
                 service: NamedService, health_check: Callable[[], Health],
                 store: StateStore | None = None, units: AgentUnits | None = None,
                 pacer_factory: Callable[[PacerPlan], PacerService] | None = None,
                 pacer_health: Callable[[PacerPlan], Health] | None = None,
                 baseline_check: Callable[[], Health | None] | None = None) -> None:
        self.root = root
        self.profile = profile
        self.runner = runner
        self.service = service
        self.health_check = health_check
        self.store = store or StateStore(root)
        self.units = units or NoUnits(runner)
        self.pacer_factory = pacer_factory or (lambda plan: NoPacer(root, plan, runner))
        self.pacer_health = pacer_health or (lambda plan: Health(True, "pacer not probed"))
        # A query to the host's pre-agent resolver, bypassing the cache (None: none known).
        self.baseline_check = baseline_check or (lambda: None)

    # --- recovery -------------------------------------------------------------------------

    def recover(self) -> list[str]:
        """Restore a journal a killed run left behind; returns the paths put back."""
        self.store.sweep()  # tombstones a kill left between rename and delete
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
        """Check the planned bind files with named-checkconf before anything is swapped in:
        the main config and its includes are staged as plain files with the planned content
        swapped in (`checkconf.py`; no tree copy, no chroot, so it also works inside the
        repair unit's sandbox). Raises ValidationError with named-checkconf's first line."""
        to_check = [f for f in files if f.validator is Validator.NAMED_CHECKCONF]
        if not to_check:
            return
        checkconf_bin = shutil.which("named-checkconf") or self.profile.checkconf_binary
        planned = {f.path: f.content for f in to_check}
        main_path = (self.profile.named_conf if self.root.exists(self.profile.named_conf)
                     else to_check[0].path)
        # Staged outside the root, so a rejected config leaves no trace on the host.
        stage_dir = Path(tempfile.mkdtemp(prefix="dnscache-agent-checkconf-"))
        try:
            def existing_directory(path: str) -> str:
                host = self.root.path(path)
                return str(host) if host.is_dir() else str(stage_dir)

            config = checkconf.staged_config(
                main_path, lambda p: planned.get(p, self.root.read_bytes(p)),
                working_directory=self.profile.working_directory,
                existing_directory=existing_directory,
                host_path=lambda p: str(self.root.path(p)))
            main = checkconf.stage(config, stage_dir)
            result = self.runner.run([checkconf_bin, str(main)], timeout=30)
            if result.returncode == 127:
                raise ValidationError(f"{checkconf_bin}: not found; install "
                                      f"{self.profile.package} (or bind9-utils) to validate "
                                      "the config")
            if not result.ok:
                first = config.host_message(result.first_error_line(), stage_dir)
                raise ValidationError(f"{to_check[0].path}: named-checkconf rejected the "
                                      f"rendered config: {first}")
        finally:
            shutil.rmtree(stage_dir, ignore_errors=True)

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

    def _meta_drift(self, plan: Plan) -> list[tuple[FileChange, hostfs.FileMeta]]:
        """Files whose bytes may match but whose mode or owner is not what `verify` expects
        (a `chmod 666 /etc/resolv.conf`): the repair must put those right too, or verify's
        drift would send the repair unit round in circles."""
        from .verify import expected_meta

        original = self.store.original
        out = []
        for f in plan.files:
            host = self.root.path(f.path)
            try:
                live = hostfs.meta_of(host)
                linked = host.is_symlink()
            except OSError:  # e.g. a file where a directory should be: the write reports it
                continue
            if live is None or linked or f.path in plan.regenerated:
                continue
            want = expected_meta(f, original.entries.get(f.path), regenerated=False,
                                 planned_gid=hostfs.gid_for(f.group))
            target = hostfs.FileMeta(
                want.mode if want.mode is not None else live.mode & ~0o002,
                want.uid if want.uid is not None else live.uid,
                want.gid if want.gid is not None else live.gid)
            if target != live:
                out.append((f, target))
        return out

    def _fix_meta(self, change: FileChange, meta: hostfs.FileMeta) -> None:
        self.store.journal.register(change.path)
        self.store.original.register(change.path)
        host = self.root.path(change.path)
        os.chown(host, meta.uid, meta.gid)
        os.chmod(host, meta.mode)
        log.info("set %s to mode %04o owner %d:%d", change.path, meta.mode, meta.uid, meta.gid)

    def _link(self, change: LinkChange) -> None:
        self.store.journal.register(change.path)
        self.store.original.register(change.path)
        host = self.root.path(change.path)
        host.parent.mkdir(parents=True, exist_ok=True)
        hostfs.atomic_symlink(host, change.target)
        log.info("linked %s -> %s", change.path, change.target)

    def _gid(self, group: str | None) -> int:
        return hostfs.gid_for(group)  # the same lookup verify's mode check uses

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

    def _check_health(self, stage: str, health: Health | None = None) -> Health:
        """A failed health check rolls the change back, unless the host's own resolver (what
        it used before the agent) does not answer either: then the VPC resolver is dark (DNS
        disabled in the VPC, no route at boot), the change is not at fault, and the cache is
        kept in place to answer once the resolver does (serving what it holds meanwhile)."""
        health = health or self.health_check()
        if health.ok:
            return health
        baseline = self.baseline_check()
        if baseline is not None and not baseline.ok:
            log.warning("health check %s failed (%s), and the host's own resolver does not "
                        "answer either (%s): keeping the change; names resolve once it does",
                        stage, health.detail, baseline.detail)
            return Health(True, f"upstream unreachable: {health.detail}; the host's own "
                                f"resolver does not answer either ({baseline.detail})",
                          rcode=health.rcode)
        raise ApplyError(f"health check {stage} failed: {health.detail}")

    def apply(self, plan: Plan) -> ApplyReport:
        """Make the host match `plan`. Raises ValidationError (nothing touched) or ApplyError
        (everything restored).

        Order, so no step costs a lookup: the pacer first (started, and it must answer before
        named is pointed at it); then bind's files, and named is reloaded (started the first
        time) and must answer; only then does the resolver wiring point at it; the agent's
        own units come last (they watch the result)."""
        report = ApplyReport(recovered=self.recover())
        if not plan.bind_installed:
            raise ApplyError(f"{self.profile.named_binary}: {self.profile.package} is not "
                             "installed; rerun with --install-packages to install it")
        changes = {d.path for d in pending(plan, self.root)}
        bind_files = [f for f in plan.bind_files() if f.path in changes]
        resolver_files = [f for f in plan.resolver_files() if f.path in changes]
        unit_files = [f for f in plan.unit_files() if f.path in changes]
        pacer_files = [f for f in plan.pacer_files() if f.path in changes]
        links = [lk for lk in plan.links if self.root.readlink(lk.path) != lk.target]
        pacer_links = [lk for lk in links if lk.owner == PACER_OWNER]
        links = [lk for lk in links if lk.owner != PACER_OWNER]
        pacer = (self.pacer_factory(plan.pacer) if plan.pacer is not None and self.root.is_live
                 else None)
        pacer_was_active = pacer.is_active() if pacer is not None else True
        pacer_stale = (pacer is not None and plan.pacer is not None and pacer_was_active
                       and self.recorded_pacer_digest() not in (None, plan.pacer.digest))
        # A running pacer restarted on new settings must be restarted again on the restored
        # ones if anything after it fails (its own health check included).
        pacer_restarts = pacer_was_active and bool(pacer_files or pacer_links or pacer_stale)
        meta_fixes = [(f, m) for f, m in self._meta_drift(plan) if f.path not in changes]
        # A plan without bind's files (install-service's units only) leaves named alone.
        manages_named = bool(plan.bind_files())
        was_active = self.service.is_active()
        start_units = self._units_to_start(plan)
        if not changes and not links and not pacer_links and not meta_fixes and \
                not start_units and pacer_was_active and not pacer_stale and (
                    was_active or not manages_named or not self.root.is_live):
            if self.root.is_live and manages_named:
                report.health = self.health_check()
            return report
        self.validate(bind_files)
        original = self.store.original
        # Recorded before any host file is touched, so recovery after a kill knows them too.
        self.store.journal.set_meta(
            "new_in_original",
            sorted(p for p in changes | {lk.path for lk in links + pacer_links}
                   | {f.path for f, _ in meta_fixes} if not original.has(p)))
        self._record_for_rollback(plan, was_active, pacer)
        with trap_signals():
            try:
                for f in pacer_files:
                    self._write(f)
                    report.changed.append(f.path)
                for lk in pacer_links:
                    self._link(lk)
                    report.changed.append(lk.path)
                if pacer is not None:
                    report.pacer_action = self._start_pacer(
                        pacer, bool(pacer_files or pacer_links), pacer_was_active,
                        restart=pacer_stale)
                for f in bind_files:
                    self._write(f)
                    report.changed.append(f.path)
                if self.root.is_live and manages_named and (bind_files or not was_active):
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
                for f, meta in meta_fixes:
                    self._fix_meta(f, meta)
                    report.changed.append(f"{f.path} (mode {meta.mode:04o} owner "
                                          f"{meta.uid}:{meta.gid})")
                for f in unit_files:
                    self._write(f)
                    report.changed.append(f.path)
                for lk in links:
                    self._link(lk)
                    report.changed.append(lk.path)
                report.unit_actions = self._start_units(plan, bool(unit_files or links),
                                                        start_units)
            except BaseException as exc:
                restored = self._undo(plan, was_active)
                if pacer is not None and not pacer_was_active:
                    pacer.stop()
                elif pacer is not None and pacer_restarts:
                    # Back on the settings file the undo restored.
                    self._restart_quietly(pacer)
                reason = str(exc) or type(exc).__name__
                raise ApplyError(f"{reason}; rolled back {len(restored)} file(s)") from exc
        self.store.journal.discard()
        if pacer is not None:
            self.store.original.set_meta("pacer", pacer.record())
        return report

    def _restart_quietly(self, pacer: PacerService) -> None:
        try:
            if pacer.name == "systemd":
                self.units.daemon_reload()
            pacer.restart()
        except DnscacheError as exc:
            log.error("pacer: restart on the restored settings failed: %s", exc)

    def recorded_pacer_digest(self) -> str | None:
        """The settings digest of the pacer the agent last started (None: none recorded)."""
        record = self.store.original.meta.get("pacer")
        digest = record.get("digest") if isinstance(record, dict) else None
        return digest if isinstance(digest, str) else None

    def _start_pacer(self, pacer: PacerService, changed: bool, was_active: bool, *,
                     restart: bool = False) -> str | None:
        """Start (or restart, when its unit or settings changed) the pacer; it must answer
        through to the resolver before named is pointed at it."""
        assert pacer.plan is not None
        action = None
        if changed and pacer.name == "systemd":
            self.units.daemon_reload()
        if not was_active:
            pacer.start()
            action = "started"
        elif changed or restart:
            pacer.restart()
            action = "restarted"
        self._check_health("through the pacer", self.pacer_health(pacer.plan))
        return action

    def _record_for_rollback(self, plan: Plan, was_active: bool,
                             pacer: PacerService | None = None) -> None:
        """What rollback needs besides the files, so it works from the checkpoint alone (even
        when agent.toml is gone or invalid): named's state before the agent, the resolver
        manager's activation commands, and the agent units to stop."""
        original = self.store.original
        if "named_was_active" not in original.meta and plan.bind_files():
            original.set_meta("named_was_active", was_active)
        # Only a plan that wires the resolver knows its manager's commands: install-service's
        # units-only plan must not erase them (rollback would leave resolvconf's output stale).
        activate = [{"argv": list(c.argv), "optional": c.optional} for c in plan.activate]
        if plan.resolver_backend and original.meta.get("activate") != activate:
            original.set_meta("activate", activate)
        if pacer is not None:
            # The digest of the settings it runs with is recorded only once they are
            # committed (below): an undone apply leaves it on the old ones.
            record = {**pacer.record(), "digest": self.recorded_pacer_digest() or ""}
            if original.meta.get("pacer") != record:
                original.set_meta("pacer", record)
        if plan.service is not None:
            known = list(original.meta.get("units") or [])
            units = known + [u for u in plan.service.units if u not in known]
            if units != known:
                original.set_meta("units", units)

    def _units_to_start(self, plan: Plan) -> list[str]:
        """install-service's `enable --now`: the agent units not running yet."""
        if plan.service is None or not plan.service.start or not self.root.is_live:
            return []
        return [u for u in plan.service.units if not self.units.is_active(u)]

    def _start_units(self, plan: Plan, changed: bool, start: list[str]) -> list[str]:
        if plan.service is None:
            return []
        if not self.root.is_live:
            if changed:  # an image build: the daemon's user must exist in the image
                self.units.ensure_users(self.root.path(agent_units.SYSUSERS_PATH))
            return []
        done = []
        if any(f.path == agent_units.SYSUSERS_PATH for f in plan.unit_files()) and (
                changed or not hostfs.gid_for(READER_GROUP)):
            self.units.ensure_users(self.root.path(agent_units.SYSUSERS_PATH))
            # Checkpoints written before the user existed (an upgrade) become readable too.
            self.store.share_with_readers()
        if changed:
            self.units.daemon_reload()
            done.append("ran systemctl daemon-reload")
            main = plan.service.main
            if main not in start and self.units.is_active(main):
                # The running daemon must not stay on its old unit.
                self.units.restart(main)
                done.append(f"restarted {main}")
        if start:
            self.units.enable_now(start)
            done.append(f"enabled and started {' '.join(start)}")
        return done

    def _undo(self, plan: Plan, was_active: bool) -> list[str]:
        journal = self.store.journal
        restored = journal.restore()
        for path in restored:
            log.info("restored %s", path)
        self._forget_new(journal)
        try:
            if self.root.is_live:
                if not plan.bind_files():
                    pass  # named was never touched
                elif was_active:
                    self.service.reload_or_start()
                else:
                    self.service.stop()
                if plan.resolver_files():
                    self._run_commands(plan.activate)
                if any(self.root.path(p).parent.name.endswith(".wants") or
                       p.startswith("/etc/systemd/system/") for p in restored):
                    self.units.daemon_reload()
        finally:
            journal.discard()
        return restored

    # --- rollback -------------------------------------------------------------------------

    def rollback(self, activate: Sequence[Command] = ()) -> RollbackReport:
        """Restore the pre-agent state from the checkpoint alone: stop and disable the agent's
        units first (so nothing repairs the host behind the rollback), put every file back
        (the resolver wiring before bind's config, so stubs leave the cache before it
        changes), tell the resolver manager, then return named to its pre-agent state.
        `activate` is used only for checkpoints older than the recorded commands."""
        original = self.store.original
        report = RollbackReport()
        if self.root.is_live and original.exists:
            units = recorded_units(original)
            if units:
                report.unit_actions = self.units.disable_now(
                    list(reversed(units)) + [REPAIR_SERVICE])
        recovered = self.recover()
        original = self.store.original
        if not original.exists:
            report.restored = recovered
            report.had_state = bool(recovered)
            return report
        commands = recorded_commands(original, tuple(activate))
        report.restored = list(dict.fromkeys(recovered + original.restore()))
        for path in report.restored:
            log.info("restored %s to its pre-agent content", path)
        if self.root.is_live and original.meta.get("units"):
            self.units.daemon_reload()
        self._run_commands(commands)
        if self.root.is_live:
            if original.meta.get("named_was_active"):
                report.service_action = self.service.reload_or_start()
            elif self.service.is_active():
                self.service.stop()
                report.service_action = "stopped"
            # Last: named no longer forwards to it.
            report.pacer_action = self._stop_recorded_pacer(original)
        self.store.clear()
        return report

    def _stop_recorded_pacer(self, original: Checkpoint) -> str | None:
        record = original.meta.get("pacer")
        if record is None:
            return None
        try:
            if not isinstance(record, dict):
                raise ValueError(record)
            pacer = from_record(self.root, record, self.runner)
        except (ValueError, TypeError):
            raise StateError(f"{original.dir / 'manifest.json'}: meta.pacer is not a pacer "
                             "record; restore it from a backup, or move it aside and rerun"
                             ) from None
        if not pacer.is_active():
            return None
        pacer.stop()
        return "stopped"
