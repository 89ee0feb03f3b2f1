"""The interface charged with upstream packets: the kernel's route, asked through a connected
UDP socket on loopback, without a helper process (the shipped unit's seccomp filter kills `ip`
when it runs as the daemon's user)."""
from __future__ import annotations

from dnscache_agent.stats import routing


def test_the_kernel_route_is_asked_without_sending_or_spawning(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def no_process(*args: object, **kwargs: object) -> None:
        raise AssertionError("interface_for must not run a helper process")

    monkeypatch.setattr("subprocess.Popen", no_process)
    assert routing.route_source("127.0.0.1") == "127.0.0.1"
    assert routing.interface_for("127.0.0.1") == "lo"


def test_no_route_falls_back_to_the_default() -> None:
    assert routing.route_source("not-an-address") is None
    assert routing.interface_for("not-an-address", default="ens5") == "ens5"
