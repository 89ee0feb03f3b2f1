"""Running external commands (named-checkconf, systemctl, resolvconf, ...) with timeouts. The
`Runner` is passed in everywhere a command runs, so tests can record or refuse commands."""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from .errors import CommandError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def first_error_line(self) -> str:
        """The most useful single line of output, for one-line error messages."""
        for text in (self.stderr, self.stdout):
            for line in text.splitlines():
                if line.strip():
                    return line.strip()
        return f"exit status {self.returncode}"


class CommandResult(Protocol):
    """What callers read from a finished command (fakes in tests provide the same)."""

    @property
    def returncode(self) -> int: ...

    @property
    def stdout(self) -> str: ...

    @property
    def stderr(self) -> str: ...


class CommandRunner(Protocol):
    """The part of `Runner` that readers (ethtool, ip route) need; tests pass fakes."""

    def run(self, argv: Sequence[str], *, timeout: float | None = None) -> CommandResult: ...


class Runner:
    """Runs commands on this host. `check=True` raises CommandError with one line."""

    def __init__(self, default_timeout: float = 30.0) -> None:
        self.default_timeout = default_timeout

    def which(self, name: str) -> str | None:
        return shutil.which(name)

    def run(self, argv: Sequence[str], *, timeout: float | None = None, check: bool = False,
            input_text: str | None = None) -> Result:
        args = tuple(argv)
        log.debug("run: %s", " ".join(args))
        try:
            proc = subprocess.run(
                args, input=input_text, capture_output=True, text=True,
                timeout=timeout or self.default_timeout, check=False,
            )
        except FileNotFoundError:
            result = Result(args, 127, "", f"{args[0]}: command not found")
        except subprocess.TimeoutExpired:
            result = Result(args, 124, "", f"{args[0]}: timed out after "
                                           f"{timeout or self.default_timeout}s")
        else:
            result = Result(args, proc.returncode, proc.stdout, proc.stderr)
        if check and not result.ok:
            raise CommandError(f"{' '.join(args)}: {result.first_error_line()}")
        return result
