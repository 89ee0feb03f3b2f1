"""Debian bookworm images that boot systemd, for the system tests (service, resolvers, molecule).

No container registry is reachable from the test machines, so images are built locally:
`debootstrap --variant=minbase` from the Debian mirror the host already uses gives a `base`
root file system; each variant is a copy of it with extra packages installed in a chroot.
Daemons must not start on the host while packages install, so a `policy-rc.d` that exits
101 sits in the chroot during installation only.

Built images are cached twice: as a tarball in the cache directory, keyed by a hash of the
package lists and the builder version, and in podman as
`localhost/dnscache-test-<variant>:<hash>`. A second `ensure()` asks podman whether the tag
exists and returns; it rebuilds nothing.

The pure parts (mirror parsing, the image table, cache keys) take values and return values;
`ImageBuilder` runs the commands.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

# Bump whenever the build steps change in a way that changes the images' contents.
BUILDER_VERSION = "1"
SUITE = "bookworm"
DEFAULT_CACHE_DIR = Path("/var/cache/dnscache-agent-images")
CACHE_DIR_ENV = "DNSCACHE_IMAGE_CACHE"
IMAGE_REPOSITORY = "localhost/dnscache-test"
SOURCES_FILE = Path("/etc/apt/sources.list.d/debian.sources")
PODMAN_CONF = Path(__file__).resolve().parent / "podman" / "containers.conf"

# Packages debootstrap installs itself: enough to boot systemd and run apt in the chroot.
# bind9 and the other daemons come afterwards, under the policy-rc.d guard: debootstrap
# has no such guard and would start named on the host.
BOOTSTRAP_PACKAGES: tuple[str, ...] = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "ca-certificates",
)


class ImageBuildError(RuntimeError):
    """A step of an image build failed; the message names the step and its output."""


@dataclass(frozen=True)
class ImageSpec:
    """One image: its name, the image it derives from, and the packages it adds."""

    name: str
    packages: tuple[str, ...]
    parent: str | None = None


IMAGES: Mapping[str, ImageSpec] = {
    spec.name: spec
    for spec in (
        ImageSpec(
            "base",
            (
                "python3",
                "python3-venv",
                "python3-packaging",
                "iproute2",
                "procps",
                "bind9",
                "bind9-utils",
                "bind9-dnsutils",
            ),
        ),
        # A DHCP round trip: dnsmasq serves DHCP from a child namespace, dhclient and
        # resolvconf write /etc/resolv.conf (the classic Debian/ifupdown host).
        ImageSpec(
            "ifupdown-dhclient",
            ("isc-dhcp-client", "resolvconf", "ifupdown", "dnsmasq-base"),
            parent="base",
        ),
        ImageSpec("resolved", ("systemd-resolved",), parent="base"),
        # Ubuntu's stack on Debian: netplan renders systemd-networkd files (networkd ships in
        # bookworm's systemd package), resolved owns /etc/resolv.conf. `netplan apply` calls
        # udevadm (package udev) to rename and re-trigger links.
        ImageSpec("netplan", ("netplan.io", "udev"), parent="resolved"),
        ImageSpec("networkmanager", ("network-manager",), parent="base"),
    )
}


def lineage(name: str, specs: Mapping[str, ImageSpec] = IMAGES) -> list[ImageSpec]:
    """The chain of specs from the root image down to `name` (root first).

    Raises KeyError for an unknown image name and ValueError on a cycle.
    """
    chain: list[ImageSpec] = []
    current: str | None = name
    while current is not None:
        spec = specs[current]
        if spec in chain:
            raise ValueError(f"image {name!r}: parent cycle through {current!r}")
        chain.append(spec)
        current = spec.parent
    chain.reverse()
    return chain


def image_key(name: str, specs: Mapping[str, ImageSpec] = IMAGES) -> str:
    """Cache key of an image: hash of the builder version, suite and every package list
    from the root image down (a change in `base` invalidates every variant)."""
    digest = hashlib.sha256()
    digest.update(f"builder={BUILDER_VERSION}\nsuite={SUITE}\n".encode())
    digest.update(("bootstrap=" + ",".join(BOOTSTRAP_PACKAGES) + "\n").encode())
    for spec in lineage(name, specs):
        digest.update(f"{spec.name}=".encode() + ",".join(spec.packages).encode() + b"\n")
    return digest.hexdigest()[:16]


def image_ref(name: str, specs: Mapping[str, ImageSpec] = IMAGES) -> str:
    """The podman reference an image is imported as."""
    return f"{IMAGE_REPOSITORY}-{name}:{image_key(name, specs)}"


def debian_mirror(sources_text: str, suite: str = SUITE) -> str:
    """The first `URIs:` of a deb822 sources stanza that serves `suite` itself.

    Reading it from the host's own sources keeps the rig on whatever mirror the machine may
    reach. Raises ValueError when no stanza lists the suite.
    """
    for stanza in sources_text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if not line.strip() or line.lstrip().startswith("#") or ":" not in line:
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        types = fields.get("types", "").split()
        if "deb" in types and suite in fields.get("suites", "").split() and fields.get("uris"):
            return fields["uris"].split()[0]
    raise ValueError(f"no 'deb' stanza for suite {suite!r} in the apt sources")


def default_cache_dir(environ: Mapping[str, str]) -> Path:
    """$DNSCACHE_IMAGE_CACHE, else /var/cache/dnscache-agent-images."""
    value = environ.get(CACHE_DIR_ENV)
    return Path(value) if value else DEFAULT_CACHE_DIR


def podman_env(environ: Mapping[str, str], conf: Path = PODMAN_CONF) -> dict[str, str]:
    """The environment podman needs here: our containers.conf (see TESTBED.md)."""
    env = dict(environ)
    env["CONTAINERS_CONF"] = str(conf)
    return env


def run_command(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command with a timeout; raise ImageBuildError with its output on failure."""
    logger.debug("running %s", " ".join(argv))
    try:
        result = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            input=input_text,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ImageBuildError(
            f"{argv[0]}: timed out after {timeout:.0f}s: {' '.join(argv)}"
        ) from exc
    if check and result.returncode != 0:
        tail = (result.stdout[-2000:] + result.stderr[-2000:]).strip()
        raise ImageBuildError(f"{' '.join(argv)} exited {result.returncode}: {tail}")
    return result


