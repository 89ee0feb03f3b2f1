"""Whatever settings load, the bind config planned from them passes the real named-checkconf:
hypothesis draws whole settings files from the schema (tests/settings_strategies.py), keeps
those that load, renders bind's config for Debian (bind 9.18, named.conf.options) and Amazon
Linux 2 (bind 9.11 options, a whole named.conf), and runs this machine's named-checkconf on
each. Bounded: 40 examples, two named-checkconf runs each."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, assume, given, settings

from dnscache_agent import planner
from dnscache_agent.errors import ConfigError
from dnscache_agent.settings import load
from tests.machinery import skip_or_fail
from tests.settings_strategies import documents, facts_for, to_toml

FACTS = {p: facts_for(p) for p in ("debian", "redhat")}


def _checkconf() -> str:
    path = shutil.which("named-checkconf") or (
        "/usr/sbin/named-checkconf" if Path("/usr/sbin/named-checkconf").exists() else None)
    if path is None:
        skip_or_fail("named-checkconf is not installed (package bind9 / bind9-utils)")
    assert path is not None
    return path


def _relocate(text: str, tmp: Path) -> str:
    """The Red Hat named.conf names host paths (its directory, the rfc1912 zones): point them
    into `tmp` so named-checkconf runs without a chroot."""
    (tmp / "named").mkdir(exist_ok=True)
    (tmp / "named.rfc1912.zones").write_text("")
    return (text.replace('directory "/var/named"', f'directory "{tmp}/named"')
                .replace('"/etc/named.rfc1912.zones"', f'"{tmp}/named.rfc1912.zones"'))


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
@given(doc=documents(valid_keys=True))
def test_every_loadable_settings_file_plans_a_config_named_accepts(
        tmp_path: Path, doc: dict[str, dict[str, Any]]) -> None:
    checkconf = _checkconf()
    path = tmp_path / "agent.toml"
    path.write_text(to_toml(doc), encoding="utf-8")
    try:
        loaded = load(path, environ={})
    except ConfigError:
        assume(False)
        return
    for platform, facts in FACTS.items():
        text = planner.render_bind_config(facts, loaded).content.decode()
        if platform == "redhat":
            text = _relocate(text, tmp_path)
        conf = tmp_path / f"{platform}.conf"
        conf.write_text(text)
        result = subprocess.run([checkconf, str(conf)], capture_output=True, text=True,
                                timeout=30)
        assert result.returncode == 0, (f"{platform}: named-checkconf rejected the plan for\n"
                                        f"{to_toml(doc)}\n{result.stdout}{result.stderr}")
