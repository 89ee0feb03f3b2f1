"""Which named options an installed bind version understands. An option a version lacks is left
out of the rendered config rather than rendered into a startup error."""

from __future__ import annotations

import re
from dataclasses import dataclass

Version = tuple[int, int, int]

# option → first version that accepts it (from ISC's release notes).
OPTION_SINCE: dict[str, Version] = {
    "stale-answer-enable": (9, 12, 0),
    "stale-answer-ttl": (9, 12, 0),
    "max-stale-ttl": (9, 12, 0),
    "min-cache-ttl": (9, 14, 0),
    "min-ncache-ttl": (9, 14, 0),
    "stale-refresh-time": (9, 16, 3),
    "stale-answer-client-timeout": (9, 16, 13),
    "stale-cache-enable": (9, 16, 17),
}


@dataclass(frozen=True)
class BindFeatures:
    """Option support for one bind version; `None` version means "assume current"."""

    version: Version | None

    def supports(self, option: str) -> bool:
        since = OPTION_SINCE.get(option)
        return since is None or self.version is None or self.version >= since


def parse_named_version(text: str) -> Version | None:
    """Parse `named -v` output, e.g. 'BIND 9.18.49-1~deb12u3-Debian (Extended Support Version)'."""
    m = re.search(r"BIND\s+(\d+)\.(\d+)\.(\d+)", text)
    if not m:
        return None
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)))
