"""The Jinja2 environment: StrictUndefined, so a template that names a missing value fails at
render time in tests, not as a half-written config on a host."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2


def templates_dir() -> Path:
    """Templates ship inside the wheel as dnscache_agent/templates; a source checkout keeps them
    at the top of the repository (where they are edited)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "templates", here.parent / "templates"):
        if (candidate / "named.conf.options.j2").is_file():
            return candidate
    raise FileNotFoundError(f"templates not found next to {here}")


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
        trim_blocks=False,
    )


def render(template: str, **context: Any) -> str:
    """Render a template by name; always ends with exactly one newline."""
    text = environment().get_template(template).render(**context)
    return text.rstrip("\n") + "\n"
