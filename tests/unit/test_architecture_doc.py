"""docs/architecture.md stays true: every module of the package is in its table, and every
module the table names exists (the first release's page named a module that did not exist and
missed three)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "dnscache_agent"
DOC = REPO / "docs" / "architecture.md"


def package_modules() -> set[str]:
    """Module paths relative to the package, e.g. `stats/budget.py`, `pacer/queue.py`."""
    out = set()
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        if path.name in ("__init__.py", "__main__.py") or rel.startswith("units/"):
            continue
        out.add(rel)
    return out


def documented_modules(text: str) -> set[str]:
    """Module paths in the table's first column (`| `name.py` | ...`)."""
    return set(re.findall(r"^\|\s*`([\w/]+\.py)`", text, re.M))


def test_every_module_is_in_the_architecture_table() -> None:
    missing = sorted(package_modules() - documented_modules(DOC.read_text(encoding="utf-8")))
    assert not missing, f"docs/architecture.md does not describe: {', '.join(missing)}"


def test_the_architecture_table_names_only_modules_that_exist() -> None:
    ghosts = sorted(documented_modules(DOC.read_text(encoding="utf-8")) - package_modules())
    assert not ghosts, f"docs/architecture.md names modules that do not exist: {ghosts}"
