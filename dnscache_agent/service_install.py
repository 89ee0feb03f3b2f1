"""`dnscache-agent install-service`: put the systemd units shipped inside the package into
<root>/etc/systemd/system, with ExecStart= pointing at this installation's command, then enable
them: `systemctl daemon-reload` + `enable --now` on a live host whose PID 1 is systemd, or the
[Install] symlinks written directly into a staged root (an image build) where no systemd runs.

A second run changes nothing and says so. The pure parts (finding and rendering the units,
reading [Install]) take values and return values; `install_service` does the I/O."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import hostfs
from .errors import ApplyError, ConfigError

if TYPE_CHECKING:
    import argparse

    from .app import Agent

UNIT_DIR = "/etc/systemd/system"
MAIN_UNIT = "dnscache-agent.service"
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


def installed_command(executable: str = sys.executable,
                      which: str | None = None) -> str:
    """This installation's `dnscache-agent` script: next to the running interpreter (a venv),
    else what PATH finds, else the shipped default."""
    beside = Path(executable).parent / "dnscache-agent"
    if beside.is_file():
        return str(beside)
    return which or SHIPPED_COMMAND


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


@dataclass(frozen=True)
class UnitFile:
    name: str
    path: str  # host path, e.g. /etc/systemd/system/dnscache-agent.service
    content: bytes


def plan_units(units: Mapping[str, str], command: str,
               unit_dir: str = UNIT_DIR) -> list[UnitFile]:
    """The files to install (pure)."""
    return [UnitFile(name, f"{unit_dir}/{name}", render_unit(text, command).encode())
            for name, text in sorted(units.items())]


def _systemd_running(agent: Agent) -> bool:
    return agent.root.is_live and os.path.isdir("/run/systemd/system")


def install_service(agent: Agent, args: argparse.Namespace) -> Iterator[str]:
    """Install the units and enable the main one; yields one line per thing done.
    Raises ApplyError naming the file or command that failed."""
    import shutil

    command = getattr(args, "exec_path", None) or installed_command(
        which=shutil.which("dnscache-agent"))
    files = plan_units(shipped_units(), command)
    changed = False
    for f in files:
        wrote = hostfs.atomic_write(agent.root.path(f.path), f.content,
                                    hostfs.FileMeta(0o644, 0, 0))
        changed |= wrote
        yield f"{'installed' if wrote else 'unchanged'} {f.path}"
    main = next(f for f in files if f.name == MAIN_UNIT)
    enable_now = not getattr(args, "no_start", False)
    if _systemd_running(agent):
        steps = [["systemctl", "daemon-reload"]] if changed else []
        if changed and enable_now and agent.runner.run(
                ["systemctl", "is-active", "--quiet", MAIN_UNIT], timeout=30).ok:
            # enable --now would leave the running daemon on the old unit.
            steps.append(["systemctl", "restart", MAIN_UNIT])
        steps.append(["systemctl", "enable", *(["--now"] if enable_now else []), MAIN_UNIT])
        for argv in steps:
            result = agent.runner.run(argv, timeout=120)
            if not result.ok:
                raise ApplyError(f"{' '.join(argv)}: {result.first_error_line()}")
            yield f"ran {' '.join(argv)}"
        return
    # No systemd to ask (a staged image root, a container without init): create the
    # [Install] symlinks the way `systemctl enable` would, so the unit starts at first boot.
    for target in wanted_by(main.content.decode()):
        link = agent.root.path(f"{UNIT_DIR}/{target}.wants/{MAIN_UNIT}")
        if link.is_symlink() and os.readlink(link) == main.path:
            yield f"unchanged {UNIT_DIR}/{target}.wants/{MAIN_UNIT}"
            continue
        try:
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(main.path)
        except OSError as exc:
            raise ApplyError(f"{link}: cannot enable: {exc.strerror}") from None
        yield f"enabled {MAIN_UNIT} ({UNIT_DIR}/{target}.wants)"
    yield "systemd is not running here: the service starts at the next boot"
