"""Facts + settings → Plan. Pure: no I/O, so every rendered file is testable as a golden file."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from . import __version__, agent_units, resolvers, tuning
from .bind_version import BindFeatures
from .host_facts import Facts
from .plan_model import FileChange, FileDiff, LinkChange, Plan, Validator
from .render import render
from .resolvers import BackendContext
from .rootfs import Root
from .settings import Settings


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
        forwarders=settings.all_forwarders,
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


def build_plan(facts: Facts, settings: Settings, service: ServiceInstall | None = None) -> Plan:
    """Everything the host should hold: bind's config, the resolver wiring, and the agent's
    own units when the service is installed."""
    backend = resolvers.get(facts.resolver.backend)
    ctx = backend_context(facts, settings)
    files = (render_bind_config(facts, settings),) + backend.plan(ctx)
    links: tuple[LinkChange, ...] = ()
    service_plan = None
    if service is not None:
        unit_files, links, service_plan = agent_units.plan_service(
            service.units, service.exec_path, start=service.start)
        files += unit_files
    return Plan(files=files, resolver_backend=backend.name, activate=backend.activate(ctx),
                bind_installed=facts.bind.installed, regenerated=frozenset(backend.regenerated),
                links=links, service=service_plan)


def diff(plan: Plan, root: Root) -> list[FileDiff]:
    """What applying `plan` would change on `root` (reads the live files)."""
    return [FileDiff(f.path, root.read_bytes(f.path), f.content) for f in plan.files]
