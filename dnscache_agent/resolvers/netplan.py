"""Ubuntu's netplan (with systemd-networkd and systemd-resolved): everything the
systemd-resolved backend does, plus a netplan override, so the cache is also in each interface's
nameservers in the config netplan generates, surviving `netplan apply` and reboots.

netplan concatenates sequences across files: when the source file has no static nameservers
(cloud-init's DHCP config, the EC2 case) the override's 127.0.0.1 comes first on the link, ahead
of DHCP's servers; when it lists static ones, they stay ahead of it (measured with netplan 0.106,
tests/system/test_netplan.py). Lookups do not depend on that order: /etc/resolv.conf is the
agent's file, and resolved routes every name through the global `DNS=127.0.0.1 ...` with
`Domains=~.`.

The override /etc/netplan/99-dnscache-agent.yaml names the same interface ids as the existing
netplan files (netplan merges definitions by id; a new id matching the same NIC would be a second
definition whose generated .network file sorts first and has no DHCP). `nameservers.addresses`
lists 127.0.0.1 and the fallback; DHCP's own servers and search domains still apply.

Activation is `netplan generate` (it validates the YAML, so a bad file fails the transaction and
is rolled back, and writes networkd's files for the next start) and resolved's reload. Not
`netplan apply` and not `networkctl reload`: both reconfigure the links (apply can bounce them and
renew leases). They are not needed: the running resolved already routes every name to 127.0.0.1
through the global drop-in, and networkd reads the generated files at the next boot.
"""

from __future__ import annotations

import re

from .. import resolv_conf
from ..plan_model import Command, FileChange
from ..render import render
from .base import BackendContext, HostView
from .resolved import ResolvedBackend

NETPLAN_OVERRIDE = "/etc/netplan/99-dnscache-agent.yaml"
# The files cloud images and installers write. (HostView reads fixed paths; see the report.)
NETPLAN_SOURCES = (
    "/etc/netplan/50-cloud-init.yaml",
    "/etc/netplan/00-installer-config.yaml",
    "/etc/netplan/01-netcfg.yaml",
    "/etc/netplan/01-network-manager-all.yaml",
)


def ethernet_ids(yaml_text: str) -> list[str]:
    """The ids under `network: ethernets:` in a block-style netplan file (what cloud-init and the
    installers write). Flow-style mappings are not parsed; they yield no ids."""
    ids: list[str] = []
    section_indent: int | None = None
    child_indent: int | None = None
    for raw in yaml_text.splitlines():
        line = raw.split(" #")[0].rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        key = line.strip()
        if section_indent is None:
            if key == "ethernets:":
                section_indent = indent
            continue
        if indent <= section_indent:
            section_indent, child_indent = (indent, None) if key == "ethernets:" else (None, None)
            continue
        if child_indent is None:
            child_indent = indent
        if indent == child_indent:
            m = re.match(r"""^(?:"([^"]+)"|'([^']+)'|([^:\s]+)):\s*$""", key)
            if m:
                ids.append(next(g for g in m.groups() if g))
    return ids


class NetplanBackend(ResolvedBackend):
    """netplan configures the links, systemd-resolved owns /etc/resolv.conf."""

    name = "netplan"
    priority = 80
    inputs = (*ResolvedBackend.inputs, *NETPLAN_SOURCES)
    probes_binaries = (*ResolvedBackend.probes_binaries, "netplan")
    probes_units = ResolvedBackend.probes_units

    def detect(self, view: HostView) -> str | None:
        resolved = super().detect(view)
        sources = [p for p in NETPLAN_SOURCES if view.files.get(p) is not None]
        if not resolved or "netplan" not in view.binaries or not sources:
            return None
        return f"netplan configures the links ({', '.join(sources)}); {resolved}"

    def interfaces(self, view: HostView) -> tuple[list[str], list[str]]:
        """(ids, source files) of the ethernet definitions the override extends."""
        ids: list[str] = []
        sources: list[str] = []
        for path in NETPLAN_SOURCES:
            found = ethernet_ids(view.text(path) or "")
            if found:
                sources.append(path)
                ids += [i for i in found if i not in ids]
        return ids, sources

    def plan(self, ctx: BackendContext) -> tuple[FileChange, ...]:
        changes = super().plan(ctx)
        ids, sources = self.interfaces(ctx.view)
        if not ids:
            return changes
        servers = resolv_conf.parse(self.wired(ctx).decode()).nameservers
        text = render("netplan-dnscache.yaml.j2", agent_version=ctx.agent_version, ids=ids,
                      servers=servers, sources=sources)
        # netplan warns about (and newer versions refuse) group- or world-readable files.
        return changes + (FileChange(NETPLAN_OVERRIDE, text.encode(), mode=0o600,
                                     owner=self.name),)

    def activate(self, ctx: BackendContext) -> tuple[Command, ...]:
        return (Command(("netplan", "generate")),) + super().activate(ctx)
