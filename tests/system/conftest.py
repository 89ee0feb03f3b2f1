"""Fixtures for system tests: cached Debian images and containers booting systemd.

Every fixture skips (with the reason) when the machine cannot run them: not root, podman or
debootstrap missing, or no Debian apt sources to build images from. Images are built once
and cached (rig/images.py); a warm session only asks podman whether the tags exist.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from rig.containers import SystemdContainer, build_wheelhouse, project_dependencies
from rig.images import SOURCES_FILE, ImageBuilder
from tests.machinery import skip_or_fail

REPO = Path(__file__).resolve().parents[2]


def system_skip_reason() -> str | None:
    """Why system tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "system tests need root (podman, debootstrap, chroot)"
    for tool in ("podman", "debootstrap", "runc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (run scripts/setup.sh)"
    if not SOURCES_FILE.exists():
        return f"{SOURCES_FILE} is missing: no Debian mirror to build images from"
    return None


@pytest.fixture(scope="session")
def image_builder() -> ImageBuilder:
    """The host's image builder (cache: $DNSCACHE_IMAGE_CACHE or /var/cache/...)."""
    reason = system_skip_reason()
    if reason is not None:
        skip_or_fail(reason)
    return ImageBuilder.from_host()


@pytest.fixture(scope="session")
def system_image(image_builder: ImageBuilder) -> Callable[[str], str]:
    """`system_image("resolved")` → podman ref of that image, building it on first use."""
    refs: dict[str, str] = {}

    def get(name: str = "base") -> str:
        if name not in refs:
            refs[name] = image_builder.ensure(name).ref
        return refs[name]

    return get


@pytest.fixture
def systemd_container(
    system_image: Callable[[str], str],
) -> Iterator[Callable[..., SystemdContainer]]:
    """Factory: `systemd_container("base", network="none")` → a booted container.

    Every container started through it is removed at the end of the test.
    """
    with ExitStack() as stack:

        def start(variant: str = "base", **kwargs: Any) -> SystemdContainer:
            return stack.enter_context(SystemdContainer(system_image(variant), **kwargs))

        yield start


@pytest.fixture(scope="session")
def agent_wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The agent's wheel plus its dependencies' wheels, for an offline install.

    Skips when root/podman are missing; fails (does not skip) when the project does not
    build, since that is a defect the system tests exist to catch.
    """
    reason = system_skip_reason()
    if reason is not None:
        skip_or_fail(reason)
    dest = tmp_path_factory.mktemp("wheelhouse")
    deps = project_dependencies((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    build_wheelhouse(REPO, dest, deps)
    return dest
