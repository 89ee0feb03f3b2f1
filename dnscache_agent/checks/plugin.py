"""pytest plugin of the shipped checks: options and the per-host agent report.

pytest registers command-line options only from plugins and from the conftests of the paths
on the command line, not from a `--pyargs` package's conftest. So the flags need
`-p dnscache_agent.checks.plugin` (or collecting the package by path); the environment
variables work either way. The package's conftest.py re-exports the fixtures."""

from __future__ import annotations

import os
from typing import Any

import pytest

from .options import OPTIONS, CheckOptions, agent_command_line, dest, locate_command, resolve
from .report import AgentUnavailable, Report, parse_report


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dnscache-agent checks")
    if any(o.names() == [OPTIONS[0].flag] for o in group.options):
        return  # both the plugin (-p) and the package's conftest (a path argument) loaded
    for opt in OPTIONS:
        help_text = f"{opt.help} [env {opt.env}]"
        if opt.boolean:
            group.addoption(opt.flag, dest=dest(opt), action="store_true", default=False,
                            help=help_text)
        elif opt.multiple:
            group.addoption(opt.flag, dest=dest(opt), action="append", default=[],
                            help=help_text)
        else:
            group.addoption(opt.flag, dest=dest(opt), default=None, help=help_text)


@pytest.fixture(scope="session")
def dnscache_options(pytestconfig: pytest.Config) -> CheckOptions:
    values = {dest(opt): pytestconfig.getoption(dest(opt)) for opt in OPTIONS}
    return resolve(values, os.environ)


class Agent:
    """The agent on one target host, run through testinfra."""

    def __init__(self, host: Any, opts: CheckOptions) -> None:
        self.host = host
        self.opts = opts
        self._command: str | None = None

    @property
    def command(self) -> str:
        if self._command is None:
            found = self.host.run(locate_command(self.opts)).stdout.strip().splitlines()
            if not found:
                wanted = self.opts.agent_command or "dnscache-agent"
                raise AgentUnavailable(
                    f"{wanted} is not installed on the target\n  fix: install the agent "
                    "wheel (packaging/ansible) or pass --dnscache-agent-command PATH")
            self._command = found[0]
        return self._command

    def run(self, *args: str) -> Any:
        return self.host.run(agent_command_line(self.command, args, self.opts))


@pytest.fixture(scope="module")
def dnscache_agent(host: Any, dnscache_options: CheckOptions) -> Agent:
    return Agent(host, dnscache_options)


@pytest.fixture(scope="module")
def verify_report(dnscache_agent: Agent) -> Report | AgentUnavailable:
    """verify's report on this host, run once per host; the error when it could not run
    (each check then fails with it, instead of one opaque setup error)."""
    try:
        result = dnscache_agent.run("verify", "--json")
        return parse_report(result.stdout, result.stderr, result.rc)
    except AgentUnavailable as exc:
        return exc
