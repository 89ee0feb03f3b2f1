"""The sd_notify(3) protocol, in the standard library: one datagram of `KEY=value` lines to the
AF_UNIX socket named by $NOTIFY_SOCKET. A leading "@" names an abstract socket.

Written here instead of depending on python-systemd: the protocol is a dozen lines, and the
sender is injectable, so the daemon's tests record messages instead of opening sockets.
`notifier_from_env()` returns a no-op notifier when the process is not run by systemd.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from typing import Callable, Protocol

log = logging.getLogger(__name__)

#: Sends one datagram to an address; the default opens an AF_UNIX datagram socket.
Sender = Callable[[str, bytes], None]


class Notifier(Protocol):
    """What the daemon calls; `SdNotifier`, `NullNotifier` and test recorders provide it."""

    def notify(self, **fields: str) -> bool: ...

    @property
    def watchdog_interval(self) -> float | None: ...


def socket_address(value: str) -> str:
    """$NOTIFY_SOCKET as an address for `socket.sendto`: "@name" is the abstract "\\0name".
    Raises ValueError for anything that is not an absolute path or an abstract name."""
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    raise ValueError(f"NOTIFY_SOCKET={value!r}: not an absolute path or @abstract name")


def format_message(fields: Mapping[str, str]) -> bytes:
    """`KEY=value` lines. Raises ValueError on a key that is not upper-case letters, digits
    and "_", or a value with a newline (it would inject a second field)."""
    lines = []
    for key, value in fields.items():
        if not key or not all(c.isupper() or c.isdigit() or c == "_" for c in key):
            raise ValueError(f"sd_notify: invalid field name {key!r}")
        if "\n" in value:
            raise ValueError(f"sd_notify: {key} value contains a newline")
        lines.append(f"{key}={value}")
    return ("\n".join(lines) + "\n").encode("utf-8")


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of $WATCHDOG_USEC), or None when systemd does
    not watch this process ($WATCHDOG_PID names another process, or no watchdog is set)."""
    usec = environ.get("WATCHDOG_USEC", "")
    owner = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if owner and (not owner.isdigit() or int(owner) != pid):
        return None
    return int(usec) / 1e6 / 2


def _send_unix_datagram(address: str, data: bytes) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.sendto(data, address)


class SdNotifier:
    """Notifies the systemd manager at `address`. `notify()` never raises: a lost status
    message must not stop the agent; it returns False and logs at DEBUG."""

    def __init__(self, address: str, *, sender: Sender = _send_unix_datagram,
                 watchdog: float | None = None) -> None:
        self.address = address
        self.sender = sender
        self._watchdog = watchdog

    @property
    def watchdog_interval(self) -> float | None:
        return self._watchdog

    def notify(self, **fields: str) -> bool:
        data = format_message(fields)
        try:
            self.sender(self.address, data)
        except OSError as exc:
            log.debug("sd_notify to %r failed: %s", self.address, exc)
            return False
        return True


class NullNotifier:
    """Not run by systemd: every notification is dropped."""

    watchdog_interval: float | None = None

    def notify(self, **fields: str) -> bool:
        format_message(fields)  # same validation as the real one, so tests catch bad fields
        return False


def notifier_from_env(environ: Mapping[str, str] | None = None, pid: int | None = None, *,
                      sender: Sender = _send_unix_datagram) -> SdNotifier | NullNotifier:
    """The notifier systemd asked for through $NOTIFY_SOCKET / $WATCHDOG_USEC, else a no-op.
    An invalid $NOTIFY_SOCKET is logged and ignored."""
    env = os.environ if environ is None else environ
    value = env.get("NOTIFY_SOCKET", "")
    if not value:
        return NullNotifier()
    try:
        address = socket_address(value)
    except ValueError as exc:
        log.warning("%s; not notifying systemd", exc)
        return NullNotifier()
    return SdNotifier(address, sender=sender,
                      watchdog=watchdog_interval(env, os.getpid() if pid is None else pid))
