"""The resolver-backend interface. A backend owns one way a distribution manages
/etc/resolv.conf (a static file, resolvconf, dhclient, systemd-resolved, NetworkManager, netplan).

Detection and planning are pure functions of what the facts layer read; only `activate` (run by
the transaction after the files are written) touches the host, through the commands it returns.
"""

from __future__ import annotations

import posixpath
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

from ..plan_model import Command, FileChange
from ..settings import Settings

RESOLV_CONF = "/etc/resolv.conf"


@dataclass(frozen=True)
class HostView:
    """What a backend may look at, read by the facts layer.

    `files` maps host paths to their *pristine* bytes (before the agent changed them; None when
    absent), `links` maps paths to symlink targets, `binaries` and `units` say what is installed,
    `current` holds the live bytes of files (for drift checks).
    """

    files: Mapping[str, bytes | None]
    links: Mapping[str, str | None]
    binaries: frozenset[str]
    units: frozenset[str]
    current: Mapping[str, bytes | None]
    # Inputs this process may not read (netplan's 0600 sources, read by the unprivileged
    # daemon): their contents above are None, so a plan from this view is not to be trusted
    # for the backend's own files.
    unreadable: frozenset[str] = frozenset()

    def text(self, path: str) -> str | None:
        data = self.files.get(path)
        return None if data is None else data.decode("utf-8", errors="replace")

    def link_target(self, path: str = RESOLV_CONF) -> str | None:
        """The absolute, normalised path the (pristine) symlink at `path` points to, or None.

        Backends read the target through their own `inputs` instead of through the link: an
        absolute link in a `--root` tree would lead out of the tree, and once the agent has
        replaced the link with a file, the pristine bytes of `path` itself are None."""
        target = self.links.get(path)
        if not target:
            return None
        if not target.startswith("/"):
            target = posixpath.join(posixpath.dirname(path), target)
        return posixpath.normpath(target)


@dataclass(frozen=True)
class BackendContext:
    """Everything `plan` needs: the host view, settings, and version string for file headers."""

    view: HostView
    settings: Settings
    agent_version: str
    vpc_resolver: str | None = None


class ResolverBackend(ABC):
    """One resolver manager. Higher `priority` wins when several detect themselves."""

    name: str = ""
    priority: int = 0
    # Paths whose pristine content the facts layer must read for this backend.
    inputs: tuple[str, ...] = (RESOLV_CONF,)
    # Binaries and units whose presence the facts layer reports in HostView.
    probes_binaries: tuple[str, ...] = ()
    probes_units: tuple[str, ...] = ()
    # Files this backend writes once but the manager itself rewrites later (dhclient-script on
    # a renew). Their bytes may drift legitimately: verify should judge them with
    # resolv_conf.check_invariants, not byte for byte.
    regenerated: tuple[str, ...] = ()

    @abstractmethod
    def detect(self, view: HostView) -> str | None:
        """Why this backend owns the resolver config here, or None when it does not."""

    @abstractmethod
    def plan(self, ctx: BackendContext) -> tuple[FileChange, ...]:
        """The files this backend writes. Pure."""

    def activate(self, ctx: BackendContext) -> tuple[Command, ...]:
        """Commands that make written files take effect, without restarting networking."""
        return ()

    def effective_resolv_conf(self, view: HostView) -> str:
        """Where the resolv.conf that processes read ends up (for verify)."""
        return RESOLV_CONF
