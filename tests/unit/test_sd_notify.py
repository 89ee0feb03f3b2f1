"""sd_notify: the datagram systemd reads, the watchdog interval it asks for, and the no-op
notifier outside systemd. The sender is injected; no socket is opened."""
from __future__ import annotations

import pytest

from dnscache_agent.sd_notify import (
    NullNotifier,
    SdNotifier,
    format_message,
    notifier_from_env,
    socket_address,
    watchdog_interval,
)


def test_abstract_socket_names_become_nul_prefixed_addresses() -> None:
    assert socket_address("@/org/freedesktop/systemd1/notify/123") == \
        "\0/org/freedesktop/systemd1/notify/123"
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    for bad in ("relative/path", "@", ""):
        with pytest.raises(ValueError):
            socket_address(bad)


def test_message_is_key_value_lines_and_refuses_injection() -> None:
    assert format_message({"READY": "1", "STATUS": "eth0 headroom 97%"}) == \
        b"READY=1\nSTATUS=eth0 headroom 97%\n"
    with pytest.raises(ValueError, match="newline"):
        format_message({"STATUS": "ok\nREADY=1"})
    with pytest.raises(ValueError, match="field name"):
        format_message({"status": "x"})


def test_watchdog_interval_is_half_the_timeout_and_only_for_the_watched_pid() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, pid=7) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, pid=7) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"}, pid=7) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, pid=7) is None
    assert watchdog_interval({}, pid=7) is None


def test_notifier_from_env_sends_to_the_named_socket() -> None:
    sent: list[tuple[str, bytes]] = []
    notifier = notifier_from_env({"NOTIFY_SOCKET": "@notify", "WATCHDOG_USEC": "10000000"},
                                 pid=1, sender=lambda addr, data: sent.append((addr, data)))
    assert isinstance(notifier, SdNotifier)
    assert notifier.watchdog_interval == 5.0
    assert notifier.notify(WATCHDOG="1") is True
    assert sent == [("\0notify", b"WATCHDOG=1\n")]


def test_no_socket_or_a_bad_one_gives_a_silent_notifier() -> None:
    assert isinstance(notifier_from_env({}), NullNotifier)
    assert isinstance(notifier_from_env({"NOTIFY_SOCKET": "relative"}), NullNotifier)
    assert NullNotifier().notify(READY="1") is False


def test_a_failed_send_is_reported_not_raised() -> None:
    def refuse(addr: str, data: bytes) -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    assert SdNotifier("/run/systemd/notify", sender=refuse).notify(READY="1") is False
