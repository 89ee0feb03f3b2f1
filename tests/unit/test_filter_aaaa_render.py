"""`[cache] filter_aaaa`: bind's filter-aaaa plugin rendered where the installed bind has it
(9.16 and later), a comment saying it is not applied where it does not (9.11), nothing when
off. tests/integration/test_budget_fixes_checkconf.py runs the real named-checkconf on it."""
from __future__ import annotations

from dnscache_agent.bind_version import BindFeatures
from dnscache_agent.settings import from_mapping
from tests.unit.test_render_golden import rendered, settings

PLUGIN = ('\n// [cache] filter_aaaa: no AAAA records in answers to IPv4 clients when the name '
          'has an A.\nplugin query "filter-aaaa.so" {\n\tfilter-aaaa-on-v4 yes;\n};\n')


def test_the_setting_defaults_off_and_loads() -> None:
    assert from_mapping({}).cache.filter_aaaa is False
    assert from_mapping({"cache": {"filter_aaaa": True}}).cache.filter_aaaa is True


def test_off_renders_nothing() -> None:
    for case in ("debian12-9.18", "al2023-9.16", "al2-9.11"):
        assert "filter-aaaa" not in rendered(case)


def test_debian_9_18_renders_the_plugin_after_the_options_block() -> None:
    text = rendered("debian12-9.18", settings(filter_aaaa=True))
    assert text.endswith("};\n" + PLUGIN) or text.rstrip("\n").endswith(PLUGIN.rstrip("\n"))
    assert text.index("statistics-channels") < text.index("plugin query")


def test_redhat_9_16_renders_it_before_the_zones_include() -> None:
    text = rendered("al2023-9.16", settings(filter_aaaa=True))
    assert PLUGIN in text
    assert text.index("plugin query") < text.index('include "/etc/named.rfc1912.zones"')


def test_bind_9_11_leaves_it_out_with_a_note() -> None:
    text = rendered("al2-9.11", settings(filter_aaaa=True))
    assert "plugin" not in text.replace("no filter-aaaa plugin", "")
    assert "// [cache] filter_aaaa is set, but this bind has no filter-aaaa plugin" in text
    assert not BindFeatures((9, 11, 4)).supports("filter-aaaa-plugin")
    assert BindFeatures((9, 16, 0)).supports("filter-aaaa-plugin")
