"""Composition: builds the collaborators (root, settings, facts, service, transaction) from the
command-line options once, so every subcommand is wired the same way."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import requests

from . import host_facts, planner
from .checkpoint import StateStore
from .commands import Runner
from .errors import ApplyError
from .health import Health, wait_healthy
from .host_facts import Facts
from .imds import ImdsClient
from .plan_model import Plan
from .rootfs import Root
from .services import NamedService, for_host
from .settings import DEFAULT_CONFIG_PATH, Settings, load, with_overrides
from .stats.budget import BudgetTracker
from .stats.collector import BindStatsCollector
from .stats.ena import EthtoolReader, OptionalEnaReader
from .stats.routing import interface_for
from .stats.sampler import Sampler
from .transaction import Transaction
from .verify import VerifyReport, ask, listening_sockets, local_addresses, verify


@dataclass(frozen=True)
class Options:
    root: str = "/"
    config: str | None = None
    resolver_backend: str | None = None
    imds_endpoint: str | None = None
    install_packages: bool = False


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
        settings = load(config, required=required, environ=os.environ)
        if not required:
            # Rendered file headers name the settings file as the host sees it, not as
            # <root>/etc/...: an image built with --root must plan the same bytes as the
            # instance that boots from it.
            settings = replace(settings, source=DEFAULT_CONFIG_PATH)
        overrides: dict[str, dict[str, object]] = {}
        if opts.imds_endpoint:
            overrides["imds"] = {"endpoint": opts.imds_endpoint}
        if opts.resolver_backend:
            overrides["resolver"] = {"backend": opts.resolver_backend}
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
                                            imds=imds)
        return self._facts

    def refresh(self) -> None:
        self._facts = None

    @property
    def service(self) -> NamedService:
        return for_host(self.root, self.facts.profile, self.runner)

    def plan(self) -> Plan:
        return planner.build_plan(self.facts, self.settings)

    def health(self) -> Health:
        return wait_healthy(self.settings.cache.health_name)

    def transaction(self) -> Transaction:
        return Transaction(self.root, self.facts.profile, runner=self.runner,
                           service=self.service, health_check=self.health,
                           store=StateStore(self.root, self.settings.agent.state_dir))

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
        url = f"http://127.0.0.1:{self.settings.cache.statistics_port}/json/v1"
        try:
            resp = requests.get(url, timeout=2)
        except requests.RequestException as exc:
            return False, f"{url}: {type(exc).__name__}"
        return resp.ok, f"{url}: HTTP {resp.status_code}"

    def sampler(self) -> Sampler:
        """The once-a-second statistics reader for `stats` and the daemon."""
        import psutil

        forwarder = self.settings.all_forwarders[0]
        interfaces = tuple(sorted(n for n in psutil.net_if_stats() if n != "lo"))
        upstream = interface_for(forwarder, self.runner,
                                 default=interfaces[0] if interfaces else "eth0")
        return Sampler(
            BindStatsCollector(self.settings.cache.statistics_port),
            OptionalEnaReader(EthtoolReader(self.runner)),
            BudgetTracker(self.settings.budget.limit_pps,
                          warn_headroom_pct=self.settings.budget.warn_headroom_pct),
            upstream_interface=upstream, interfaces=interfaces)

    def named_enabled(self) -> bool:
        """Whether the init system starts named at boot (systemd hosts only)."""
        return self.runner.run(("systemctl", "is-enabled", "--quiet", self.facts.profile.unit),
                               timeout=30).ok

    def verify(self) -> VerifyReport:
        live = self.root.is_live
        systemd = live and self.service.name == "systemd"
        return verify(self.facts, self.settings, self.plan(), self.root,
                      named_active=self.service.is_active if live else None,
                      health=self.health if live else None,
                      stats_ok=self.stats_channel if live else None,
                      named_enabled=self.named_enabled if systemd else None,
                      listeners=listening_sockets if live else None,
                      query=ask if live else None,
                      addresses=local_addresses if live else None)
