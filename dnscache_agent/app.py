"""Composition: builds the collaborators (root, settings, facts, service, transaction) from the
command-line options once, so every subcommand is wired the same way."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from . import agent_units, host_facts, planner, resolv_conf, resolvers
from .checkpoint import StateStore
from .commands import Runner
from .errors import ApplyError, ConfigError, DnscacheError
from .health import Health, query_once, wait_healthy
from .host_facts import Facts
from .imds import ImdsClient
from .pacer.stats_file import PacerStats, read_pacer_stats
from .pacer_service import PacerService, pacer_for_host, port_open, probe
from .plan_model import PacerPlan, Plan
from .platform import profile_for
from .rootfs import Root
from .services import NamedService, for_host, units_for_host
from .settings import DEFAULT_CONFIG_PATH, AgentSettings, Settings, load, with_overrides
from .statelock import StateLock
from .stats.budget import BudgetTracker
from .stats.collector import BindStatsCollector
from .stats.ena import EthtoolReader, OptionalEnaReader
from .stats.routing import interface_for
from .stats.sampler import Sampler
from .transaction import Transaction
from .verify import VerifyReport, ask, listening_sockets, local_addresses, verify

log = logging.getLogger(__name__)

#: Checkpoint meta key of a backend forced on the command line.
BACKEND_META = "resolver_backend"


@dataclass(frozen=True)
class Options:
    root: str = "/"
    config: str | None = None
    resolver_backend: str | None = None
    imds_endpoint: str | None = None
    install_packages: bool = False
    # rollback: an invalid or missing agent.toml must not stop it (defaults are used).
    tolerate_bad_config: bool = False
    # --bind-version: named's version for a --root tree (its package database is read
    # otherwise; never the build host's named).
    bind_version: str | None = None


class Agent:
    """One host, as the command line describes it."""

    def __init__(self, opts: Options, runner: Runner | None = None) -> None:
        self.opts = opts
        self.root = Root(Path(opts.root))
        self.runner = runner or Runner()
        config = opts.config
        required = config is not None
        if config is None:
            config = str(self.root.path(DEFAULT_CONFIG_PATH))
        try:
            settings = load(config, required=required, environ=os.environ)
        except ConfigError as exc:
            if not opts.tolerate_bad_config:
                raise
            log.warning("%s; rolling back with the default settings (state in %s)", exc,
                        AgentSettings().state_dir)
            settings = load(None, environ=os.environ)
        if not required:
            # Rendered file headers name the settings file as the host sees it, not as
            # <root>/etc/...: an image built with --root must plan the same bytes as the
            # instance that boots from it.
            settings = replace(settings, source=DEFAULT_CONFIG_PATH)
        overrides: dict[str, dict[str, object]] = {}
        if opts.imds_endpoint:
            overrides["imds"] = {"endpoint": opts.imds_endpoint}
        backend = opts.resolver_backend or (
            self._remembered_backend(settings) if settings.resolver.backend == "auto" else None)
        if backend:
            overrides["resolver"] = {"backend": backend}
        if not self.root.is_live and not opts.imds_endpoint:
            # A staged tree (image build) is not the machine the agent runs on: the build
            # host's instance facts would tune the image for the wrong instance.
            overrides["imds"] = {"enabled": False}
        self.settings: Settings = with_overrides(settings, overrides, "command line")
        self._facts: Facts | None = None

    @property
    def facts(self) -> Facts:
        if self._facts is None:
            imds = ImdsClient(self.settings.imds.endpoint, self.settings.imds.timeout)
            self._facts = host_facts.gather(self.root, self.settings, runner=self.runner,
                                            imds=imds, bind_version=self.opts.bind_version)
        return self._facts

    def refresh(self) -> None:
        self._facts = None

    @property
    def service(self) -> NamedService:
        return for_host(self.root, self.facts.profile, self.runner)

    def installed_service(self, *, exec_path: str | None = None,
                          start: bool = False) -> planner.ServiceInstall | None:
        """The agent's units as the plan should hold them: present when `install-service`
        asks (`exec_path` given) or when the main unit is already on the host (then its
        `ExecStart=` command is kept, so a repair rewrites the same units)."""
        if exec_path is None:
            text = self.root.read_text(f"{agent_units.UNIT_DIR}/{agent_units.MAIN_UNIT}")
            if text is None:
                return None
            exec_path = agent_units.exec_path_of(text) or agent_units.installed_command()
        return planner.ServiceInstall(exec_path, agent_units.shipped_units(), start)

    def plan(self, service: planner.ServiceInstall | None = None) -> Plan:
        """The plan for this host; with the agent's units when installed (or `service`)."""
        service = service or self.installed_service()
        command = service.exec_path if service else agent_units.installed_command()
        return planner.build_plan(self.facts, self.settings, service, command=command)

    def pacer_service(self, plan: PacerPlan) -> PacerService:
        return pacer_for_host(self.root, plan, self.runner)

    def pacer_status(self, plan: Plan) -> Callable[[], tuple[bool, str]] | None:
        """verify's live pacer check for this plan (None when there is no pacer to check)."""
        pacer_plan = plan.pacer
        if pacer_plan is None or not self.root.is_live:
            return None

        def status() -> tuple[bool, str]:
            where = f"{pacer_plan.listen}:{pacer_plan.port}"
            svc = self.pacer_service(pacer_plan)
            if not svc.is_active():
                return False, f"not running ({svc.name})"
            if not port_open(pacer_plan):
                return False, f"running ({svc.name}) but nothing accepts on {where}"
            record = self.state_store().original.meta.get("pacer")
            ran = record.get("digest") if isinstance(record, dict) else None
            if ran and ran != pacer_plan.digest:
                return False, (f"running ({svc.name}) with older settings ({ran}, the plan "
                               f"has {pacer_plan.digest}): it needs a restart")
            return True, f"running ({svc.name}), listening on {where}"

        return status

    def baseline_health(self) -> Health | None:
        """The health name asked of the host's own resolver, as the pre-agent resolv.conf
        names it (the cache and the pacer bypassed): tells a dark VPC resolver from a change
        that broke resolution. None when that file names no resolver."""
        original = resolv_conf.parse(self.facts.view.text(resolvers.base.RESOLV_CONF) or "")
        servers = [ns for ns in original.nameservers if not resolv_conf.is_loopback(ns)]
        if not servers:
            return None
        return query_once(self.settings.cache.health_name, server=servers[0], timeout=2.0)

    def pacer_health(self, plan: PacerPlan) -> Health:
        return probe(plan, self.settings.cache.health_name)

    def health(self) -> Health:
        return wait_healthy(self.settings.cache.health_name)

    def transaction(self) -> Transaction:
        return Transaction(self.root, self.facts.profile, runner=self.runner,
                           service=self.service, health_check=self.health,
                           store=self.state_store(),
                           units=units_for_host(self.root, self.runner),
                           pacer_factory=self.pacer_service, pacer_health=self.pacer_health,
                           baseline_check=self.baseline_health)

    def service_plan(self, service: planner.ServiceInstall) -> Plan:
        """Only the agent's units (install-service): needs no facts, so an image build
        installs them without planning the instance's bind config."""
        files, links, service_plan = agent_units.plan_service(
            service.units, service.exec_path, start=service.start)
        return Plan(files=files, resolver_backend="", links=links, service=service_plan)

    def bare_transaction(self) -> Transaction:
        """A transaction that needs no facts beyond the platform (from os-release): no
        `named -V`, no IMDS, no plan. Rollback works from the checkpoint alone with it (even
        when the settings are broken), and install-service with the units alone."""
        profile = profile_for(host_facts.read_os_release(self.root))
        return Transaction(self.root, profile, runner=self.runner,
                           service=for_host(self.root, profile, self.runner),
                           health_check=self.health, store=self.state_store(),
                           units=units_for_host(self.root, self.runner))

    def _remembered_backend(self, settings: Settings) -> str | None:
        """A backend forced with `apply --resolver-backend`, kept in the checkpoint so the
        daemon and the repair unit plan with it too (agent.toml's explicit choice wins)."""
        try:
            value = StateStore(self.root, settings.agent.state_dir).original.meta.get(
                BACKEND_META)
        except DnscacheError:
            return None  # a damaged state directory is reported by the command that needs it
        return value if isinstance(value, str) else None

    def remember_backend(self, name: str) -> None:
        original = self.state_store().original
        if original.exists and original.meta.get(BACKEND_META) != name:
            original.set_meta(BACKEND_META, name)

    def lock(self) -> StateLock:
        """The state directory's lock: one change at a time."""
        return StateLock(self.root.path(self.settings.agent.state_dir))

    def state_store(self) -> StateStore:
        return StateStore(self.root, self.settings.agent.state_dir)

    def install_bind(self) -> None:
        """Install the platform's bind package (only when asked with --install-packages)."""
        argv = list(self.facts.profile.install_command)
        if not self.root.is_live:
            argv = ["chroot", str(self.root.base), *argv]
        env_prefix = ["env", "DEBIAN_FRONTEND=noninteractive"]
        result = self.runner.run(env_prefix + argv, timeout=900)
        if not result.ok:
            raise ApplyError(f"{' '.join(argv)}: {result.first_error_line()}")
        self.refresh()

    def stats_channel(self) -> tuple[bool, str]:
        """Whether the statistics channel answers, with the same size and time bounds as a
        statistics fetch (anything local may be listening on that port)."""
        return BindStatsCollector(self.settings.cache.statistics_port).probe()

    def sampler(self) -> Sampler:
        """The once-a-second statistics reader for `stats` and the daemon."""
        import psutil

        forwarder = self.settings.all_forwarders[0]
        interfaces = tuple(sorted(n for n in psutil.net_if_stats() if n != "lo"))
        upstream = interface_for(forwarder, default=interfaces[0] if interfaces else "eth0")
        return Sampler(
            BindStatsCollector(self.settings.cache.statistics_port),
            OptionalEnaReader(EthtoolReader(self.runner)),
            BudgetTracker(self.settings.budget.limit_pps,
                          warn_headroom_pct=self.settings.budget.warn_headroom_pct),
            upstream_interface=upstream, interfaces=interfaces,
            pacer=self.pacer_stats_reader())

    def pacer_stats_reader(self) -> Callable[[], PacerStats | None] | None:
        """Reads the pacer's stats file (its figures, and what it sent upstream, which is what
        the budget counts while named forwards to it); None when the pacer is off."""
        if not self.settings.pacer.enabled:
            return None
        path = self.root.path(self.settings.pacer.stats_file)
        return lambda: read_pacer_stats(path)

    def named_enabled(self) -> bool:
        """Whether the init system starts named at boot (systemd hosts only)."""
        return self.runner.run(("systemctl", "is-enabled", "--quiet", self.facts.profile.unit),
                               timeout=30).ok

    def verify(self) -> VerifyReport:
        live = self.root.is_live
        systemd = live and self.service.name == "systemd"
        plan = self.plan()
        return verify(self.facts, self.settings, plan, self.root,
                      pacer=self.pacer_status(plan),
                      named_active=self.service.is_active if live else None,
                      health=self.health if live else None,
                      stats_ok=self.stats_channel if live else None,
                      named_enabled=self.named_enabled if systemd else None,
                      listeners=listening_sockets if live else None,
                      query=ask if live else None,
                      addresses=local_addresses if live else None)
