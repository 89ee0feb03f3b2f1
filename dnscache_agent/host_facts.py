"""The facts layer: what host is this? Read-only; every path through the `Root`. Returns frozen
dataclasses that the pure planner consumes.

A staged tree (`--root DIR`, an image build) is not the machine the agent runs on, so no fact
about it comes from the build host: named's version comes from the tree's package database
(dpkg's status file) or an explicit `--bind-version`, and CPUs/memory are left to first boot
(the image is tuned for the smallest instance unless settings fix the numbers; the first boot's
plan re-tunes and the repair applies it).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psutil

from . import resolvers, tuning
from .bind_version import Version, parse_named_version
from .checkpoint import StateStore
from .commands import Runner
from .errors import ConfigError, FactsError
from .imds import Ec2Facts, ImdsClient
from .platform import OsRelease, PlatformProfile, parse_os_release, profile_for
from .resolvers import Detection, HostView
from .rootfs import Root
from .settings import Settings

log = logging.getLogger(__name__)

OS_RELEASE_PATHS = ("/etc/os-release", "/usr/lib/os-release")
UNIT_DIRS = ("/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")
BIN_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
DPKG_STATUS = "/var/lib/dpkg/status"
RPM_DBS = ("/var/lib/rpm", "/usr/lib/sysimage/rpm")


@dataclass(frozen=True)
class Resources:
    """CPUs and memory the cache is tuned for. `measured` is False for a staged tree: the
    numbers are then tuning's first-boot defaults, not the build host's."""

    cpus: int
    memory_bytes: int
    measured: bool = True


@dataclass(frozen=True)
class BindFacts:
    installed: bool
    version: Version | None
    version_text: str


@dataclass(frozen=True)
class Facts:
    os: OsRelease
    profile: PlatformProfile
    bind: BindFacts
    resources: Resources
    ec2: Ec2Facts | None
    resolver: Detection
    view: HostView
    # "systemd" when systemd manages services here (PID 1 on a live host; installed in a
    # staged tree), else "none": the agent then starts and supervises its processes itself.
    init: str = "none"


def read_os_release(root: Root) -> OsRelease:
    for path in OS_RELEASE_PATHS:
        text = root.read_text(path)
        if text is not None:
            return parse_os_release(text)
    raise FactsError(f"{root.path(OS_RELEASE_PATHS[0])}: missing; cannot tell which platform "
                     "this is")


def parse_bind_version_option(text: str) -> Version:
    """`--bind-version X.Y[.Z]` as a version. Raises ConfigError naming the option."""
    m = re.fullmatch(r"\s*(\d{1,3})\.(\d{1,3})(?:\.(\d{1,4}))?\s*", text)
    if not m:
        raise ConfigError(f"--bind-version: {text!r} is not a version like 9.11 or 9.16.23")
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))


def dpkg_version(status: str, package: str) -> tuple[Version | None, str]:
    """The installed version of `package` in a dpkg status file's text: the parsed upstream
    version (epoch and Debian revision dropped) and the raw `Version:` field, or (None, "")
    when the package is not installed. Pure."""
    for stanza in re.split(r"\n\s*\n", status):
        fields = dict(re.findall(r"^([A-Za-z-]+):[ \t]*(.*)$", stanza, re.M))
        if fields.get("Package") != package:
            continue
        if not fields.get("Status", "").endswith(" installed"):
            continue
        raw = fields.get("Version", "")
        upstream = raw.split(":", 1)[-1]
        m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", upstream)
        if m:
            return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)), raw
        return None, raw
    return None, ""


def read_bind(root: Root, profile: PlatformProfile, runner: Runner,
              bind_version: str | None = None) -> BindFacts:
    """Whether named is installed in `root`, and its version.

    An explicit `bind_version` (`--bind-version`) wins. Otherwise the live host answers with
    `named -v`; a staged tree never runs a binary and never asks the build host: its dpkg
    status file names the version. An rpm database cannot be read without rpm, so a Red Hat
    tree needs `--bind-version`. Raises FactsError (one line, what to pass) when a staged
    tree's version cannot be known.
    """
    binary = root.path(profile.named_binary)
    installed = binary.exists()
    if bind_version is not None:
        given = parse_bind_version_option(bind_version)
        return BindFacts(installed, given, f"BIND {bind_version.strip()} (--bind-version)")
    if not installed:
        return BindFacts(False, None, "")
    if root.is_live:
        result = runner.run([str(binary), "-v"], timeout=10)
        text = result.stdout.strip()
        return BindFacts(True, parse_named_version(text), text)
    status = root.read_text(DPKG_STATUS)
    if status is not None:
        version, raw = dpkg_version(status, profile.package)
        if version is not None:
            return BindFacts(True, version,
                             f"BIND {'.'.join(map(str, version))} ({profile.package} {raw} "
                             f"in {DPKG_STATUS})")
        raise FactsError(f"{root.path(DPKG_STATUS)}: no installed {profile.package} with a "
                         f"readable version, but {profile.named_binary} exists; pass "
                         "--bind-version X.Y")
    if any(root.path(db).is_dir() for db in RPM_DBS):
        raise FactsError(f"{root.base}: the bind version of an rpm tree cannot be read "
                         "without rpm; pass --bind-version X.Y (the bind the image installs)")
    raise FactsError(f"{root.path(DPKG_STATUS)}: missing, so the tree's bind version is "
                     "unknown; pass --bind-version X.Y")


def read_resources(root: Root | None = None) -> Resources:
    """The live host's CPUs and memory. A staged tree gets tuning's first-boot defaults
    instead: the build host's numbers would tune every image for the builder."""
    if root is not None and not root.is_live:
        return Resources(cpus=tuning.FIRST_BOOT_CPUS,
                         memory_bytes=tuning.FIRST_BOOT_MEMORY_BYTES, measured=False)
    return Resources(cpus=psutil.cpu_count(logical=True) or 1,
                     memory_bytes=int(psutil.virtual_memory().total))


