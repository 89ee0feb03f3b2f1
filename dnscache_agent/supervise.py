"""`python -m dnscache_agent.supervise --pid-file FILE [--log FILE] -- COMMAND...`: what
`Restart=always` is under systemd, for hosts without it (containers without an init, the
simulated VPC). It runs COMMAND, starts it again 200 ms after it exits (backing off to 5 s when
it keeps dying within a second of starting), passes SIGHUP on, and on SIGTERM/SIGINT stops the
child and exits. The pacer runs under it, so a killed pacer is back before named's forwarder
retry.

Its own pid is in the pid file (the agent stops and checks the pacer through it); the child's
output is appended to the log file, which is cut back when it passes LOG_MAX_BYTES."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

RESTART_DELAY = 0.2
MAX_DELAY = 5.0
#: A child that lived at least this long was healthy: the backoff starts over.
HEALTHY_SECONDS = 1.0
LOG_MAX_BYTES = 1024 * 1024
STOP_TIMEOUT = 5.0


def next_delay(previous: float, lived: float) -> float:
    """The wait before the next start (pure): back to RESTART_DELAY after a healthy run,
    else doubled up to MAX_DELAY."""
    if lived >= HEALTHY_SECONDS:
        return RESTART_DELAY
    return min(MAX_DELAY, max(RESTART_DELAY, previous * 2))


class Supervisor:
    def __init__(self, command: Sequence[str], log: Path | None) -> None:
        self.command = list(command)
        self.log = log
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = False

    def on_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.terminate()

    def on_hup(self, signum: int, frame: FrameType | None) -> None:
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGHUP)

    def _output(self) -> int:
        if self.log is None:
            return subprocess.DEVNULL
        try:
            if self.log.stat().st_size > LOG_MAX_BYTES:
                self.log.write_bytes(b"")
        except OSError:
            pass
        return os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)

    def run(self) -> int:
        delay = RESTART_DELAY
        while not self.stopping:
            out = self._output()
            started = time.monotonic()
            try:
                self.child = subprocess.Popen(self.command, stdin=subprocess.DEVNULL,
                                              stdout=out, stderr=out)
            except OSError as exc:
                print(f"supervise: {self.command[0]}: {exc.strerror}", file=sys.stderr)
                return 1
            finally:
                if out != subprocess.DEVNULL:
                    os.close(out)
            while True:
                try:
                    code = self.child.wait()
                    break
                except InterruptedError:  # pragma: no cover - PEP 475 retries for us
                    continue
            if self.stopping:
                break
            lived = time.monotonic() - started
            delay = next_delay(delay, lived)
            print(f"supervise: {self.command[0]} exited {code} after {lived:.1f}s; "
                  f"starting it again in {delay:.1f}s", file=sys.stderr, flush=True)
            deadline = time.monotonic() + delay
            while not self.stopping and time.monotonic() < deadline:
                time.sleep(0.05)
        if self.child is not None and self.child.poll() is None:
            try:
                self.child.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.child.kill()
                self.child.wait()
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dnscache_agent.supervise")
    parser.add_argument("--pid-file", required=True, type=Path)
    parser.add_argument("--log", type=Path)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to supervise")
    supervisor = Supervisor(command, args.log)
    signal.signal(signal.SIGTERM, supervisor.on_stop)
    signal.signal(signal.SIGINT, supervisor.on_stop)
    signal.signal(signal.SIGHUP, supervisor.on_hup)
    args.pid_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.pid_file.with_name(args.pid_file.name + ".tmp")
    tmp.write_text(f"{os.getpid()}\n")
    tmp.replace(args.pid_file)
    try:
        return supervisor.run()
    finally:
        try:
            if args.pid_file.read_text().strip() == str(os.getpid()):
                args.pid_file.unlink()
        except OSError:
            pass


if __name__ == "__main__":
    raise SystemExit(main())
