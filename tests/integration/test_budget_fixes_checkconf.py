"""The budget fixes as settings pass the real named-checkconf: `[cache] filter_aaaa` renders
bind's filter-aaaa plugin by its bare name, which this machine's Debian bind9 package resolves
in its plugin directory (named-checkconf loads the plugin to check its options), next to the
negative-cache floor `top` names (min-ncache-ttl 90)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.machinery import skip_or_fail
from tests.unit.test_render_golden import rendered, settings


def _checkconf() -> str:
    path = shutil.which("named-checkconf") or "/usr/sbin/named-checkconf"
    if not Path(path).exists():
        skip_or_fail("named-checkconf is not installed (package bind9)")
    return path


def _check(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    conf = tmp_path / "named.conf.options"
    conf.write_text(text.replace('directory "/var/cache/bind"', f'directory "{tmp_path}"'))
    return subprocess.run([_checkconf(), str(conf)], capture_output=True, text=True,
                          timeout=30)


def test_debian_bind9_ships_the_plugin_the_template_names() -> None:
    if shutil.which("dpkg") is None:
        skip_or_fail("dpkg missing: not a Debian machine")
    files = subprocess.run(["dpkg", "-L", "bind9", "bind9-libs"], capture_output=True,
                           text=True, timeout=30).stdout.split()
    assert any(f.endswith("/bind/filter-aaaa.so") for f in files), "no filter-aaaa.so"


def test_named_checkconf_accepts_the_fixes(tmp_path: Path) -> None:
    text = rendered("debian12-9.18", settings(filter_aaaa=True, min_ncache_ttl=90,
                                              min_cache_ttl=30))
    assert 'plugin query "filter-aaaa.so"' in text and "\tmin-ncache-ttl 90;\n" in text
    result = _check(text, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_named_checkconf_really_loads_the_plugin(tmp_path: Path) -> None:
    """The control: a plugin name that does not exist, or a bad plugin option, fails, so the
    pass above means the plugin was found and its options checked."""
    text = rendered("debian12-9.18", settings(filter_aaaa=True))
    missing = _check(text.replace('"filter-aaaa.so"', '"filter-aaaa-missing.so"'), tmp_path)
    assert missing.returncode != 0 and "filter-aaaa-missing.so" in missing.stdout
    bad = _check(text.replace("filter-aaaa-on-v4 yes", "filter-aaaa-on-v4 maybe"), tmp_path)
    assert bad.returncode != 0
