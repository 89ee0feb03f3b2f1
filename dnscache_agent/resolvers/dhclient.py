"""ISC dhclient writing /etc/resolv.conf itself (Amazon Linux 2, Debian/Ubuntu ifupdown without
the resolvconf package): on every lease `dhclient-script` rebuilds the file from the DHCP
options.

The agent adds `prepend domain-name-servers 127.0.0.1;` to the dhclient config, so every later
lease lists the cache first and the DHCP servers (the VPC resolver) after it, and it rewrites
the current resolv.conf now with the same result, so no renew (and no restart of networking) is
needed for the change to take effect.

Config paths: Debian, Ubuntu and Amazon Linux 2 all read /etc/dhcp/dhclient.conf (AL2 ships
none; the agent creates it). Red Hat's network-scripts pass `-cf /etc/dhcp/dhclient-eth0.conf`
instead when that file exists, so it gets the same block.

After a renew, dhclient-script's own rendering of resolv.conf replaces the agent's (no header,
and no `options` line on Debian): `regenerated` tells verify to judge that file by the
invariants, not byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .. import resolv_conf
from ..plan_model import FileChange
from . import managed_block
from .base import RESOLV_CONF, BackendContext, HostView, ResolverBackend
from .wired import render_resolv_conf

DHCLIENT_CONF = "/etc/dhcp/dhclient.conf"
PER_INTERFACE_CONFS = ("/etc/dhcp/dhclient-eth0.conf",)
PREPEND = f"prepend domain-name-servers {resolv_conf.CACHE_ADDRESS};"


class DhclientBackend(ResolverBackend):
    """resolv.conf is a regular file that dhclient-script rewrites on each lease."""

    name = "dhclient"
    priority = 40
    inputs = (RESOLV_CONF, DHCLIENT_CONF, *PER_INTERFACE_CONFS)
    probes_binaries = ("dhclient",)
    regenerated = (RESOLV_CONF,)

    def detect(self, view: HostView) -> str | None:
        if "dhclient" not in view.binaries or view.link_target():
            return None
        text = view.text(RESOLV_CONF) or ""
        marker = " (its header names dhclient-script)" if "dhclient-script" in text else ""
        return (f"dhclient is installed and {RESOLV_CONF} is a regular file that "
                f"dhclient-script rewrites on each lease{marker}")

    def configs(self, view: HostView) -> tuple[str, ...]:
        """The dhclient config files to edit: the main one always, per-interface ones if present."""
        return (DHCLIENT_CONF,) + tuple(p for p in PER_INTERFACE_CONFS
                                        if view.files.get(p) is not None)

    def plan(self, ctx: BackendContext) -> tuple[FileChange, ...]:
        view = ctx.view
        changes = [FileChange(path, managed_block.with_block(view.text(path), [PREPEND]).encode(),
                              mode=0o644, owner=self.name)
                   for path in self.configs(view)]
        changes.append(FileChange(RESOLV_CONF, render_resolv_conf(ctx, view.text(RESOLV_CONF)),
                                  mode=0o644, owner=self.name))
        return tuple(changes)


# --- a pure model of dhclient + Debian's dhclient-script, for tests ------------------------

@dataclass(frozen=True)
class Lease:
    """The DHCP options dhclient-script uses for resolv.conf."""

    servers: tuple[str, ...]
    domain_name: str = ""
    domain_search: str = ""


def name_servers(conf_text: str, lease_servers: Sequence[str]) -> list[str]:
    """`$new_domain_name_servers` after dhclient applies the config's policy statements for
    domain-name-servers (the last default/supersede/prepend/append statement wins)."""
    text = re.sub(r"#.*", "", conf_text)
    policy, values = "", []
    for stmt in text.split(";"):
        m = re.match(r"^\s*(default|supersede|prepend|append)\s+domain-name-servers\s+(.+)$",
                     stmt.strip(), re.S)
        if m:
            policy = m.group(1)
            values = [v.strip() for v in m.group(2).split(",") if v.strip()]
    lease = list(lease_servers)
    if policy == "supersede":
        return values
    if policy == "prepend":
        return values + lease
    if policy == "append":
        return lease + values
    if policy == "default" and not lease:
        return values
    return lease


def simulate_dhclient_script(conf_text: str, lease: Lease, old_resolv_conf: str = "") -> str:
    """The resolv.conf Debian's /sbin/dhclient-script (make_resolv_conf) writes for `lease`."""
    servers = name_servers(conf_text, lease.servers)
    out = []
    if lease.domain_name:
        out.append(f"domain {lease.domain_name.split()[0]}")
    if lease.domain_search:
        search = lease.domain_search
        if lease.domain_name and not any(d in (lease.domain_name, lease.domain_name + ".")
                                         for d in search.split()):
            search = f"{lease.domain_name} {search}"
        out.append(f"search {search}")
    elif lease.domain_name:
        out.append(f"search {lease.domain_name}")
    if servers:
        out += [f"nameserver {s}" for s in servers]
    else:
        out += [line for line in old_resolv_conf.splitlines()
                if line.lstrip().lower().startswith("nameserver")]
    return "".join(f"{line}\n" for line in out)
