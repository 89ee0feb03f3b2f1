"""The agent's settings file (`agent.toml`): parsed into frozen dataclasses, with every key checked
against a schema. Unknown keys, wrong types, malformed addresses, out-of-range numbers and strings
that could inject into a rendered config are rejected with one line naming the file and key."""

from __future__ import annotations

import ipaddress
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on the older images we target
    import tomli as tomllib

DEFAULT_CONFIG_PATH = "/etc/dnscache-agent/agent.toml"
AMAZON_DNS_V4 = "169.254.169.253"
AMAZON_DNS_V6 = "fd00:ec2::253"

_DOMAIN_RE = re.compile(r"^(?=.{1,253}\.?$)([A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.)*"
                        r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.?$")
_CW_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9.\-_/#:]{1,255}$")
_BACKEND_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


@dataclass(frozen=True)
class CacheSettings:
    """How the local bind cache is rendered. `None` for a tunable means: derive from facts."""

    forwarders: tuple[str, ...] = (AMAZON_DNS_V4,)
    ipv6_forwarder: bool = False
    max_cache_size_mb: int | None = None
    recursive_clients: int | None = None
    serve_stale: bool = True
    stale_answer_ttl: int = 30
    max_stale_ttl: int = 86400
    stale_refresh_time: int = 30
    prefetch_trigger: int = 2
    prefetch_eligibility: int = 9
    min_cache_ttl: int = 0
    min_ncache_ttl: int = 0
    max_ncache_ttl: int = 300
    # bind's filter-aaaa plugin for IPv4 clients (9.16+; older versions: left out, noted).
    filter_aaaa: bool = False
    statistics_port: int = 8053
    health_name: str = "amazonaws.com"


@dataclass(frozen=True)
class ResolverSettings:
    """How the host's resolver is pointed at the cache."""

    backend: str = "auto"
    fallback_servers: int = 2
    timeout: int = 1
    attempts: int = 2


@dataclass(frozen=True)
class ImdsSettings:
    endpoint: str = "http://169.254.169.254"
    timeout: float = 1.0
    enabled: bool = True


@dataclass(frozen=True)
class BudgetSettings:
    limit_pps: int = 1024
    warn_headroom_pct: float = 20.0


@dataclass(frozen=True)
class MetricsSettings:
    cloudwatch: bool = False
    namespace: str = "DnscacheAgent"
    high_resolution: bool = False
    region: str = ""
    endpoint_url: str = ""
    prometheus_port: int = 0
    textfile: str = ""
    #: Catalogue keys sent to CloudWatch per instance always, beyond the default set.
    cloudwatch_include: tuple[str, ...] = ()
    #: The `Fleet` dimension value for fleet aggregates (e.g. the Auto Scaling group) ...
    fleet: str = ""
    #: ... or the instance tag (read from IMDS) that holds it, when `fleet` is empty.
    fleet_tag: str = ""


@dataclass(frozen=True)
class DaemonSettings:
    verify_interval: int = 60
    stats_interval: float = 1.0


@dataclass(frozen=True)
class AgentSettings:
    """Where the agent keeps its checkpoints (a host path, under --root)."""

    state_dir: str = "/var/lib/dnscache-agent"


@dataclass(frozen=True)
class PacerSettings:
    """The budget-pacing forwarder between named and the Amazon resolver (`dnscache-agent
    pacer`): named forwards to listen:port, it sends to the forwarders at no more than
    limit_pps * (1 - margin_pct/100) packets in any second (see dnscache_agent/pacer/)."""

    enabled: bool = True
    listen: str = "127.0.0.1"
    port: int = 5354
    margin_pct: float = 5.0
    burst: int = 4
    stats_file: str = "/run/dnscache-agent-pacer/stats.json"
    warm_file: str = "/var/lib/dnscache-agent-pacer/warm.json"
    warm_seed: str = ""
    warm_max: int = 5000


@dataclass(frozen=True)
class Settings:
    agent: AgentSettings = field(default_factory=AgentSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    resolver: ResolverSettings = field(default_factory=ResolverSettings)
    imds: ImdsSettings = field(default_factory=ImdsSettings)
    budget: BudgetSettings = field(default_factory=BudgetSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    pacer: PacerSettings = field(default_factory=PacerSettings)
    source: str = "<defaults>"

    @property
    def all_forwarders(self) -> tuple[str, ...]:
        """Forwarders in order, with the IPv6 Amazon resolver appended when enabled."""
        extra = (AMAZON_DNS_V6,) if self.cache.ipv6_forwarder else ()
        return tuple(dict.fromkeys(self.cache.forwarders + extra))


# --- validators: each returns the normalised value or raises ValueError with the reason ---

Check = Callable[[Any], Any]


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {v!r}")
    return v


def _int(lo: int, hi: int, auto: bool = False) -> Check:
    def check(v: Any) -> int | None:
        if auto and v == "auto":
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            hint = ' or "auto"' if auto else ""
            raise ValueError(f"expected an integer{hint}, got {v!r}")
        if not lo <= v <= hi:
            raise ValueError(f"{v} is out of range {lo}..{hi}")
        return v

    return check


def _float(lo: float, hi: float) -> Check:
    def check(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"expected a number, got {v!r}")
        if not lo <= v <= hi:
            raise ValueError(f"{v} is out of range {lo}..{hi}")
        return float(v)

    return check


def _ip(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"expected an IP address string, got {v!r}")
    # A scoped IPv6 address ("fe80::1%eth0") carries free text after the "%" that would be
    # rendered verbatim into named.conf; forwarders never need one.
    if "%" in v:
        raise ValueError(f"{v!r}: scoped addresses are not allowed")
    try:
        return str(ipaddress.ip_address(v))
    except ValueError:
        raise ValueError(f"{v!r} is not an IP address") from None


def _ip_list(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not v:
        raise ValueError("expected a non-empty list of IP addresses")
    if len(v) > 8:
        raise ValueError("at most 8 forwarders")
    return tuple(_ip(x) for x in v)


def _pattern(regex: re.Pattern[str], what: str, allow_empty: bool = False) -> Check:
    def check(v: Any) -> str:
        if not isinstance(v, str):
            raise ValueError(f"expected a string, got {v!r}")
        if allow_empty and v == "":
            return v
        # fullmatch: "$" alone would also accept a trailing newline.
        if not regex.fullmatch(v):
            raise ValueError(f"{v!r} is not a valid {what}")
        return v

    return check


def _forwarder_list(v: Any) -> tuple[str, ...]:
    """Forwarders: unicast addresses of another host. Loopback would make named forward to
    itself (or to whatever local process holds the port), and unspecified, multicast,
    broadcast or reserved addresses never answer."""
    out = _ip_list(v)
    for text in out:
        addr = ipaddress.ip_address(text)
        mapped = getattr(addr, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is 127.0.0.1
        for a in (mapped, addr) if mapped is not None else (addr,):
            why = ("a loopback address: named would forward to itself" if a.is_loopback
                   else "unspecified" if a.is_unspecified
                   else "multicast" if a.is_multicast
                   else "a broadcast or reserved address" if a.is_reserved
                   or a == ipaddress.IPv4Address("255.255.255.255")
                   else "in 0.0.0.0/8 (this network)"
                   if a.version == 4 and a in ipaddress.IPv4Network("0.0.0.0/8") else "")
            if why:
                raise ValueError(f"{text} is {why}; forwarders must be unicast addresses of "
                                 "a resolver on another host")
    return out


_URL_HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


def _url(v: Any) -> str:
    """`http(s)://host[:port]` (a trailing "/" is dropped): a DNS name, an IPv4 address or a
    bracketed IPv6 address, a port in 1..65535, nothing else (no user, path or query)."""
    bad = ValueError(f"{v!r} is not an http(s)://host[:port] URL")
    if not isinstance(v, str) or len(v) > 300 or not v.isascii() or not v.isprintable():
        raise bad
    m = re.fullmatch(r"(https?)://(\[[0-9A-Fa-f:.]+\]|[^/:\[\]@?#]+)(?::(\d{1,5}))?/?", v)
    if not m:
        raise bad
    host = m.group(2)
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise bad from None
    elif not _URL_HOST_RE.fullmatch(host) or ".." in host:
        raise bad
    if m.group(3) is not None and not 1 <= int(m.group(3)) <= 65535:
        raise ValueError(f"{v!r}: port {int(m.group(3))} is out of range 1..65535")
    return v.rstrip("/")


def _optional_url(v: Any) -> str:
    return "" if v == "" else _url(v)


def _cw_namespace(v: Any) -> str:
    v = _pattern(_CW_NAMESPACE_RE, "CloudWatch namespace")(v)
    if v.startswith("AWS/"):
        raise ValueError("namespaces starting with 'AWS/' are reserved by AWS")
    return str(v)


def _cloudwatch_include(v: Any) -> tuple[str, ...]:
    """Metric names (catalogue keys or CloudWatch names) → catalogue keys, in order."""
    from .stats.catalogue import CATALOGUE  # the catalogue is the one list of names

    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ValueError("expected a list of metric names")
    by_name = {n: m for m in CATALOGUE if m.cloudwatch_name
               for n in (m.key, m.cloudwatch_name)}
    out: list[str] = []
    for name in v:
        metric = by_name.get(name)
        if metric is None:
            raise ValueError(f"unknown CloudWatch metric {name[:60]!r} (a catalogue key such as "
                             "'client_qps' or a CloudWatch name such as 'ClientQueries'; see "
                             "the README's metrics table)")
        if metric.key not in out:
            out.append(metric.key)
    return tuple(out)


def _cw_dimension_value(v: Any) -> str:
    """A CloudWatch dimension value: up to 1024 printable characters, or empty (unset)."""
    if not isinstance(v, str):
        raise ValueError(f"expected a string, got {v!r}")
    if len(v) > 1024 or any(not c.isprintable() for c in v) or v != v.strip():
        raise ValueError(f"{v[:60]!r}: up to 1024 printable characters, no surrounding spaces")
    return v


def _imds_tag_key(v: Any) -> str:
    """An instance tag key IMDS can expose (no '/', at most 128 characters), or empty."""
    if not isinstance(v, str):
        raise ValueError(f"expected a string, got {v!r}")
    if v and not re.fullmatch(r"[A-Za-z0-9 +\-=._:@]{1,128}", v):
        raise ValueError(f"{v[:60]!r} is not a tag key IMDS exposes (letters, digits, spaces "
                         "and + - = . _ : @, at most 128)")
    return v


def _loopback(v: Any) -> str:
    """A loopback address: the pacer serves named on this host only."""
    v = _ip(v)
    if not ipaddress.ip_address(v).is_loopback:
        raise ValueError(f"{v!r} is not a loopback address (127.0.0.0/8 or ::1)")
    return v


def _file_path(v: Any) -> str:
    """An absolute file path (not a directory, no '..')."""
    v = _abs_path(v)
    if not v or v.endswith("/") or ".." in v.split("/"):
        raise ValueError(f"{v!r} must be an absolute file path without '..'")
    return v


def _optional_file_path(v: Any) -> str:
    return "" if v == "" else _file_path(v)


def _backend(v: Any) -> str:
    """"auto" or a name from the resolvers table (imported here: resolvers import settings)."""
    from .resolvers import BACKENDS

    v = _pattern(_BACKEND_RE, "backend name")(v)
    if v != "auto" and v not in BACKENDS:
        raise ValueError(f"unknown backend {v!r} (known: auto, {', '.join(BACKENDS)})")
    return str(v)


#: Ports below this belong to system services: 53 is named's own DNS port, 853 DNS over TLS,
#: 953 named's rndc channel. The agent's own listeners stay above it.
_FIRST_UNPRIVILEGED_PORT = 1024


def _listen_port(*, zero_disables: bool) -> Check:
    """A loopback port the agent or named listens on: 1024..65535 (0 also, when it means
    "off")."""
    def check(v: Any) -> int | None:
        v = _int(0 if zero_disables else 1, 65535)(v)
        if v == 0 and zero_disables:
            return v
        if v is not None and v < _FIRST_UNPRIVILEGED_PORT:
            raise ValueError(f"{v} is a system port (53 is named's DNS port, 953 its rndc "
                             f"channel); use one in {_FIRST_UNPRIVILEGED_PORT}..65535")
        return v

    return check


def _abs_path(v: Any) -> str:
    if not isinstance(v, str) or (v and (not v.startswith("/") or "\n" in v or "\0" in v)):
        raise ValueError(f"{v!r} is not an absolute path")
    return v


def _state_dir(v: Any) -> str:
    """An absolute directory that stays inside --root: not empty, no ".." components."""
    v = _abs_path(v)
    if not v or v == "/" or ".." in v.split("/"):
        raise ValueError(f"{v!r} must be an absolute directory below / without '..'")
    return v


def _key_name(section: str, key: str) -> str:
    """`section.key` for messages; an odd key (quotes, newlines) is shown quoted, so the error
    stays one line."""
    return f"{section}.{key}" if re.fullmatch(r"[A-Za-z0-9_-]+", key) else f"{section}.{key!r}"


_Schema = Mapping[str, Check]

SCHEMA: dict[str, tuple[type, _Schema]] = {
    "agent": (AgentSettings, {
        "state_dir": _state_dir,
    }),
    "cache": (CacheSettings, {
        "forwarders": _forwarder_list,
        "ipv6_forwarder": _bool,
        "max_cache_size_mb": _int(8, 262144, auto=True),
        "recursive_clients": _int(100, 100000, auto=True),
        "serve_stale": _bool,
        "stale_answer_ttl": _int(1, 3600),
        "max_stale_ttl": _int(1, 7 * 86400),
        "stale_refresh_time": _int(0, 3600),
        "prefetch_trigger": _int(0, 10),
        "prefetch_eligibility": _int(0, 3600),
        "min_cache_ttl": _int(0, 90),
        "min_ncache_ttl": _int(0, 90),
        "max_ncache_ttl": _int(0, 7 * 86400),
        "filter_aaaa": _bool,
        "statistics_port": _listen_port(zero_disables=False),
        "health_name": _pattern(_DOMAIN_RE, "domain name"),
    }),
    "resolver": (ResolverSettings, {
        "backend": _backend,
        "fallback_servers": _int(0, 2),
        "timeout": _int(1, 30),
        "attempts": _int(1, 5),
    }),
    "imds": (ImdsSettings, {
        "endpoint": _url,
        "timeout": _float(0.05, 10.0),
        "enabled": _bool,
    }),
    "budget": (BudgetSettings, {
        "limit_pps": _int(1, 1_000_000),
        "warn_headroom_pct": _float(0.0, 100.0),
    }),
    "metrics": (MetricsSettings, {
        "cloudwatch": _bool,
        "namespace": _cw_namespace,
        "high_resolution": _bool,
        "region": _pattern(re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$"), "AWS region", allow_empty=True),
        "endpoint_url": _optional_url,
        "prometheus_port": _listen_port(zero_disables=True),
        "textfile": _abs_path,
        "cloudwatch_include": _cloudwatch_include,
        "fleet": _cw_dimension_value,
        "fleet_tag": _imds_tag_key,
    }),
    "daemon": (DaemonSettings, {
        "verify_interval": _int(5, 86400),
        "stats_interval": _float(0.2, 60.0),
    }),
    "pacer": (PacerSettings, {
        "enabled": _bool,
        "listen": _loopback,
        "port": _int(1024, 65535),
        "margin_pct": _float(0.0, 50.0),
        "burst": _int(1, 50),
        "stats_file": _file_path,
        "warm_file": _file_path,
        "warm_seed": _optional_file_path,
        "warm_max": _int(0, 100000),
    }),
}

# Settings the CLI and environment may override, as (section, key).
ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "DNSCACHE_AGENT_IMDS_ENDPOINT": ("imds", "endpoint"),
    # The shipped checks' --dnscache-probe-name: the name verify and the health check resolve.
    "DNSCACHE_AGENT_HEALTH_NAME": ("cache", "health_name"),
}

SectionValues = Mapping[str, Mapping[str, Any]]


def from_mapping(data: Mapping[str, Any], source: str = "<settings>") -> Settings:
    """Build Settings from parsed TOML; raises ConfigError naming `source` and the key."""
    sections: dict[str, Any] = {}
    for section, values in data.items():
        if section not in SCHEMA:
            shown = section if re.fullmatch(r"[A-Za-z0-9_-]+", section) else repr(section)
            raise ConfigError(f"{source}: unknown section [{shown}] "
                              f"(known: {', '.join(SCHEMA)})")
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}: {section} must be a table, e.g. [{section}]")
        cls, schema = SCHEMA[section]
        checked: dict[str, Any] = {}
        for key, value in values.items():
            if key not in schema:
                raise ConfigError(f"{source}: unknown key {_key_name(section, key)} "
                                  f"(known: {', '.join(schema)})")
            try:
                checked[key] = schema[key](value)
            except ValueError as exc:
                raise ConfigError(f"{source}: {section}.{key}: {exc}") from None
        sections[section] = cls(**checked)
    return _check_across(Settings(**sections, source=source), source)


def load(path: str | Path | None, *, required: bool = False,
         environ: Mapping[str, str] | None = None) -> Settings:
    """Load settings from `path` (defaults when it is absent and not `required`), then apply
    environment overrides. Raises ConfigError with one line naming the file and key."""
    source = str(path) if path else "<defaults>"
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            if required:
                raise ConfigError(f"{path}: no such settings file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not valid UTF-8 at byte {exc.start}") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    settings = from_mapping(data, source)
    return with_overrides(settings, _env_values(environ or {}), origin="environment")


def _env_values(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for var, (section, key) in ENV_OVERRIDES.items():
        if var in environ:
            out.setdefault(section, {})[key] = environ[var]
    return out


def with_overrides(settings: Settings, overrides: SectionValues, origin: str) -> Settings:
    """Return settings with `overrides` ({section: {key: value}}) checked and applied."""
    result = settings
    for section, values in overrides.items():
        cls, schema = SCHEMA[section]
        current = getattr(result, section)
        checked = {}
        for key, value in values.items():
            try:
                checked[key] = schema[key](value)
            except ValueError as exc:
                raise ConfigError(f"{origin}: {section}.{key}: {exc}") from None
        result = replace(result, **{section: replace(current, **checked)})
    return _check_across(result, origin)


def _check_across(settings: Settings, source: str) -> Settings:
    """Rules that span keys: every loopback port the agent or named listens on is distinct.
    Raises ConfigError naming `source` and the later key."""
    ports: list[tuple[str, int]] = [("cache.statistics_port", settings.cache.statistics_port)]
    if settings.metrics.prometheus_port:
        ports.append(("metrics.prometheus_port", settings.metrics.prometheus_port))
    pacer = getattr(settings, "pacer", None)
    if pacer is not None and getattr(pacer, "enabled", False):
        ports.append(("pacer.port", int(pacer.port)))
    seen: dict[int, str] = {}
    for key, port in ports:
        if port in seen:
            raise ConfigError(f"{source}: {key}: {port} is also {seen[port]}; each listener "
                              "needs its own port")
        seen[port] = key
    return settings


def to_toml(settings: Settings) -> str:
    """Render settings as TOML (used by `facts`/docs to show the effective configuration)."""
    lines: list[str] = []
    for section in SCHEMA:
        obj = getattr(settings, section)
        lines.append(f"[{section}]")
        for f in fields(obj):
            lines.append(f"{f.name} = {_toml_value(getattr(obj, f.name))}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(v: str | int | float | bool | tuple[str, ...] | None) -> str:
    if v is None:
        return '"auto"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, tuple):
        return "[" + ", ".join(f'"{x}"' for x in v) + "]"
    return f'"{v}"'
