"""Hypothesis strategies for whole settings files, derived from `settings.SCHEMA` at run time, so
a key added to the schema is fuzzed without touching the tests.

Each key present gets one of: its default, a plausible value of the default's type (integers
near the usual ranges, strings from a pool that holds valid and nearly-valid addresses, URLs,
paths, names and regions for every kind of key), or junk of any TOML type. Shared by
tests/unit/test_settings_fuzz.py (load or one-line ConfigError) and
tests/integration/test_settings_checkconf.py (what loads passes named-checkconf)."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from hypothesis import strategies as st

from dnscache_agent.resolvers import BACKENDS
from dnscache_agent.settings import SCHEMA
from dnscache_agent.stats.catalogue import CATALOGUE

#: Strings that are valid for some key, and near misses of them.
STRING_POOL: tuple[str, ...] = (
    "", "auto", "bogus", " ", "a", "-", "..", "/", "\n",
    # addresses
    "169.254.169.253", "fd00:ec2::253", "10.0.0.2", "8.8.8.8", "2001:db8::53", "127.0.0.1",
    "127.0.0.53", "::1", "0.0.0.0", "::", "224.0.0.1", "255.255.255.255", "fe80::1%eth0",
    "1.2.3.4; }; include \"/etc/shadow", "300.1.1.1", "::ffff:127.0.0.1",
    # URLs
    "http://169.254.169.254", "http://127.0.0.1:9", "https://monitoring.us-east-1.amazonaws.com",
    "http://[::1]:4566", "http://[", "http://a:99999", "http://host/path", "ftp://x",
    # names, namespaces, regions
    "amazonaws.com", "example.com.", "a;b.com", "DnscacheAgent", "AWS/EC2", "Custom/DNS",
    "eu-west-1", "us-gov-west-1", "eu-west-1\n", "my-asg", "Name", "aws:autoscaling:groupName",
    # paths
    "/var/lib/dnscache-agent", "/var/lib/x/../../etc", "relative/dir",
    "/run/dnscache-agent-pacer/stats.json", "/var/lib/node_exporter/dnscache.prom", "/tmp/",
    *BACKENDS,
    *(m.key for m in CATALOGUE[:5]),
    *(m.cloudwatch_name for m in CATALOGUE[:5] if m.cloudwatch_name),
)

_junk_scalar = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(STRING_POOL),
)
JUNK = st.one_of(_junk_scalar, st.lists(_junk_scalar, max_size=10))


def _plausible(default: Any) -> st.SearchStrategy[Any]:
    if isinstance(default, bool):
        return st.booleans()
    if default is None or isinstance(default, int):  # None: a tunable that defaults to "auto"
        return st.one_of(st.just("auto"), st.integers(min_value=-2, max_value=300_000),
                         st.sampled_from([0, 1, 53, 80, 1023, 1024, 5354, 8053, 9100, 65535,
                                          65536]))
    if isinstance(default, float):
        return st.one_of(st.floats(min_value=-1.0, max_value=200.0, allow_nan=False),
                         st.integers(min_value=0, max_value=100))
    if isinstance(default, tuple):
        return st.lists(st.sampled_from(STRING_POOL), min_size=0, max_size=9)
    return st.sampled_from(STRING_POOL)


def value_for(default: Any) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(_toml_default(default)), _plausible(default), JUNK)


def _toml_default(default: Any) -> Any:
    if default is None:
        return "auto"
    if isinstance(default, tuple):
        return list(default)
    return default


def _defaults() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for section, (cls, schema) in SCHEMA.items():
        by_name = {f.name: f for f in dataclasses.fields(cls)}
        out[section] = {}
        for key in schema:
            f = by_name[key]
            default = f.default if f.default is not dataclasses.MISSING else \
                f.default_factory()  # type: ignore[misc]
            out[section][key] = default
    return out


#: {section: {key: default}} for every key in the schema.
DEFAULTS = _defaults()


def _accepted_by(section: str, key: str) -> Any:
    check = SCHEMA[section][1][key]

    def accepts(value: Any) -> bool:
        try:
            check(value)
        except ValueError:
            return False
        return True

    return accepts


def accepted_value(section: str, key: str) -> st.SearchStrategy[Any]:
    """A value the key's own validator accepts (the document may still be refused by a rule
    across keys)."""
    default = DEFAULTS[section][key]
    return st.one_of(st.just(_toml_default(default)), _plausible(default)).filter(
        _accepted_by(section, key))


@st.composite
def documents(draw: st.DrawFn, *, valid_keys: bool = False) -> dict[str, dict[str, Any]]:
    """A settings document: any subset of the schema's sections and keys, each key with a
    default, plausible or junk value (`valid_keys`: only values each key accepts alone)."""
    doc: dict[str, dict[str, Any]] = {}
    for section, keys in DEFAULTS.items():
        if not draw(st.booleans()):
            continue
        table = {}
        for key, default in keys.items():
            if draw(st.integers(0, 3)) == 0:  # most keys present, some left to the default
                continue
            table[key] = draw(accepted_value(section, key) if valid_keys else
                              value_for(default))
        doc[section] = table
    return doc


def to_toml(doc: dict[str, dict[str, Any]]) -> str:
    """TOML text for `doc` (tables of scalars and arrays)."""
    lines = []
    for section, table in doc.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_value(v)}" for key, v in table.items())
    return "\n".join(lines) + "\n"


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(type(v))


def _string(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def keys_in(doc: dict[str, dict[str, Any]]) -> list[str]:
    return [f"{section}.{key}" for section, table in doc.items() for key in table]


def facts_for(platform: str) -> Any:
    """Facts for rendering on "debian" (bind 9.18, named.conf.options) or "redhat" (bind 9.11,
    a whole named.conf), 2 CPUs and 4 GiB."""
    from dnscache_agent.host_facts import BindFacts, Facts, Resources
    from dnscache_agent.platform import DEBIAN, REDHAT, parse_os_release
    from dnscache_agent.resolvers import Detection, HostView

    os_text, profile, version = {
        "debian": ("ID=debian\nVERSION_ID=12\n", DEBIAN, (9, 18, 49)),
        "redhat": ('ID="amzn"\nID_LIKE="centos rhel fedora"\nVERSION_ID="2"\n', REDHAT,
                   (9, 11, 4)),
    }[platform]
    view = HostView(files={}, links={}, binaries=frozenset(), units=frozenset(), current={})
    return Facts(os=parse_os_release(os_text), profile=profile,
                 bind=BindFacts(True, version, f"BIND {'.'.join(map(str, version))}"),
                 resources=Resources(cpus=2, memory_bytes=4 * 1024**3), ec2=None,
                 resolver=Detection("static", "fixture", ()), view=view)