@dataclass
class BuildReport:
    """What one `ensure()` did, for timing reports."""

    name: str
    ref: str
    action: str  # "present" (podman had it), "imported" (from the tarball) or "built"
    seconds: float


_POLICY_RC_D = "#!/bin/sh\n# written by rig/images.py while packages install\nexit 101\n"
_APT_ENV = {
    "DEBIAN_FRONTEND": "noninteractive",
    "LC_ALL": "C",
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
}


@dataclass
class ImageBuilder:
    """Builds, caches and imports the test images. `ensure(name)` is the one entry point.

    `sources_text` is the host's deb822 apt sources (the mirror is read from it);
    `environ` is the environment podman and apt run with.
    """

    cache_dir: Path
    sources_text: str
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    specs: Mapping[str, ImageSpec] = field(default_factory=lambda: dict(IMAGES))
    podman_conf: Path = PODMAN_CONF
    keyring: Path | None = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
    clock: Callable[[], float] = time.monotonic
    # Copied into the chroot while apt runs, so apt can resolve the mirror's name.
    host_resolv_conf: Path = Path("/etc/resolv.conf")

    @classmethod
    def from_host(cls, environ: Mapping[str, str] | None = None) -> ImageBuilder:
        """A builder with the host's sources file and the default cache directory."""
        env = dict(os.environ if environ is None else environ)
        return cls(
            cache_dir=default_cache_dir(env),
            sources_text=SOURCES_FILE.read_text(encoding="utf-8"),
            environ=env,
        )

    # -- public -----------------------------------------------------------------------
    def ensure(self, name: str) -> BuildReport:
        """Make `localhost/dnscache-test-<name>:<key>` exist in podman; return what it took.

        Raises ImageBuildError when a build step fails (the chroot is removed either way).
        """
        start = self._now()
        ref = image_ref(name, self.specs)
        if self._podman_has(ref):
            return BuildReport(name, ref, "present", self._now() - start)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            # Another process may have built it while we waited for the lock.
            if self._podman_has(ref):
                return BuildReport(name, ref, "present", self._now() - start)
            tarball = self.tarball(name)
            action = "imported"
            if not tarball.exists():
                self._build_tarball(name)
                action = "built"
            self._import(tarball, ref)
        report = BuildReport(name, ref, action, self._now() - start)
        logger.info("image %s %s in %.1fs", ref, action, report.seconds)
        return report

    def tarball(self, name: str) -> Path:
        """Where the root file system of image `name` is cached."""
        return self.cache_dir / f"{name}-{image_key(name, self.specs)}.tar"

    # -- steps ------------------------------------------------------------------------
    def _now(self) -> float:
        return self.clock()

    def _podman(self, args: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
        return run_command(
            ["podman", *args],
            timeout=timeout,
            env=podman_env(self.environ, self.podman_conf),
            check=False,
        )

    def _podman_has(self, ref: str) -> bool:
        return self._podman(["image", "exists", ref], timeout=60).returncode == 0

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise builds between concurrent test processes sharing the cache."""
        with open(self.cache_dir / ".lock", "w", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _import(self, tarball: Path, ref: str) -> None:
        result = self._podman(
            ["import", "--change", 'CMD=["/sbin/init"]', str(tarball), ref], timeout=300
        )
        if result.returncode != 0:
            raise ImageBuildError(f"podman import {ref}: {result.stderr.strip()}")

    def _build_tarball(self, name: str) -> None:
        spec = self.specs[name]
        if spec.parent is not None and not self.tarball(spec.parent).exists():
            self._build_tarball(spec.parent)
        work = Path(tempfile.mkdtemp(prefix=f"build-{name}-", dir=self.cache_dir))
        root = work / "rootfs"
        try:
            if spec.parent is None:
                self._debootstrap(root)
            else:
                root.mkdir()
                run_command(
                    ["tar", "-C", str(root), "--numeric-owner", "-xpf",
                     str(self.tarball(spec.parent))],
                    timeout=300,
                )
            self._install(root, spec.packages)
            self._finish(root)
            tmp = self.tarball(name).with_suffix(".tar.tmp")
            run_command(
                ["tar", "-C", str(root), "--numeric-owner", "-cf", str(tmp), "."], timeout=300
            )
            tmp.replace(self.tarball(name))
        finally:
            _unmount_below(root)
            shutil.rmtree(work, ignore_errors=True)

    def _debootstrap(self, root: Path) -> None:
        mirror = debian_mirror(self.sources_text)
        argv = ["debootstrap", "--variant=minbase", "--include=" + ",".join(BOOTSTRAP_PACKAGES)]
        if self.keyring is not None and self.keyring.exists():
            argv.append(f"--keyring={self.keyring}")
        argv += [SUITE, str(root), mirror]
        logger.info("debootstrap %s from %s", SUITE, mirror)
        run_command(argv, timeout=540, env=_APT_ENV)

    def _install(self, root: Path, packages: Sequence[str]) -> None:
        """apt-get install in the chroot, with daemons held back by policy-rc.d."""
        policy = root / "usr/sbin/policy-rc.d"
        resolv = root / "etc/resolv.conf"
        # apt in the chroot needs the host's resolver to reach the mirror. A parent image's
        # symlink (systemd-resolved's stub) is put back afterwards.
        parent_link = os.readlink(resolv) if resolv.is_symlink() else None
        if resolv.is_symlink() or resolv.exists():
            resolv.unlink()
        shutil.copyfile(self.host_resolv_conf, resolv)
        policy.write_text(_POLICY_RC_D, encoding="utf-8")
        policy.chmod(0o755)
        proc = root / "proc"
        run_command(["mount", "-t", "proc", "proc", str(proc)], timeout=30)
        try:
            chroot = ["chroot", str(root)]
            run_command([*chroot, "apt-get", "update", "-qq"], timeout=300, env=_APT_ENV)
            run_command(
                [*chroot, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
                timeout=540,
                env=_APT_ENV,
            )
            run_command([*chroot, "apt-get", "clean"], timeout=60, env=_APT_ENV)
        finally:
            run_command(["umount", str(proc)], timeout=30, check=False)
            policy.unlink()
        # A package (resolvconf, systemd-resolved) may have made resolv.conf its symlink:
        # keep that, or the parent's. Otherwise leave no trace of the host's resolver.
        if not resolv.is_symlink() and parent_link is not None:
            resolv.unlink()
            resolv.symlink_to(parent_link)
        if not resolv.is_symlink():
            resolv.write_text("# no resolver configured (dnscache-agent test image)\n",
                              encoding="utf-8")

    def _finish(self, root: Path) -> None:
        """Per-container identity and smaller images."""
        lists = root / "var/lib/apt/lists"
        for entry in lists.glob("*"):
            if entry.is_file():
                entry.unlink()
        # Empty machine-id: systemd makes a fresh one per container at boot.
        (root / "etc/machine-id").write_text("", encoding="utf-8")
        dbus_id = root / "var/lib/dbus/machine-id"
        if dbus_id.is_file() and not dbus_id.is_symlink():
            dbus_id.unlink()
        (root / "etc/hostname").write_text("dnscache-test\n", encoding="utf-8")


def _unmount_below(root: Path) -> None:
    """Unmount anything a failed build left mounted under the chroot (deepest first)."""
    try:
        mounts = Path("/proc/self/mounts").read_text(encoding="utf-8").splitlines()
    except OSError:
        return
    prefix = str(root) + "/"
    targets = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    for target in sorted(targets, key=len, reverse=True):
        run_command(["umount", "-l", target], timeout=30, check=False)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: `python3 -m rig.images [NAME...]` builds (or finds) images and prints timings."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("names", nargs="*", help=f"images to ensure (default: {' '.join(IMAGES)})")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    builder = ImageBuilder.from_host()
    for name in args.names or list(IMAGES):
        report = builder.ensure(name)
        print(f"{report.ref}\t{report.action}\t{report.seconds:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
