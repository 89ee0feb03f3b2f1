"""The agent's own systemd units as part of the plan (pure).

The units ship inside the wheel (`packaging/systemd`, as the package data
`dnscache_agent.units`). Installing them is not a side channel: `install-service` plans them
like any other file (with `ExecStart=` pointing at this installation's command, and the
`[Install]` links that `systemctl enable` would make), and the transaction writes them, so the
checkpoint records them, `verify` and the daemon check them, and `rollback` removes them.
Whether the host has the service is read from the host: the main unit file is there."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

from .errors import ConfigError
from .plan_model import SERVICE_OWNER, FileChange, LinkChange, ServicePlan

UNIT_DIR = "/etc/systemd/system"
MAIN_UNIT = "dnscache-agent.service"
#: The pacer's unit: part of the cache itself, so the plan holds it whenever the pacer is
#: enabled on a systemd host (not only after install-service).
PACER_UNIT = "dnscache-agent-pacer.service"
#: install-service's units, in start order; stop order is the reverse.
UNIT_ORDER = ("dnscache-agent-repair.path", MAIN_UNIT)
#: The command path written in the shipped units; replaced by the installed one.
SHIPPED_COMMAND = "/usr/local/bin/dnscache-agent"
UNIT_SUFFIXES = (".service", ".path", ".timer", ".socket")
_PACKAGE = "dnscache_agent.units"
# packaging/systemd ships in the wheel as dnscache_agent/units (pyproject package-dir); a
# plain directory read works on Python 3.9, where importlib.resources cannot list a
# directory without __init__.py.
_PACKAGE_DIR = Path(__file__).resolve().parent / "units"
_SOURCE_TREE = Path(__file__).resolve().parent.parent / "packaging" / "systemd"


def shipped_units() -> dict[str, str]:
    """Unit name → text, from the wheel's package data (or the source tree when running
    from a checkout). Raises ConfigError when none are found."""
    units: dict[str, str] = {}
    for directory in (_PACKAGE_DIR, _SOURCE_TREE):
        if directory.is_dir():
            units = {p.name: p.read_text(encoding="utf-8") for p in sorted(directory.iterdir())
                     if p.name.endswith(UNIT_SUFFIXES)}
        if units:
            break
    if MAIN_UNIT not in units:
        raise ConfigError(f"{MAIN_UNIT} is not in this installation's package data "
                          f"({_PACKAGE}); reinstall the dnscache-agent wheel")
    return units


def render_unit(text: str, command: str) -> str:
    """The unit with every shipped command path replaced by `command` (absolute, no spaces:
    systemd would split it). Raises ConfigError otherwise."""
    if not command.startswith("/") or any(c.isspace() for c in command) or "%" in command:
        raise ConfigError(f"--exec-path {command!r}: must be an absolute path without "
                          "spaces or '%'")
    return text.replace(SHIPPED_COMMAND, command)


def installed_command(executable: str = sys.executable, which: str | None = None) -> str:
    """This installation's `dnscache-agent` script: next to the running interpreter (a venv),
    else what PATH finds, else the shipped default."""
    beside = Path(executable).parent / "dnscache-agent"
    if beside.is_file():
        return str(beside)
    return which or SHIPPED_COMMAND


def exec_path_of(unit_text: str) -> str | None:
    """The command of the unit's first `ExecStart=` (pure), e.g. the venv's dnscache-agent."""
    for raw in unit_text.splitlines():
        line = raw.strip()
        if line.startswith("ExecStart="):
            words = shlex.split(line.split("=", 1)[1].lstrip("-@:+!"))
            return words[0] if words else None
    return None


def wanted_by(text: str) -> tuple[str, ...]:
    """The targets in the unit's [Install] WantedBy= lines (pure)."""
    section = ""
    out: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif section == "Install" and line.startswith("WantedBy="):
            out.extend(line.split("=", 1)[1].split())
    return tuple(out)


def plan_units(units: Mapping[str, str], command: str, *, owner: str,
               unit_dir: str = UNIT_DIR) -> tuple[tuple[FileChange, ...], tuple[LinkChange, ...]]:
    """Unit files with `command` in ExecStart=, and the links `systemctl enable` makes
    (pure)."""
    files = tuple(FileChange(f"{unit_dir}/{name}", render_unit(text, command).encode(),
                             mode=0o644, owner=owner)
                  for name, text in sorted(units.items()))
    links = tuple(LinkChange(f"{unit_dir}/{target}.wants/{name}", f"{unit_dir}/{name}", owner)
                  for name, text in sorted(units.items()) for target in wanted_by(text))
    return files, links


#: The daemon's system user and group (the checkpoints' reader group), for systemd-sysusers.
SYSUSERS_PATH = "/etc/sysusers.d/dnscache-agent.conf"
SYSUSERS = b"""# Managed by dnscache-agent (install-service): the daemon's user. Its group may
# read the agent's checkpoints in /var/lib/dnscache-agent; it owns nothing else.
u dnscache-agent - "dnscache-agent daemon" - -
"""


def plan_service(units: Mapping[str, str], command: str, *, start: bool = False,
                 unit_dir: str = UNIT_DIR,
                 ) -> tuple[tuple[FileChange, ...], tuple[LinkChange, ...], ServicePlan]:
    """install-service's unit files, their [Install] links and the service actions (pure).
    The pacer's unit is not among them: the cache's own plan holds it. The daemon's user
    comes first (sysusers.d), so it exists before its unit starts."""
    mine = {name: text for name, text in units.items() if name != PACER_UNIT}
    files, links = plan_units(mine, command, owner=SERVICE_OWNER, unit_dir=unit_dir)
    files = (FileChange(SYSUSERS_PATH, SYSUSERS, mode=0o644, owner=SERVICE_OWNER),) + files
    order = tuple(u for u in UNIT_ORDER if u in mine)
    return files, links, ServicePlan(order, MAIN_UNIT, command, start)
