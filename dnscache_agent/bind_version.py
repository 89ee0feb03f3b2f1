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
    # A non-zero stale-answer-client-timeout (0 has its own CVEs and is never rendered).
    "stale-answer-client-timeout-nonzero": (9, 16, 13),
    # `plugin query "filter-aaaa.so"` (a build option before 9.14, a plugin since; the
    # distributions we support ship it from 9.16: Debian 12, AL2023, RHEL 9).
    "filter-aaaa-plugin": (9, 16, 0),
}

# option → [first broken, first fixed) version ranges where using it is unsafe.
# CVE-2022-3924: with a non-zero stale-answer-client-timeout, named can abort at the
# recursive-clients soft quota (fixed in 9.16.37, 9.18.11, 9.19.9).
OPTION_BROKEN: dict[str, tuple[tuple[Version, Version], ...]] = {
    "stale-answer-client-timeout-nonzero": (
        ((9, 16, 12), (9, 16, 37)), ((9, 17, 0), (9, 18, 11)), ((9, 19, 0), (9, 19, 9)),
    ),
}


@dataclass(frozen=True)
class BindFeatures:
    """Option support for one bind version; `None` version means "assume current"."""

    version: Version | None

    def supports(self, option: str) -> bool:
        since = OPTION_SINCE.get(option)
        if self.version is None:
            return True
        if any(lo <= self.version < hi for lo, hi in OPTION_BROKEN.get(option, ())):
            return False
        return since is None or self.version >= since


def parse_named_version(text: str) -> Version | None:
    """Parse `named -v` output, e.g. 'BIND 9.18.49-1~deb12u3-Debian (Extended Support Version)'."""
    m = re.search(r"BIND\s+(\d+)\.(\d+)\.(\d+)", text)
    if not m:
        return None
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)))
