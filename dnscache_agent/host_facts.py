"""The facts layer: what host is this? Read-only; every path through the `Root`. Returns frozen
dataclasses that the pure planner consumes."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import psutil

from . import resolvers
from .bind_version import Version, parse_named_version
from .checkpoint import StateStore
from .commands import Runner
from .errors import FactsError
from .imds import Ec2Facts, ImdsClient
from .platform import OsRelease, PlatformProfile, parse_os_release, profile_for
from .resolvers import Detection, HostView
from .rootfs import Root
from .settings import Settings

log = logging.getLogger(__name__)

OS_RELEASE_PATHS = ("/etc/os-release", "/usr/lib/os-release")
UNIT_DIRS = ("/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")
BIN_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")


@dataclass(frozen=True)
class Resources:
    cpus: int
    memory_bytes: int


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


def read_os_release(root: Root) -> OsRelease:
    for path in OS_RELEASE_PATHS:
        text = root.read_text(path)
        if text is not None:
            return parse_os_release(text)
    raise FactsError(f"{root.path(OS_RELEASE_PATHS[0])}: missing; cannot tell which platform "
                     "this is")


def read_bind(root: Root, profile: PlatformProfile, runner: Runner) -> BindFacts:
    """Whether named is installed in `root`, and its version from `named -v`."""
    binary = root.path(profile.named_binary)
    if not binary.exists():
        return BindFacts(False, None, "")
    argv = [str(binary), "-v"]
    if not root.is_live:
        # A staged tree's named may not run on this host; use the host's own named only
        # when it is the same binary, otherwise assume the current version.
        host = shutil.which("named") or profile.named_binary
        if not Path(host).exists():
            return BindFacts(True, None, "")
        argv = [host, "-v"]
    result = runner.run(argv, timeout=10)
    text = result.stdout.strip()
    return BindFacts(True, parse_named_version(text), text)


def read_resources() -> Resources:
    return Resources(cpus=psutil.cpu_count(logical=True) or 1,
                     memory_bytes=int(psutil.virtual_memory().total))


def read_view(root: Root, store: StateStore) -> HostView:
    """Everything resolver backends look at, with pristine contents from the checkpoint."""
    files = {p: store.pristine(p) for p in resolvers.all_inputs()}
    links = {p: store.pristine_link(p) for p in resolvers.all_inputs()}
    current = {p: root.read_bytes(p) for p in resolvers.all_inputs()}
    binaries = frozenset(
        b for b in resolvers.all_binaries()
        if any(root.path(f"{d}/{b}").exists() for d in BIN_DIRS))
    units = frozenset(
        u for u in resolvers.all_units()
        if any(root.path(f"{d}/{u}").exists() for d in UNIT_DIRS))
    return HostView(files=files, links=links, binaries=binaries, units=units, current=current)


def gather(root: Root, settings: Settings, *, runner: Runner | None = None,
           imds: ImdsClient | None = None, backend_override: str | None = None) -> Facts:
    """Read every fact the planner needs. EC2 facts are skipped when IMDS is disabled."""
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
        bind=read_bind(root, profile, runner),
        resources=read_resources(),
        ec2=ec2,
        resolver=detection,
        view=view,
    )


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
                      "memory_bytes": facts.resources.memory_bytes},
        "ec2": ec2,
        "resolver": {"backend": facts.resolver.backend, "reason": facts.resolver.reason,
                     "candidates": [{"backend": b, "reason": r}
                                    for b, r in facts.resolver.candidates]},
    }
