"""Unit tests are pure: any test that starts a process or opens a socket fails."""
from __future__ import annotations

import socket
import subprocess

import pytest


class _Forbidden(AssertionError):
    pass


def _forbid(what: str):  # type: ignore[no-untyped-def]
    def raiser(*args: object, **kwargs: object) -> None:
        raise _Forbidden(f"unit tests must not {what}; move this test to tests/integration")

    return raiser


@pytest.fixture(autouse=True)
def _no_processes_or_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subprocess.Popen, "__init__", _forbid("start a process"))
    monkeypatch.setattr(socket.socket, "connect", _forbid("open a socket"))
    monkeypatch.setattr(socket.socket, "connect_ex", _forbid("open a socket"))
    monkeypatch.setattr(socket.socket, "sendto", _forbid("send a packet"))
    monkeypatch.setattr(socket.socket, "bind", _forbid("bind a socket"))
