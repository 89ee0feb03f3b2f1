"""Facts + settings → Plan. Pure: no I/O, so every rendered file is testable as a golden file."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from . import __version__, agent_units, resolvers, tuning
from .bind_version import BindFeatures
from .host_facts import Facts
from .plan_model import PACER_OWNER, FileChange, FileDiff, LinkChange, PacerPlan, Plan, Validator
from .render import render
from .resolvers import BackendContext
from .rootfs import Root
from .settings import Settings


def named_forwarders(settings: Settings) -> tuple[str, ...]:
    """Where named forwards: the pacer when it is on (it holds the packet budget and sends to
    the Amazon resolver), else the resolvers themselves. Entries are bind syntax."""
    if settings.pacer.enabled:
        return (f"{settings.pacer.listen} port {settings.pacer.port}",)
    return settings.all_forwarders


def render_bind_config(facts: Facts, settings: Settings) -> FileChange:
    """The named config file the agent owns on this platform."""
    profile = facts.profile
    tune = tuning.derive(facts.resources.cpus, facts.resources.memory_bytes,
                         max_cache_size_mb=settings.cache.max_cache_size_mb,
                         recursive_clients=settings.cache.recursive_clients)
    template = "named.conf.redhat.j2" if profile.owns_main_config else "named.conf.options.j2"
    text = render(
        template,
        agent_version=__version__,
        # A comment line in named.conf: a newline in a --config path must not end it.
        settings_source=settings.source.encode("unicode_escape").decode("ascii"),
        profile=profile,
        forwarders=named_forwarders(settings),
        cache=settings.cache,
        tuning=tune,
        features=BindFeatures(facts.bind.version),
    )
    return FileChange(profile.options_path, text.encode(), mode=0o644,
                      validator=Validator.NAMED_CHECKCONF, owner="bind", group=profile.user)


def vpc_resolver(facts: Facts) -> str | None:
    """The primary interface's VPC base+2 resolver, a fallback when resolv.conf had none."""
    if facts.ec2 and facts.ec2.interfaces:
        return facts.ec2.interfaces[0].vpc_resolver
    return None


def backend_context(facts: Facts, settings: Settings) -> BackendContext:
    return BackendContext(view=facts.view, settings=settings, agent_version=__version__,
                          vpc_resolver=vpc_resolver(facts))


@dataclass(frozen=True)
class ServiceInstall:
    """The agent's units are (to be) installed, running `exec_path`; `start` for
    install-service's `enable --now`. `units` maps unit names to their shipped text."""

    exec_path: str
    units: Mapping[str, str]
    start: bool = False


#: The settings the pacer runs with, rendered from agent.toml by the plan: a planned file, so
#: the transaction journals it, an undone apply restores it (and restarts the pacer on it),
#: and a change of the pacer's settings is a changed file that restarts it.
PACER_CONFIG = "/etc/dnscache-agent/pacer.toml"


def render_pacer_config(settings: Settings) -> bytes:
    """The pacer's own settings file (pure): a subset of agent.toml's schema, so the pacer
    loads it like any settings file. Values were validated when agent.toml was loaded."""
    p = settings.pacer
    lines = [
        "# Managed by dnscache-agent: the settings `dnscache-agent pacer` runs with,",
        f"# rendered from {settings.source.encode('unicode_escape').decode('ascii')}. "
        "Change that file and run `dnscache-agent apply`.",
        "[cache]",
        f"forwarders = {json.dumps(list(settings.cache.forwarders))}",
        f"ipv6_forwarder = {json.dumps(settings.cache.ipv6_forwarder)}",
        "",
        "[budget]",
        f"limit_pps = {settings.budget.limit_pps}",
        "",
        "[pacer]",
        "enabled = true",
        f"listen = {json.dumps(p.listen)}",
        f"port = {p.port}",
        f"margin_pct = {float(p.margin_pct)!r}",
        f"burst = {p.burst}",
        f"stats_file = {json.dumps(p.stats_file)}",
        f"warm_file = {json.dumps(p.warm_file)}",
        f"warm_seed = {json.dumps(p.warm_seed)}",
        f"warm_max = {p.warm_max}",
    ]
    return ("\n".join(lines) + "\n").encode()


def plan_pacer(facts: Facts, settings: Settings, command: str,
               ) -> tuple[PacerPlan | None, tuple[FileChange, ...], tuple[LinkChange, ...]]:
    """The pacer, when enabled: its settings file, and its unit (with the enable link) where
    systemd runs services, else the process the agent supervises. `command` is the agent's
    command for ExecStart=."""
    if not settings.pacer.enabled:
        return None, (), ()
    # The pacer's own entry point (`python -m dnscache_agent.pacer`, `dnscache-agent-pacer`):
    # the CLI's other imports would cost it 16 MB.
    argv: tuple[str, ...] = ("--config", PACER_CONFIG)
    config = FileChange(PACER_CONFIG, render_pacer_config(settings), mode=0o644,
                        owner=PACER_OWNER)
    digest = pacer_digest(settings)
    if facts.init != "systemd":
        return (PacerPlan(settings.pacer.listen, settings.pacer.port, None, argv, digest),
                (config,), ())
    unit = agent_units.PACER_UNIT
    text = agent_units.shipped_units()[unit].replace(
        f"{agent_units.SHIPPED_COMMAND}-pacer\n",
        f"{agent_units.SHIPPED_COMMAND}-pacer --config {PACER_CONFIG}\n")
    files, links = agent_units.plan_units({unit: text}, command, owner=PACER_OWNER)
    return (PacerPlan(settings.pacer.listen, settings.pacer.port, unit, argv, digest),
            (config,) + files, links)


def pacer_digest(settings: Settings) -> str:
    """A short digest of everything the pacer's behaviour depends on (pure)."""
    relevant = {"pacer": dataclasses.asdict(settings.pacer),
                "forwarders": list(settings.all_forwarders),
                "limit_pps": settings.budget.limit_pps}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def build_plan(facts: Facts, settings: Settings, service: ServiceInstall | None = None, *,
               command: str = agent_units.SHIPPED_COMMAND) -> Plan:
    """Everything the host should hold: the pacer, bind's config, the resolver wiring, and
    the agent's own units when the service is installed. `command` is this installation's
    `dnscache-agent` (for units' ExecStart=)."""
    backend = resolvers.get(facts.resolver.backend)
    ctx = backend_context(facts, settings)
    pacer, pacer_files, links = plan_pacer(facts, settings, command)
    files = pacer_files + (render_bind_config(facts, settings),) + backend.plan(ctx)
    service_plan = None
    if service is not None:
        unit_files, unit_links, service_plan = agent_units.plan_service(
            service.units, service.exec_path, start=service.start)
        files += unit_files
        links += unit_links
    return Plan(files=files, resolver_backend=backend.name, activate=backend.activate(ctx),
                bind_installed=facts.bind.installed, regenerated=frozenset(backend.regenerated),
                links=links, service=service_plan, pacer=pacer)


def diff(plan: Plan, root: Root) -> list[FileDiff]:
    """What applying `plan` would change on `root` (reads the live files)."""
    return [FileDiff(f.path, root.read_bytes(f.path), f.content) for f in plan.files]
