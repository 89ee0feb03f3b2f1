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


@dataclass(frozen=True)
class DaemonSettings:
    verify_interval: int = 60
    stats_interval: float = 1.0


@dataclass(frozen=True)
class AgentSettings:
    """Where the agent keeps its checkpoints (a host path, under --root)."""

    state_dir: str = "/var/lib/dnscache-agent"


@dataclass(frozen=True)
class Settings:
    agent: AgentSettings = field(default_factory=AgentSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    resolver: ResolverSettings = field(default_factory=ResolverSettings)
    imds: ImdsSettings = field(default_factory=ImdsSettings)
    budget: BudgetSettings = field(default_factory=BudgetSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
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


def _url(v: Any) -> str:
    if not isinstance(v, str) or not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+(:\d+)?/?", v):
        raise ValueError(f"{v!r} is not an http(s)://host[:port] URL")
    return v.rstrip("/")


def _optional_url(v: Any) -> str:
    return "" if v == "" else _url(v)


def _cw_namespace(v: Any) -> str:
    v = _pattern(_CW_NAMESPACE_RE, "CloudWatch namespace")(v)
    if v.startswith("AWS/"):
        raise ValueError("namespaces starting with 'AWS/' are reserved by AWS")
    return str(v)


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
        "forwarders": _ip_list,
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
        "statistics_port": _int(1, 65535),
        "health_name": _pattern(_DOMAIN_RE, "domain name"),
    }),
    "resolver": (ResolverSettings, {
        "backend": _pattern(_BACKEND_RE, "backend name"),
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
        "prometheus_port": _int(0, 65535),
        "textfile": _abs_path,
    }),
    "daemon": (DaemonSettings, {
        "verify_interval": _int(5, 86400),
        "stats_interval": _float(0.2, 60.0),
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
    return Settings(**sections, source=source)


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
    return result


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
