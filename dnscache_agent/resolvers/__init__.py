"""The table of resolver backends, and detection by priority."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from .base import BackendContext, HostView, ResolverBackend
from .dhclient import DhclientBackend
from .netplan import NetplanBackend
from .networkmanager import NetworkManagerBackend
from .resolvconf import ResolvconfBackend
from .resolved import ResolvedBackend
from .static import StaticBackend

# Highest priority first when several detect themselves (netplan hosts also run resolved).
BACKENDS: dict[str, ResolverBackend] = {b.name: b for b in (
    NetplanBackend(), ResolvedBackend(), ResolvconfBackend(), NetworkManagerBackend(),
    DhclientBackend(), StaticBackend())}


@dataclass(frozen=True)
class Detection:
    backend: str
    reason: str
    candidates: tuple[tuple[str, str], ...]  # every backend that detected itself, with why


def all_inputs() -> tuple[str, ...]:
    return tuple(dict.fromkeys(p for b in BACKENDS.values() for p in b.inputs))


def all_binaries() -> tuple[str, ...]:
    return tuple(dict.fromkeys(p for b in BACKENDS.values() for p in b.probes_binaries))


def all_units() -> tuple[str, ...]:
    return tuple(dict.fromkeys(p for b in BACKENDS.values() for p in b.probes_units))


def detect(view: HostView, override: str = "auto") -> Detection:
    """Pick the backend: `override` when not "auto", else the highest-priority detection."""
    found = []
    for backend in sorted(BACKENDS.values(), key=lambda b: -b.priority):
        reason = backend.detect(view)
        if reason:
            found.append((backend.name, reason))
    if override != "auto":
        if override not in BACKENDS:
            raise ConfigError(f"resolver.backend: unknown backend {override!r} "
                              f"(known: {', '.join(BACKENDS)})")
        return Detection(override, "chosen by resolver.backend / --resolver-backend",
                         tuple(found))
    if not found:
        return Detection("static", "no backend detected itself; writing resolv.conf directly",
                         ())
    return Detection(found[0][0], found[0][1], tuple(found))


def get(name: str) -> ResolverBackend:
    return BACKENDS[name]


__all__ = ["BACKENDS", "BackendContext", "Detection", "HostView", "ResolverBackend", "detect",
           "get"]
