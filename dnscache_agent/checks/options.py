"""The checks' settings: command-line options with environment fall-backs, so an image that
differs on purpose (another forwarder, an internal probe name, no agent service) passes by
configuration, not by editing the checks."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..verify import AMAZON_RESOLVERS

DEFAULT_AGENT_COMMAND = "dnscache-agent"
# Where the Ansible role (packaging/ansible) installs the agent when it is not on PATH.
FALLBACK_AGENT_COMMANDS: tuple[str, ...] = ("/opt/dnscache-agent/venv/bin/dnscache-agent",
                                            "/usr/local/bin/dnscache-agent")
DEFAULT_AGENT_UNIT = "dnscache-agent.service"


@dataclass(frozen=True)
class Option:
    """One option: its flag, the environment variable read when the flag is absent, help."""

    flag: str
    env: str
    help: str
    multiple: bool = False
    boolean: bool = False


OPTIONS: tuple[Option, ...] = (
    Option("--dnscache-forwarder", "DNSCACHE_CHECKS_FORWARDERS",
           "an address named may forward to (repeat it; env: comma-separated); default: the "
           "Amazon resolvers " + ", ".join(AMAZON_RESOLVERS), multiple=True),
    Option("--dnscache-probe-name", "DNSCACHE_CHECKS_PROBE_NAME",
           "the name resolved through 127.0.0.1 (default: the agent's cache.health_name)"),
    Option("--dnscache-skip-service", "DNSCACHE_CHECKS_SKIP_SERVICE",
           "do not require the agent's own service (an image that runs only bind)",
           boolean=True),
    Option("--dnscache-agent-unit", "DNSCACHE_CHECKS_AGENT_UNIT",
           f"the agent's systemd unit (default {DEFAULT_AGENT_UNIT})"),
    Option("--dnscache-agent-command", "DNSCACHE_CHECKS_AGENT_COMMAND",
           f"the agent's command on the target (default: {DEFAULT_AGENT_COMMAND} on PATH, "
           f"else {', '.join(FALLBACK_AGENT_COMMANDS)})"),
    Option("--dnscache-config", "DNSCACHE_CHECKS_CONFIG",
           "the agent settings file on the target (default: the agent's own default)"),
    Option("--dnscache-imds-endpoint", "DNSCACHE_CHECKS_IMDS_ENDPOINT",
           "IMDSv2 base URL the agent uses on the target (e.g. off EC2: http://127.0.0.1:9)"),
)


def dest(option: Option) -> str:
    return option.flag.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class CheckOptions:
    """What the checks expect of the target."""

    forwarders: tuple[str, ...] = AMAZON_RESOLVERS
    probe_name: str | None = None
    skip_service: bool = False
    agent_unit: str = DEFAULT_AGENT_UNIT
    agent_command: str | None = None
    config: str | None = None
    imds_endpoint: str | None = None

    @property
    def forwarders_given(self) -> bool:
        return self.forwarders != AMAZON_RESOLVERS


_TRUE = {"1", "true", "yes", "on"}


def resolve(values: Mapping[str, object], environ: Mapping[str, str]) -> CheckOptions:
    """Options from parsed flags (`values`, by dest), else the environment, else defaults."""
    out: dict[str, object] = {}
    for opt in OPTIONS:
        value = values.get(dest(opt))
        if opt.boolean:
            out[dest(opt)] = bool(value) or environ.get(opt.env, "").lower() in _TRUE
            continue
        if opt.multiple:
            items: Sequence[str] = list(value) if isinstance(value, (list, tuple)) else []
            if not items and environ.get(opt.env):
                items = [v.strip() for v in environ[opt.env].split(",") if v.strip()]
            if items:
                out[dest(opt)] = tuple(items)
            continue
        if value is None:
            value = environ.get(opt.env) or None
        if value is not None:
            out[dest(opt)] = str(value)
    return CheckOptions(
        forwarders=tuple(out.get("dnscache_forwarder", AMAZON_RESOLVERS)),  # type: ignore[arg-type]
        probe_name=out.get("dnscache_probe_name"),  # type: ignore[arg-type]
        skip_service=bool(out.get("dnscache_skip_service")),
        agent_unit=str(out.get("dnscache_agent_unit") or DEFAULT_AGENT_UNIT),
        agent_command=out.get("dnscache_agent_command"),  # type: ignore[arg-type]
        config=out.get("dnscache_config"),  # type: ignore[arg-type]
        imds_endpoint=out.get("dnscache_imds_endpoint"),  # type: ignore[arg-type]
    )


def locate_command(opts: CheckOptions) -> str:
    """A shell snippet that prints the agent's command path on the target (or nothing)."""
    if opts.agent_command:
        return f"command -v {shlex.quote(opts.agent_command)}"
    candidates = " ".join(shlex.quote(c) for c in FALLBACK_AGENT_COMMANDS)
    return (f"command -v {DEFAULT_AGENT_COMMAND} || "
            f"for c in {candidates}; do [ -x \"$c\" ] && echo \"$c\" && break; done; true")


def agent_command_line(command: str, subcommand: Sequence[str], opts: CheckOptions) -> str:
    """The shell command line that runs the agent on the target with the checks' options."""
    env = []
    if opts.probe_name:
        env.append(f"DNSCACHE_AGENT_HEALTH_NAME={shlex.quote(opts.probe_name)}")
    argv = [shlex.quote(command), *(shlex.quote(a) for a in subcommand)]
    if opts.config:
        argv += ["--config", shlex.quote(opts.config)]
    if opts.imds_endpoint:
        argv += ["--imds-endpoint", shlex.quote(opts.imds_endpoint)]
    return " ".join((["env", *env] if env else []) + argv)
