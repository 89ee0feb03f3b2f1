"""systemd-resolved (Ubuntu 18.04+, Amazon Linux 2023, Debian with systemd-resolved).

Two things point at the cache:

1. A drop-in /etc/systemd/resolved.conf.d/dnscache-agent.conf: `DNS=127.0.0.1 <fallback>` and
   `Domains=~.`, so clients of resolved's stub (127.0.0.53), nss-resolve and D-Bus go through
   the cache, and the VPC resolver is the next server if the cache stops answering.
2. /etc/resolv.conf becomes a regular file listing 127.0.0.1 first and the VPC resolver after
   it, with a short timeout. It is rendered from resolved's "uplink" file
   /run/systemd/resolve/resolv.conf, which holds the servers and search domains resolved learnt
   from DHCP.

Why replace the symlink rather than keep the stub: glibc then asks bind directly, the fallback
is glibc's own (so a dead resolved cannot take DNS down with it), and `options timeout:1` makes a
dead cache cost a second, not five; resolved's files carry no options line. This also covers
Amazon Linux 2023's direct-to-VPC mode, where /etc/resolv.conf links to the uplink file and
lists the VPC resolver only: the link is replaced the same way. resolved never writes
/etc/resolv.conf itself, so a DHCP renew cannot undo this; `rollback` puts the symlink back.

Port 53 is not contended: resolved's stub listens on 127.0.0.53 (and 127.0.0.54), bind on
127.0.0.1 only. resolved does not cache answers from a localhost server (CacheFromLocalhost=no):
bind is meant to be the one cache.

Where NetworkManager also runs, it would rewrite a regular /etc/resolv.conf; a conf.d drop-in
with `rc-manager=unmanaged` keeps it pushing servers to resolved but off the file.

Activation: `systemctl try-reload-or-restart systemd-resolved` (a restart of resolved is not a
restart of networking: links and leases stay up), and a reload of NetworkManager if it runs.
"""

from __future__ import annotations

from .. import resolv_conf
from ..plan_model import Command, FileChange
from ..render import render
from .base import RESOLV_CONF, BackendContext, HostView, ResolverBackend
from .wired import render_resolv_conf

RESOLVED_DIR = "/run/systemd/resolve"
UPLINK = f"{RESOLVED_DIR}/resolv.conf"
STUB = f"{RESOLVED_DIR}/stub-resolv.conf"
STATIC_STUB = "/usr/lib/systemd/resolv.conf"
RESOLVED_CONF = "/etc/systemd/resolved.conf"
DROP_IN = "/etc/systemd/resolved.conf.d/dnscache-agent.conf"
NM_DROP_IN = "/etc/NetworkManager/conf.d/dnscache-agent.conf"
UNIT = "systemd-resolved.service"
NM_UNIT = "NetworkManager.service"
RESOLVED_TARGETS = (UPLINK, STUB, STATIC_STUB, "/lib/systemd/resolv.conf")
MANAGED_MARKER = "man:systemd-resolved(8)"


def upstream_text(view: HostView) -> str:
    """What resolved knows about the upstream servers and search list, before the agent: the
    uplink file, else whatever /etc/resolv.conf held or pointed to."""
    for path in (UPLINK, view.link_target()):
        if path and view.text(path):
            return view.text(path) or ""
    return view.text(RESOLV_CONF) or ""


class ResolvedBackend(ResolverBackend):
    """/etc/resolv.conf belongs to systemd-resolved (stub or uplink symlink)."""

    name = "systemd-resolved"
    priority = 70
    inputs: tuple[str, ...] = (RESOLV_CONF, UPLINK, STUB, RESOLVED_CONF)
    probes_binaries: tuple[str, ...] = ("resolvectl", "systemd-resolve")
    probes_units: tuple[str, ...] = (UNIT, NM_UNIT)

    def detect(self, view: HostView) -> str | None:
        target = view.link_target()
        if target in RESOLVED_TARGETS:
            mode = ("direct-to-VPC mode: processes ask the uplink servers directly"
                    if target == UPLINK else "processes ask the stub on 127.0.0.53")
            return f"{RESOLV_CONF} is a symlink to {target} ({mode})"
        text = view.text(RESOLV_CONF) or ""
        if UNIT in view.units and not target and MANAGED_MARKER in text:
            return f"{RESOLV_CONF} is a copy of systemd-resolved's file and {UNIT} is installed"
        return None

    def wired(self, ctx: BackendContext) -> bytes:
        return render_resolv_conf(ctx, upstream_text(ctx.view))

    def plan(self, ctx: BackendContext) -> tuple[FileChange, ...]:
        content = self.wired(ctx)
        servers = resolv_conf.parse(content.decode()).nameservers
        drop_in = render("resolved-dnscache.conf.j2", agent_version=ctx.agent_version,
                         servers=servers)
        changes = [FileChange(DROP_IN, drop_in.encode(), mode=0o644, owner=self.name),
                   FileChange(RESOLV_CONF, content, mode=0o644, owner=self.name)]
        if NM_UNIT in ctx.view.units:
            nm = render("networkmanager-dnscache.conf.j2", agent_version=ctx.agent_version,
                        dns_none=False)
            changes.append(FileChange(NM_DROP_IN, nm.encode(), mode=0o644, owner=self.name))
        return tuple(changes)

    def activate(self, ctx: BackendContext) -> tuple[Command, ...]:
        commands = [Command(("systemctl", "try-reload-or-restart", UNIT))]
        if NM_UNIT in ctx.view.units:
            commands.append(Command(("systemctl", "try-reload-or-restart", NM_UNIT)))
        return tuple(commands)

    def effective_resolv_conf(self, view: HostView) -> str:
        return RESOLV_CONF