def read_view(root: Root, store: StateStore) -> HostView:
    """Everything resolver backends look at, with pristine contents from the checkpoint."""
    unreadable: set[str] = set()

    def guarded(read: Callable[[str], bytes | None], path: str) -> bytes | None:
        try:
            return read(path)
        except PermissionError:
            unreadable.add(path)
            return None

    files = {p: guarded(store.pristine, p) for p in resolvers.all_inputs()}
    links = {p: store.pristine_link(p) for p in resolvers.all_inputs()}
    current = {p: guarded(root.read_bytes, p) for p in resolvers.all_inputs()}
    binaries = frozenset(
        b for b in resolvers.all_binaries()
        if any(root.path(f"{d}/{b}").exists() for d in BIN_DIRS))
    units = frozenset(
        u for u in resolvers.all_units()
        if any(root.path(f"{d}/{u}").exists() for d in UNIT_DIRS))
    return HostView(files=files, links=links, binaries=binaries, units=units, current=current,
                    unreadable=frozenset(unreadable))


def gather(root: Root, settings: Settings, *, runner: Runner | None = None,
           imds: ImdsClient | None = None, backend_override: str | None = None,
           bind_version: str | None = None) -> Facts:
    """Read every fact the planner needs. EC2 facts are skipped when IMDS is disabled;
    `bind_version` (`--bind-version`) overrides the named version read from the host/tree."""
    runner = runner or Runner()
    os_release = read_os_release(root)
    profile = profile_for(os_release)
    store = StateStore(root, settings.agent.state_dir)
    view = read_view(root, store)
    ec2 = None
    if settings.imds.enabled:
        client = imds or ImdsClient(settings.imds.endpoint, settings.imds.timeout)
        ec2 = client.fetch()
    detection = resolvers.detect(view, backend_override or settings.resolver.backend)
    return Facts(
        os=os_release,
        profile=profile,
        bind=read_bind(root, profile, runner, bind_version),
        resources=read_resources(root),
        ec2=ec2,
        resolver=detection,
        view=view,
        init=read_init(root),
    )


#: Where systemd's own binary is in a staged tree (merged /usr or not).
SYSTEMD_BINARIES = ("/usr/lib/systemd/systemd", "/lib/systemd/systemd")


def read_init(root: Root) -> str:
    """"systemd" when systemd runs the services of this host: PID 1 on a live root, installed
    in a staged tree (an image boots with it); "none" otherwise."""
    if root.is_live:
        return "systemd" if Path("/run/systemd/system").is_dir() else "none"
    return "systemd" if any(root.exists(p) for p in SYSTEMD_BINARIES) else "none"


def to_dict(facts: Facts) -> dict[str, object]:
    """A JSON-ready view for `dnscache-agent facts --json`."""
    ec2: dict[str, object] | None = None
    if facts.ec2:
        ec2 = {
            "instance_id": facts.ec2.instance_id,
            "instance_type": facts.ec2.instance_type,
            "region": facts.ec2.region,
            "availability_zone": facts.ec2.availability_zone,
            "interfaces": [
                {"mac": i.mac, "device_number": i.device_number, "interface_id": i.interface_id,
                 "vpc_id": i.vpc_id, "vpc_cidrs": list(i.vpc_cidrs),
                 "vpc_resolver": i.vpc_resolver}
                for i in facts.ec2.interfaces
            ],
        }
    return {
        "os": {"id": facts.os.id, "id_like": list(facts.os.id_like),
               "version_id": facts.os.version_id, "pretty_name": facts.os.pretty_name},
        "platform": facts.profile.name,
        "bind": {"installed": facts.bind.installed,
                 "version": ".".join(map(str, facts.bind.version)) if facts.bind.version else None,
                 "package": facts.profile.package, "unit": facts.profile.unit},
        "resources": {"cpus": facts.resources.cpus,
                      "memory_bytes": facts.resources.memory_bytes,
                      "measured": facts.resources.measured},
        "ec2": ec2,
        "resolver": {"backend": facts.resolver.backend, "reason": facts.resolver.reason,
                     "candidates": [{"backend": b, "reason": r}
                                    for b, r in facts.resolver.candidates]},
    }
