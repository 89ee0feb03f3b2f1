"""Fixtures for integration tests: a simulated VPC (rig/) in network namespaces.

`vpc` is one VPC per test module (limit 1024 pps, authoritative named, fake IMDS);
`make_vpc(**kwargs)` builds fresh ones that are torn down after the test. Both skip with
the reason when the machine cannot host them (not root, a tool missing).
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any, Callable

import pytest

from rig import SimulatedVpc
from tests.machinery import requires, skip_or_fail

RIG_TOOLS = ("ip", "nft", "named", "dig", "dnsperf")


def rig_unavailable_reason() -> str | None:
    """Why a simulated VPC cannot be built here, or None if it can."""
    if os.geteuid() != 0:
        return "simulated VPC needs root (network namespaces, nftables, named -u bind)"
    missing = [t for t in RIG_TOOLS if shutil.which(t) is None]
    if missing:
        return f"simulated VPC needs {', '.join(missing)} (see scripts/setup.sh)"
    return None


#: Decorator for a test that needs a simulated VPC but none of the fixtures below.
requires_rig = requires(rig_unavailable_reason())


def _skip_if_unavailable() -> None:
    reason = rig_unavailable_reason()
    if reason:
        skip_or_fail(reason)


@pytest.fixture
def rig_required() -> None:
    """Skip the test (with the reason) when a simulated VPC cannot be built here."""
    _skip_if_unavailable()


@pytest.fixture(scope="module")
def vpc() -> Iterator[SimulatedVpc]:
    """A simulated VPC shared by one test module; tests must undo limit changes."""
    _skip_if_unavailable()
    with SimulatedVpc.create(limit_pps=1024, name_prefix="dca", imds=True) as v:
        yield v


@pytest.fixture
def make_vpc() -> Iterator[Callable[..., SimulatedVpc]]:
    """Factory for fresh VPCs (`make_vpc(limit_pps=..., imds=..., zone=...)`), closed after."""
    _skip_if_unavailable()
    made: list[SimulatedVpc] = []

    def factory(**kwargs: Any) -> SimulatedVpc:
        kwargs.setdefault("name_prefix", "dca")
        v = SimulatedVpc.create(**kwargs)
        made.append(v)
        return v

    yield factory
    for v in made:
        v.close()
