"""Validating a planned bind config with `named-checkconf`, in a way that works inside the repair
unit's sandbox.

The first release copied the config directory into a temporary tree and ran
`named-checkconf -t TREE`. Under `dnscache-agent-repair.service` both steps fail: copying
/etc/bind (mode 2755) re-applies its setgid bit, which `RestrictSUIDSGID=yes` forbids, and `-t`
needs `chroot()`, which `@system-service` and the empty capability set deny. So nothing is
copied as a tree and nothing is chrooted: the main config and every file it includes are
written as plain files into a staging directory, with their `include` statements rewritten to
the staged copies and the planned files swapped in, and `named-checkconf` reads the staged
main file by its path. `staged_config` is pure (text in, texts out); `stage` writes them.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

_INCLUDE = re.compile(r'(\binclude\s+")([^"\n]+)(")')
_DIRECTORY = re.compile(r'(\bdirectory\s+")([^"\n]+)(")')

#: Stands for the staging directory inside staged texts until `stage` knows it.
STAGE_TOKEN = "@@dnscache-agent-stage@@"
#: Nested includes deeper than this are left pointing at the host file (named itself stops
#: far earlier; this only bounds a cycle the `seen` map would already break).
MAX_FILES = 256


@dataclass(frozen=True)
class StagedConfig:
    """The staged files (staged name → bytes), which one is the main config, and the host
    path each was staged from (to name host paths in named-checkconf's messages)."""

    files: Mapping[str, bytes]
    main: str
    origins: Mapping[str, str]

    def host_message(self, message: str, directory: Path) -> str:
        """`message` with staged file paths replaced by the host paths they stand for."""
        for name, origin in self.origins.items():
            message = message.replace(f"{directory}/{name}", origin)
        return message


def staged_config(main_path: str, read: Callable[[str], bytes | None], *,
                  working_directory: str,
                  existing_directory: Callable[[str], str],
                  host_path: Callable[[str], str] = str) -> StagedConfig:
    """The main config at `main_path` and everything it includes, as staged file names
    (`NNN-basename`) whose include statements point at each other (as `STAGE_TOKEN/NNN-...`
    placeholders, filled in by `stage`). `read(path)` returns a host path's bytes (the planned
    content for files the plan writes) or None when it does not exist; a missing include is
    left as `host_path(path)` (the path under `--root`), so named-checkconf reports it as it
    would on the host.
    `existing_directory(path)` maps a `directory` option to a directory that exists where
    named-checkconf runs (the option is checked, but nothing is read from it)."""
    names: dict[str, str] = {}
    out: dict[str, bytes] = {}

    def visit(path: str) -> str | None:
        if path in names:
            return names[path]
        if len(names) >= MAX_FILES:
            return None
        data = read(path)
        if data is None:
            return None
        name = f"{len(names):03d}-{posixpath.basename(path) or 'conf'}"
        names[path] = name
        text = data.decode("utf-8", errors="surrogateescape")

        def include(m: re.Match[str]) -> str:
            target = m.group(2)
            if not target.startswith("/"):
                target = posixpath.join(working_directory, target)
            staged = visit(posixpath.normpath(target))
            where = f"{STAGE_TOKEN}/{staged}" if staged else host_path(posixpath.normpath(target))
            return m.group(1) + where + m.group(3)

        def directory(m: re.Match[str]) -> str:
            return m.group(1) + existing_directory(m.group(2)) + m.group(3)

        text = _INCLUDE.sub(include, text)
        text = _DIRECTORY.sub(directory, text)
        out[name] = text.encode("utf-8", errors="surrogateescape")
        return name

    main = visit(main_path)
    if main is None:
        raise FileNotFoundError(main_path)
    return StagedConfig(out, main, {name: path for path, name in names.items()})


def stage(config: StagedConfig, directory: Path) -> Path:
    """Write the staged files into `directory` (plain files, mode 0600); returns the main
    file's path."""
    for name, data in config.files.items():
        text = data.replace(STAGE_TOKEN.encode(), str(directory).encode())
        path = directory / name
        path.write_bytes(text)
        path.chmod(0o600)
    return directory / config.main
