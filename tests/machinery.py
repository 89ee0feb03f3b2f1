"""Skipping tests whose machinery (root, podman, named, ...) is missing, except in CI."""
from __future__ import annotations

import functools
import importlib
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import pytest

F = TypeVar("F", bound=Callable[..., Any])


def skip_or_fail(reason: str) -> None:
    """Skip a test whose machinery is missing, except where the suite must be complete
    (scripts/test.sh sets DNSCACHE_REQUIRE_ALL=1, so CI never passes by skipping).

    This is the one way a test skips for missing machinery (a tool, root, a package):
    tests/unit/test_no_plain_skips.py fails on a plain pytest.skip/skipif/importorskip."""
    if os.environ.get("DNSCACHE_REQUIRE_ALL") == "1":
        pytest.fail(f"required test machinery missing: {reason}")
    pytest.skip(reason)


# --- why machinery is missing: each returns None when it is there, else the reason -----------


def missing_root(what: str) -> str | None:
    return None if os.geteuid() == 0 else f"needs root ({what})"


def missing_tools(*tools: str, package: str = "") -> str | None:
    gone = [t for t in tools if shutil.which(t) is None]
    if not gone:
        return None
    hint = f" (package {package})" if package else ""
    return f"{', '.join(gone)} not installed{hint}"


def missing_paths(*paths: str | Path, why: str = "") -> str | None:
    gone = [str(p) for p in paths if not Path(p).exists()]
    return f"{', '.join(gone)} missing{' (' + why + ')' if why else ''}" if gone else None


def first_missing(reasons: Iterable[str | None]) -> str | None:
    return next((r for r in reasons if r), None)


# --- applying them -----------------------------------------------------------------------------


def requires(reason: str | None) -> Callable[[F], F]:
    """Decorator for a test function: when `reason` is set, the test goes through
    `skip_or_fail(reason)` before it runs. (Fixtures and marks on the function still work:
    pytest reads the wrapped signature.)"""
    def decorate(fn: F) -> F:
        if reason is None:
            return fn

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            skip_or_fail(reason)
            return fn(*args, **kwargs)  # pragma: no cover - skip_or_fail never returns

        return wrapper  # type: ignore[return-value]

    return decorate


def module_requires(reason: str | None) -> Any:
    """An autouse fixture for a whole test module; assign it to a module global:

        _machinery = module_requires(missing_tools("named"))
    """
    @pytest.fixture(autouse=True)
    def _module_machinery() -> None:
        if reason:
            skip_or_fail(reason)

    return _module_machinery


def optional_import(module: str) -> Any:
    """The module, or None when it is not installed (pair with `module_requires(
    missing_module(...))`, which skips or fails the module's tests before any use)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def missing_module(module: str, why: str = "") -> str | None:
    """None when `module` imports, else the reason."""
    if optional_import(module) is not None:
        return None
    return f"python module {module} is not installed{' (' + why + ')' if why else ''}"


def tree_snapshot(base: Path, *, skip: str | None = None) -> dict[str, tuple[object, ...]]:
    """Every file, symlink and directory under `base` (host paths; those under `skip` left
    out): kind, mode, owner, and bytes or link target, to compare a tree before and after."""
    out: dict[str, tuple[object, ...]] = {}
    for path in sorted(base.rglob("*")):
        rel = "/" + str(path.relative_to(base))
        if skip and rel.startswith(skip):
            continue
        st = path.lstat()
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            out[rel] = ("dir", st.st_mode & 0o7777, st.st_uid, st.st_gid)
        else:
            out[rel] = ("file", st.st_mode & 0o7777, st.st_uid, st.st_gid, path.read_bytes())
    return out
