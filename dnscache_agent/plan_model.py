"""The plan's data model: what files should hold and which actions follow. Pure values, shared by
the planner (which builds them), the transaction (which carries them out) and verify."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from enum import Enum


class Validator(str, Enum):
    """How a staged file is checked before it is swapped in."""

    NONE = "none"
    NAMED_CHECKCONF = "named-checkconf"


@dataclass(frozen=True)
class FileChange:
    """One file the agent owns: its full desired content.

    `mode` applies to newly created files; an existing file keeps its mode and owner.
    `owner` names the component (bind, resolver backend) for messages and verify.
    """

    path: str
    content: bytes
    mode: int = 0o644
    validator: Validator = Validator.NONE
    owner: str = "bind"
    group: str | None = None


@dataclass(frozen=True)
class Command:
    """An external command a backend runs after its files are written (e.g. `resolvconf -u`).
    `optional` commands that are missing on the host are skipped, not failed."""

    argv: tuple[str, ...]
    optional: bool = False


@dataclass(frozen=True)
class LinkChange:
    """A symlink the agent owns (a unit's `[Install]` link: `systemctl enable` in data)."""

    path: str
    target: str
    owner: str = "service"


@dataclass(frozen=True)
class ServicePlan:
    """The agent's own systemd units, when installed (`install-service`, or found on the
    host). `units` are started/stopped in this order; `main` is restarted when its file
    changes while it runs; `start` asks for `enable --now` (install-service)."""

    units: tuple[str, ...]
    main: str
    exec_path: str
    start: bool = False


@dataclass(frozen=True)
class PacerPlan:
    """The budget-pacing forwarder named forwards to (dnscache_agent/pacer). `unit` is its
    systemd unit when systemd runs services here; otherwise the agent starts and supervises
    the process itself (`argv`)."""

    listen: str
    port: int
    unit: str | None
    argv: tuple[str, ...]
    # A digest of every setting the pacer runs with (resolvers, budget, margin, warm list):
    # a change restarts it, and verify reports a pacer still running with older ones.
    digest: str = ""


@dataclass(frozen=True)
class Plan:
    """Everything the host should hold. The transaction carries it out, `verify` compares the
    host with it, the daemon repairs from it, and rollback reverses what it wrote.

    `regenerated`: files the resolver manager rewrites itself (dhclient-script on a renew),
    judged by the wiring invariants, not byte for byte. `files` whose owner is "service" and
    `links` are the agent's units, present only when `service` is."""

    files: tuple[FileChange, ...]
    resolver_backend: str
    activate: tuple[Command, ...] = ()
    bind_installed: bool = True
    notes: tuple[str, ...] = field(default=())
    regenerated: frozenset[str] = frozenset()
    links: tuple[LinkChange, ...] = ()
    service: ServicePlan | None = None
    pacer: PacerPlan | None = None

    def bind_files(self) -> tuple[FileChange, ...]:
        return tuple(f for f in self.files if f.owner == "bind")

    def unit_files(self) -> tuple[FileChange, ...]:
        return tuple(f for f in self.files if f.owner == SERVICE_OWNER)

    def pacer_files(self) -> tuple[FileChange, ...]:
        return tuple(f for f in self.files if f.owner == PACER_OWNER)

    def resolver_files(self) -> tuple[FileChange, ...]:
        return tuple(f for f in self.files
                     if f.owner not in ("bind", SERVICE_OWNER, PACER_OWNER))


#: `FileChange.owner` of the agent's own unit files.
SERVICE_OWNER = "service"
#: `FileChange.owner` (and `LinkChange.owner`) of the pacer's unit.
PACER_OWNER = "pacer"


@dataclass(frozen=True)
class FileDiff:
    path: str
    before: bytes | None
    after: bytes

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def unified(self) -> str:
        old = [] if self.before is None else self.before.decode(errors="replace").splitlines(True)
        new = self.after.decode(errors="replace").splitlines(True)
        label_old = "/dev/null" if self.before is None else f"a{self.path}"
        return "".join(difflib.unified_diff(old, new, label_old, f"b{self.path}"))
