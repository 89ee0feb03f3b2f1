"""The target's `dnscache-agent verify --json` output, read on the controller (pure)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from ..verify import Check


class AgentUnavailable(Exception):
    """The agent could not be run on the target, or printed no report."""


@dataclass(frozen=True)
class Report:
    """verify's checks, by name; `files` are the per-file plan checks."""

    checks: Mapping[str, Check]
    files: tuple[Check, ...]

    def get(self, name: str) -> Check | None:
        return self.checks.get(name)


def parse_report(stdout: str, stderr: str = "", exit_status: int = 0) -> Report:
    """Parse `verify --json`; raise AgentUnavailable naming what went wrong."""
    try:
        data = json.loads(stdout)
        raw = data["checks"]
        checks = [Check(name=str(c["name"]), ok=bool(c["ok"]), detail=str(c["detail"]),
                        path=c.get("path"), line=c.get("line"), fix=str(c.get("fix") or ""))
                  for c in raw]
    except (ValueError, KeyError, TypeError) as exc:
        tail = (stderr.strip() or stdout.strip())[-500:]
        raise AgentUnavailable(f"`dnscache-agent verify --json` exited {exit_status} without "
                               f"a report ({type(exc).__name__}): {tail}") from None
    by_name = {c.name: c for c in checks if not c.name.startswith("file ")}
    files = tuple(c for c in checks if c.name.startswith("file "))
    return Report(by_name, files)


def describe(check: Check, hint: str = "") -> str:
    """The failure message of one check: what is wrong, where, and what to fix."""
    where = ""
    if check.path:
        where = f" [{check.path}{':' + str(check.line) if check.line else ''}]"
    text = f"{check.name}: {check.detail}{where}"
    if check.fix:
        text += f"\n  fix: {check.fix}"
    if hint:
        text += f"\n  {hint}"
    return text
