"""Platform profiles: what differs between distributions is data on a small object, chosen from
a table by os-release, never `if distro == ...` branches spread through the code."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import FactsError


@dataclass(frozen=True)
class PlatformProfile:
    """Where bind lives on one family of distributions, and how it is run.

    `options_path` is the file the agent owns. On Debian it is a separate options file
    included from `named.conf`; on RHEL-like systems bind has a single `named.conf`, which the
    agent then owns whole (`owns_main_config`).
    """

    name: str
    package: str
    named_conf: str
    options_path: str
    owns_main_config: bool
    user: str
    unit: str
    working_directory: str
    pid_file: str
    named_binary: str
    checkconf_binary: str
    install_command: tuple[str, ...]
    # Text that must stay in the main named.conf (zones shipped by the distribution).
    default_zones_include: str | None = None


DEBIAN = PlatformProfile(
    name="debian",
    package="bind9",
    named_conf="/etc/bind/named.conf",
    options_path="/etc/bind/named.conf.options",
    owns_main_config=False,
    user="bind",
    unit="named",
    working_directory="/var/cache/bind",
    pid_file="/run/named/named.pid",
    named_binary="/usr/sbin/named",
    checkconf_binary="/usr/bin/named-checkconf",
    install_command=("apt-get", "install", "-y", "--no-install-recommends", "bind9", "bind9-utils"),
)

REDHAT = PlatformProfile(
    name="redhat",
    package="bind",
    named_conf="/etc/named.conf",
    options_path="/etc/named.conf",
    owns_main_config=True,
    user="named",
    unit="named",
    working_directory="/var/named",
    pid_file="/run/named/named.pid",
    named_binary="/usr/sbin/named",
    checkconf_binary="/usr/sbin/named-checkconf",
    install_command=("dnf", "install", "-y", "bind", "bind-utils"),
    default_zones_include="/etc/named.rfc1912.zones",
)

# os-release ID (or an ID_LIKE word) → profile. Order of ID_LIKE words decides ties.
PROFILES: dict[str, PlatformProfile] = {
    "debian": DEBIAN,
    "ubuntu": DEBIAN,
    "amzn": REDHAT,
    "rhel": REDHAT,
    "centos": REDHAT,
    "fedora": REDHAT,
    "rocky": REDHAT,
    "almalinux": REDHAT,
}


@dataclass(frozen=True)
class OsRelease:
    id: str
    id_like: tuple[str, ...]
    version_id: str
    pretty_name: str


def parse_os_release(text: str) -> OsRelease:
    """Parse os-release(5) text. Quotes are stripped; unknown keys ignored."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return OsRelease(
        id=values.get("ID", "linux").lower(),
        id_like=tuple(values.get("ID_LIKE", "").lower().split()),
        version_id=values.get("VERSION_ID", ""),
        pretty_name=values.get("PRETTY_NAME", values.get("NAME", "Linux")),
    )


def profile_for(os_release: OsRelease) -> PlatformProfile:
    """The profile for this OS, by ID then ID_LIKE; raises FactsError naming the ID."""
    for candidate in (os_release.id, *os_release.id_like):
        if candidate in PROFILES:
            return PROFILES[candidate]
    raise FactsError(
        f"/etc/os-release: ID={os_release.id!r} (ID_LIKE={' '.join(os_release.id_like)!r}) "
        f"is not a supported platform; supported: {', '.join(sorted(PROFILES))}"
    )
