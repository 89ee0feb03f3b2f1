"""ISC dhclient writing /etc/resolv.conf itself (Amazon Linux 2, Debian/Ubuntu ifupdown without
the resolvconf package): on every lease `dhclient-script` rebuilds the file from the DHCP
options.

The agent adds `prepend domain-name-servers 127.0.0.1;` to the dhclient config, so every later
lease lists the cache first and the DHCP servers (the VPC resolver) after it, and it rewrites
the current resolv.conf now with the same result, so no renew (and no restart of networking) is
needed for the change to take effect. dhclient reads its config only when it starts, though: the
one running since boot renews with the old config. So the exit hook below also puts the cache
first when a lease's list lacks it (on EC2 every renew, half an hour apart, would otherwise drop
the cache from resolv.conf until the daemon's next repair).

Config paths: Debian, Ubuntu and Amazon Linux 2 all read /etc/dhcp/dhclient.conf (AL2 ships
none; the agent creates it). Red Hat's network-scripts pass `-cf /etc/dhcp/dhclient-eth0.conf`
instead when that file exists, so it gets the same block.

After a renew, dhclient-script's own rendering of resolv.conf replaces the agent's (no header;
on Debian no `options` line, on Red Hat the ifcfg file's RES_OPTIONS): `regenerated` tells verify
to judge that file by the invariants, not byte for byte.

The `options timeout:N attempts:M` line would be lost on each renew, and a dead cache would then
cost glibc's default 5 s per lookup before the fallback. dhclient.conf cannot say it: its
`supersede`/`prepend` statements act on DHCP options, and resolv.conf's `options` is none (the
usual trick of smuggling a newline into `supersede domain-name` relies on the script not quoting
it and breaks the search line). So the backend ships a hook that dhclient-script sources after it
wrote resolv.conf, in the layout the installed dhclient-script runs (`HOOK_LAYOUTS`: Debian's
dhclient-exit-hooks.d, Red Hat/Amazon Linux 2's dhclient.d/NAME.sh with NAME_config). The layout
is recognised from the script's own text, so a host is judged by what will actually run; when no
script is readable both hooks are planned (each is inert under the other script). The hook is a
planned FileChange, so `rollback` removes it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .. import resolv_conf
from ..plan_model import FileChange
from ..render import render
from . import managed_block
from .base import RESOLV_CONF, BackendContext, HostView, ResolverBackend
from .wired import render_resolv_conf

DHCLIENT_CONF = "/etc/dhcp/dhclient.conf"
PER_INTERFACE_CONFS = ("/etc/dhcp/dhclient-eth0.conf",)
PREPEND = f"prepend domain-name-servers {resolv_conf.CACHE_ADDRESS};"
# Debian installs the script as /sbin (merged /usr: the same file), Red Hat as /usr/sbin.
DHCLIENT_SCRIPTS = ("/usr/sbin/dhclient-script", "/sbin/dhclient-script")


@dataclass(frozen=True)
class HookLayout:
    """Where one family of dhclient-script looks for hooks, and how it runs them."""

    name: str
    path: str  # the hook file the agent writes
    marker: str  # text in dhclient-script showing it runs hooks from this layout
    style: str  # "exit-hooks": sourced at exit, acts on $reason; "dhclient.d": NAME_config
    mode: int  # dhclient.d runs only executable files; exit-hooks.d files are sourced
    how_it_runs: str


HOOK_LAYOUTS = (
    HookLayout("debian", "/etc/dhcp/dhclient-exit-hooks.d/dnscache-agent",
               "/etc/dhcp/dhclient-exit-hooks.d", "exit-hooks", 0o644,
               "Debian/Ubuntu: sourced by dhclient-script's exit_with_hooks for every reason."),
    HookLayout("redhat", "/etc/dhcp/dhclient.d/dnscache_agent.sh",
               "/dhclient.d/", "dhclient.d", 0o755,
               "Red Hat/Amazon Linux 2: dhclient-script runs NAME_config of executable "
               "dhclient.d/NAME.sh."),
)
OPTIONS_VARIABLE = "DNSCACHE_AGENT_OPTIONS"
CACHE_VARIABLE = "DNSCACHE_AGENT_CACHE"


def hook_layouts(script_text: str | None) -> tuple[HookLayout, ...]:
    """The hook layouts the installed dhclient-script runs; all of them when it is unknown."""
    if script_text:
        found = tuple(h for h in HOOK_LAYOUTS if h.marker in script_text)
        if found:
            return found[:1]
    return HOOK_LAYOUTS


class DhclientBackend(ResolverBackend):
    """resolv.conf is a regular file that dhclient-script rewrites on each lease."""

    name = "dhclient"
    priority = 40
    inputs = (RESOLV_CONF, DHCLIENT_CONF, *PER_INTERFACE_CONFS, *DHCLIENT_SCRIPTS)
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
        changes += self.hooks(ctx)
        changes.append(FileChange(RESOLV_CONF, render_resolv_conf(ctx, view.text(RESOLV_CONF)),
                                  mode=0o644, owner=self.name))
        return tuple(changes)

    def script_text(self, view: HostView) -> str | None:
        """The installed dhclient-script, if readable."""
        return next((t for t in (view.text(p) for p in DHCLIENT_SCRIPTS) if t), None)

    def hooks(self, ctx: BackendContext) -> list[FileChange]:
        """The hook that restores the resolver options after each lease."""
        s = ctx.settings.resolver
        options = f"timeout:{s.timeout} attempts:{s.attempts}"
        return [FileChange(h.path, render("dhclient-options-hook.sh.j2",
                                          agent_version=ctx.agent_version, options=options,
                                          cache_address=resolv_conf.CACHE_ADDRESS,
                                          style=h.style, how_it_runs=h.how_it_runs).encode(),
                           mode=h.mode, owner=self.name)
                for h in hook_layouts(self.script_text(ctx.view))]


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


def hook_options(hook_text: str) -> tuple[str, ...]:
    """The options words an installed hook file restores (empty when it names none)."""
    m = re.search(rf'^{OPTIONS_VARIABLE}="([^"]*)"', hook_text, re.M)
    return tuple(m.group(1).split()) if m else ()


def hook_cache(hook_text: str) -> str:
    """The cache address an installed hook file puts first."""
    m = re.search(rf'^{CACHE_VARIABLE}="([^"]*)"', hook_text, re.M)
    return m.group(1) if m else resolv_conf.CACHE_ADDRESS


def apply_options_hook(resolv_text: str, options: Sequence[str],
                       cache: str = resolv_conf.CACHE_ADDRESS) -> str:
    """What the hook does to the resolv.conf dhclient-script just wrote: the cache becomes the
    first nameserver (once) when the lease's list lacks it; rotate, timeout and attempts leave
    every options line (one left empty goes), and one line of `options` ends the file."""
    out = []
    cache_first = False
    for line in resolv_text.splitlines():
        server = re.match(r"nameserver\s+(\S+)", line)
        if server:
            if server.group(1) == cache:
                if cache_first:
                    continue
            elif not cache_first:
                out.append(f"nameserver {cache}")
            cache_first = True
            out.append(line)
            continue
        if re.match(r"options(\s|$)", line):
            kept = [w for w in line.split()[1:]
                    if w != "rotate" and not w.startswith(("timeout:", "attempts:"))]
            if kept:
                out.append("options " + " ".join(kept))
            continue
        out.append(line)
    out.append("options " + " ".join(options))
    return "".join(f"{line}\n" for line in out)


def simulate_dhclient_script(conf_text: str, lease: Lease, old_resolv_conf: str = "",
                             hook_text: str | None = None) -> str:
    """The resolv.conf Debian's /sbin/dhclient-script (make_resolv_conf) writes for `lease`,
    then the agent's exit hook when `hook_text` (the installed hook file) is given."""
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
    text = "".join(f"{line}\n" for line in out)
    if hook_text is not None:
        text = apply_options_hook(text, hook_options(hook_text), hook_cache(hook_text))
    return text
