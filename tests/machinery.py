"""Skipping tests whose machinery (root, podman, named, ...) is missing, except in CI."""
from __future__ import annotations

import os
from pathlib import Path

import pytest


def skip_or_fail(reason: str) -> None:
    """Skip a test whose machinery is missing, except where the suite must be complete
    (scripts/test.sh sets DNSCACHE_REQUIRE_ALL=1, so CI never passes by skipping)."""
    if os.environ.get("DNSCACHE_REQUIRE_ALL") == "1":
        pytest.fail(f"required test machinery missing: {reason}")
    pytest.skip(reason)


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
