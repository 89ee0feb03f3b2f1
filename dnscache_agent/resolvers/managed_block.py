"""Editing a config file the agent shares with the host: the original lines stay as they are and
the agent's lines go in one marked block at the end (where, in shell-sourced and dhclient files,
the last assignment wins). Pure text in, text out, so the edit is planned from the pristine
content and tested without a disk."""

from __future__ import annotations

from collections.abc import Sequence

BEGIN = "# BEGIN dnscache-agent (managed block; `dnscache-agent rollback` removes it)"
END = "# END dnscache-agent"


def strip_block(text: str) -> str:
    """`text` without an agent block (left by a run whose state directory was removed)."""
    out: list[str] = []
    inside = False
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith("# BEGIN dnscache-agent"):
            inside = True
            continue
        if inside:
            if stripped == END:
                inside = False
            continue
        out.append(line)
    return "".join(out)


def with_block(text: str | None, lines: Sequence[str]) -> str:
    """`text` (None: the file is absent) with the agent's `lines` in a block at the end."""
    body = strip_block(text or "")
    if body and not body.endswith("\n"):
        body += "\n"
    return body + "\n".join([BEGIN, *lines, END]) + "\n"


def block_lines(text: str) -> list[str]:
    """The lines inside the agent block (empty when there is none)."""
    out: list[str] = []
    inside = False
    for line in text.splitlines():
        if line.strip().startswith("# BEGIN dnscache-agent"):
            inside = True
        elif line.strip() == END:
            inside = False
        elif inside:
            out.append(line)
    return out
