"""atomic_write keeps the target's SELinux label: mkstemp + rename would give the new file the
directory's default label, and named could not read its config under an enforcing policy.

What is exercised here: the `security.selinux` attribute itself, set on ext4/tmpfs by root
without SELinux loaded (the kernel stores it like any xattr), read from the target, copied onto
the temp file before the rename, and present on the new inode; `user.*` stands in where
`security.*` cannot be set. What is not: an enforcing policy (type transitions that would
relabel a new file, relabelfrom/relabelto permissions on setxattr); no SELinux host is
reachable from this test machine.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from dnscache_agent import hostfs
from dnscache_agent.errors import ApplyError
from tests.machinery import skip_or_fail

LABEL = b"system_u:object_r:net_conf_t:s0\x00"
META = hostfs.FileMeta(0o644, os.getuid(), os.getgid())


def settable(path: Path, name: str) -> None:
    try:
        os.setxattr(path, name, LABEL)
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            skip_or_fail(f"{path.parent}: cannot set {name} here ({exc.strerror})")
        raise


@pytest.mark.parametrize("name", ["security.selinux", "user.dnscache-test"])
def test_replacement_keeps_the_label(tmp_path: Path, name: str) -> None:
    target = tmp_path / "resolv.conf"
    target.write_bytes(b"nameserver 172.31.0.2\n")
    settable(target, name)
    inode = target.stat().st_ino
    assert hostfs.atomic_write(target, b"nameserver 127.0.0.1\n", META, label_xattrs=(name,))
    assert target.stat().st_ino != inode  # a new file was renamed over it
    assert os.getxattr(target, name) == LABEL
    assert target.read_bytes() == b"nameserver 127.0.0.1\n"


def test_default_labels_are_selinux_s(tmp_path: Path) -> None:
    target = tmp_path / "named.conf.options"
    target.write_bytes(b"old\n")
    settable(target, "security.selinux")
    hostfs.atomic_write(target, b"new\n", META)
    assert os.getxattr(target, "security.selinux") == LABEL


def test_unlabelled_target_gets_no_label(tmp_path: Path) -> None:
    target = tmp_path / "plain.conf"
    target.write_bytes(b"old\n")
    hostfs.atomic_write(target, b"new\n", META, label_xattrs=("user.dnscache-test",))
    assert "user.dnscache-test" not in os.listxattr(target)
    assert hostfs.read_labels(target, ("user.dnscache-test", "nonamespace.x")) == {}


def test_new_file_has_no_label_to_keep(tmp_path: Path) -> None:
    target = tmp_path / "new.conf"
    assert hostfs.atomic_write(target, b"new\n", META, label_xattrs=("user.dnscache-test",))
    assert "user.dnscache-test" not in os.listxattr(target)


def test_a_label_that_cannot_be_kept_fails_the_write(tmp_path: Path) -> None:
    """Swapping in a file its reader may not open is worse than not writing it."""
    target = tmp_path / "conf"
    target.write_bytes(b"old\n")
    with pytest.raises(ApplyError, match=r"conf: cannot keep its user.x label ctx_t"):
        hostfs.write_labels(tmp_path / "missing-temp", target, {"user.x": b"ctx_t\x00"})
    assert target.read_bytes() == b"old\n"
