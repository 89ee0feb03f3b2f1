"""Hypothesis over the whole settings schema (tests/settings_strategies.py derives the keys from
`settings.SCHEMA`): any settings file made of the schema's keys with any values either loads,
or raises ConfigError with one line naming the file and a key in it. Nothing else, ever. What
loads also renders bind's config on both platform families without an exception; that the
rendered config passes the real named-checkconf is tests/integration/test_settings_checkconf.py.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from dnscache_agent import planner
from dnscache_agent.errors import ConfigError
from dnscache_agent.settings import SCHEMA, Settings, load
from tests.settings_strategies import (
    DEFAULTS,
    documents,
    facts_for,
    keys_in,
    to_toml,
    value_for,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FACTS = {p: facts_for(p) for p in ("debian", "redhat")}


def load_or_error(tmp_path: Path, doc: dict[str, dict[str, Any]]) -> Settings | None:
    """Load `doc` from a file; None when it is refused with the one-line error we promise."""
    text = to_toml(doc)
    assert to_toml(tomllib.loads(text)) == text  # the strategy writes the TOML it means
    path = tmp_path / "agent.toml"
    path.write_text(text, encoding="utf-8")
    try:
        return load(path, environ={})
    except ConfigError as exc:
        msg = str(exc)
        assert "\n" not in msg and "\r" not in msg, msg
        assert msg.startswith(f"{path}: "), msg
        assert any(f": {key}: " in msg for key in keys_in(doc)), msg
        assert len(msg) < 500, msg
        return None


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(doc=documents())
def test_any_document_loads_or_names_file_and_key(tmp_path: Path,
                                                  doc: dict[str, dict[str, Any]]) -> None:
    loaded = load_or_error(tmp_path, doc)
    event("loaded" if loaded is not None else "refused")
    if loaded is None:
        return
    for facts in FACTS.values():
        change = planner.render_bind_config(facts, loaded)
        assert b"options {" in change.content


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_one_key_at_a_time(tmp_path: Path, data: st.DataObject) -> None:
    """Single-key documents: a refusal names exactly that key."""
    section = data.draw(st.sampled_from(sorted(SCHEMA)))
    key = data.draw(st.sampled_from(sorted(SCHEMA[section][1])))
    value = data.draw(value_for(DEFAULTS[section][key]))
    path = tmp_path / "agent.toml"
    path.write_text(to_toml({section: {key: value}}), encoding="utf-8")
    try:
        load(path, environ={})
    except ConfigError as exc:
        msg = str(exc)
        assert msg.startswith(f"{path}: {section}.{key}: ") and "\n" not in msg, msg


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
@given(doc=documents(valid_keys=True))
def test_documents_of_valid_keys_load_or_name_the_rule_across_keys(
        tmp_path: Path, doc: dict[str, dict[str, Any]]) -> None:
    """Values each key accepts alone: what is refused now is a rule across keys (ports), still
    one line naming the file and a key; what loads renders on both platforms."""
    loaded = load_or_error(tmp_path, doc)
    event("loaded" if loaded is not None else "refused")
    if loaded is not None:
        for facts in FACTS.values():
            planner.render_bind_config(facts, loaded)
