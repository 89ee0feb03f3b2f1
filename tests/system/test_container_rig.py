"""The container rig itself: images boot systemd, hardening is enforced, daemons run.

If these fail, every service/resolver/molecule test built on the rig proves nothing.
"""
from __future__ import annotations

import os
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from rig.containers import SystemdContainer, build_wheelhouse, install_agent
from rig.images import (
    BOOTSTRAP_PACKAGES,
    IMAGES,
    ImageBuilder,
    ImageSpec,
    debian_mirror,
    image_key,
    image_ref,
    lineage,
    podman_env,
)

StartContainer = Callable[..., SystemdContainer]

SOURCES = textwrap.dedent(
    """\
    Types: deb
    # http://snapshot.debian.org/archive/debian/20250520T000000Z
    URIs: http://mirror.example/debian
    Suites: bookworm bookworm-updates
    Components: main

    Types: deb
    URIs: http://mirror.example/debian-security
    Suites: bookworm-security
    Components: main
    """
)


# -- pure parts (no podman needed) ------------------------------------------------------
def test_mirror_is_read_from_the_stanza_serving_the_suite() -> None:
    assert debian_mirror(SOURCES) == "http://mirror.example/debian"
    security_only = SOURCES.split("\n\n")[1]
    with pytest.raises(ValueError, match="bookworm"):
        debian_mirror(security_only)


def test_image_key_changes_with_any_package_list_up_the_lineage() -> None:
    specs = dict(IMAGES)
    before = {name: image_key(name, specs) for name in specs}
    specs["base"] = ImageSpec("base", (*IMAGES["base"].packages, "curl"))
    after = {name: image_key(name, specs) for name in specs}
    # base changed, so every variant derived from it must be rebuilt too.
    assert all(before[name] != after[name] for name in specs)
    assert len(set(before.values())) == len(before)
    assert image_ref("resolved").startswith("localhost/dnscache-test-resolved:")
    assert [spec.name for spec in lineage("networkmanager")] == ["base", "networkmanager"]
    assert "systemd" in BOOTSTRAP_PACKAGES


def test_run_args_are_hermetic_and_keep_hardening_caps() -> None:
    box = SystemdContainer("img", environ={})
    args = box.run_args()
    assert "--systemd=always" in args and "--network=none" in args
    assert "--dns=none" not in args  # podman rejects --dns with --network=none
    cap = args.index("SYS_ADMIN")
    assert args[cap - 1 : cap + 1] == ["--cap-add", "SYS_ADMIN"]
    networked = SystemdContainer("img", network="slirp4netns", environ={}).run_args()
    assert "--dns=none" in networked
    assert podman_env({})["CONTAINERS_CONF"].endswith("rig/podman/containers.conf")


# -- images ----------------------------------------------------------------------------
def test_second_ensure_is_a_fast_no_op(image_builder: ImageBuilder) -> None:
    image_builder.ensure("base")
    again = image_builder.ensure("base")
    assert again.action == "present"
    assert again.seconds < 10
    assert image_builder.tarball("base").is_file()


# -- systemd as PID 1 ------------------------------------------------------------------
def test_systemd_is_pid1_and_boots(systemd_container: StartContainer) -> None:
    box = systemd_container("base")
    assert box.exec(["ps", "-o", "comm=", "-p", "1"]).stdout.strip() == "systemd"
    assert box.boot_state in ("running", "degraded")
    state = box.exec(["systemctl", "is-system-running"], check=False).stdout.strip()
    assert state in ("running", "degraded")
    # --network=none: loopback only, nothing outside is reachable.
    links = box.exec(["ip", "-o", "link", "show"]).stdout.splitlines()
    assert [line.split(":")[1].strip() for line in links] == ["lo"]


def test_container_is_removed_on_exit(system_image: Callable[[str], str]) -> None:
    with SystemdContainer(system_image("base")) as box:
        container_id = box.container_id
        assert container_id is not None
    exists = subprocess.run(
        ["podman", "container", "exists", container_id],
        env=podman_env(os.environ), timeout=60, check=False,
    )
    assert exists.returncode == 1


def test_protect_system_is_enforced(systemd_container: StartContainer) -> None:
    box = systemd_container("base")
    # Control: the same transient unit without hardening can write /usr.
    box.exec(["systemd-run", "--wait", "--quiet", "touch", "/usr/rig-unhardened"])
    assert box.exec(["test", "-e", "/usr/rig-unhardened"], check=False).returncode == 0
    hardened = box.exec(
        ["systemd-run", "--wait", "--quiet", "-p", "ProtectSystem=strict",
         "touch", "/usr/rig-hardened"],
        check=False,
    )
    assert hardened.returncode != 0
    assert box.exec(["test", "-e", "/usr/rig-hardened"], check=False).returncode != 0


def test_private_tmp_is_enforced(systemd_container: StartContainer) -> None:
    box = systemd_container("base")
    box.exec(["systemd-run", "--wait", "--quiet", "-p", "PrivateTmp=yes",
              "touch", "/tmp/rig-private"])
    assert box.exec(["test", "-e", "/tmp/rig-private"], check=False).returncode != 0


def test_named_starts_and_answers_on_loopback(systemd_container: StartContainer) -> None:
    box = systemd_container("base")
    box.exec(["systemctl", "start", "named"], timeout=60)
    assert box.exec(["systemctl", "is-active", "named"]).stdout.strip() == "active"
    answer = box.exec(["dig", "+short", "+time=2", "+tries=3", "@127.0.0.1", "localhost", "A"])
    assert answer.stdout.split() == ["127.0.0.1"]


def test_resolved_serves_the_stub_through_resolv_conf(systemd_container: StartContainer) -> None:
    box = systemd_container("resolved")
    assert box.exec(["systemctl", "is-active", "systemd-resolved"]).stdout.strip() == "active"
    target = box.exec(["readlink", "/etc/resolv.conf"]).stdout.strip()
    assert target.endswith("/run/systemd/resolve/stub-resolv.conf")
    assert "nameserver 127.0.0.53" in box.read_file("/etc/resolv.conf")
    # No @server: dig takes the server from /etc/resolv.conf, i.e. the stub.
    answer = box.exec(["dig", "+time=2", "+tries=3", "localhost", "A"]).stdout
    assert "SERVER: 127.0.0.53#53" in answer
    assert "127.0.0.1" in answer.split("ANSWER SECTION:")[1]


def test_networkmanager_is_active(systemd_container: StartContainer) -> None:
    box = systemd_container("networkmanager")
    state = box.exec(["systemctl", "is-active", "NetworkManager"], check=False).stdout.strip()
    assert state == "active"
    assert box.exec(["nmcli", "-t", "-f", "RUNNING", "general"]).stdout.strip() == "running"


def test_ifupdown_dhclient_image_has_its_tools(systemd_container: StartContainer) -> None:
    box = systemd_container("ifupdown-dhclient")
    for tool in ("dhclient", "resolvconf", "ifup", "dnsmasq"):
        assert box.exec(["sh", "-c", f"command -v {tool}"], check=False).returncode == 0, tool
    assert box.exec(["readlink", "/etc/resolv.conf"]).stdout.strip() == (
        "../run/resolvconf/resolv.conf"
    )


def test_testinfra_podman_backend(systemd_container: StartContainer) -> None:
    box = systemd_container("base")
    host = box.testinfra_host()
    assert host.package("bind9").is_installed
    assert host.service("named").is_enabled
    assert host.file("/etc/os-release").contains("bookworm")
    assert host.process.get(pid=1).comm == "systemd"


# -- installing Python code offline ------------------------------------------------------
def _tiny_project(root: Path) -> Path:
    """A one-module project depending on dnspython: proves offline dependency resolution."""
    (root / "rigprobe").mkdir(parents=True)
    (root / "rigprobe" / "__init__.py").write_text(
        "import dns.version\nVERSION = dns.version.version\n", encoding="utf-8"
    )
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            """\
            [build-system]
            requires = ["setuptools>=61"]
            build-backend = "setuptools.build_meta"
            [project]
            name = "rigprobe"
            version = "1.0"
            dependencies = ["dnspython>=2.2"]
            """
        ),
        encoding="utf-8",
    )
    return root


def test_tiny_wheel_installs_offline_with_its_dependency(
    systemd_container: StartContainer, tmp_path: Path
) -> None:
    project = _tiny_project(tmp_path / "rigprobe")
    wheels = build_wheelhouse(project, tmp_path / "wheels", ["dnspython>=2.2"])
    assert {w.name.split("-")[0] for w in wheels} == {"rigprobe", "dnspython"}
    box = systemd_container("base")  # --network=none: pip cannot reach any index
    venv = install_agent(box, tmp_path / "wheels", requirement="rigprobe")
    out = box.exec([f"{venv}/bin/python", "-c", "import rigprobe; print(rigprobe.VERSION)"])
    assert out.stdout.strip().count(".") >= 1


def test_agent_wheel_installs_offline(
    systemd_container: StartContainer, agent_wheelhouse: Path
) -> None:
    box = systemd_container("base")
    venv = install_agent(box, agent_wheelhouse)
    out = box.exec([f"{venv}/bin/python", "-c",
                    "import dnscache_agent, jinja2, psutil, dns, boto3; print('ok')"])
    assert out.stdout.strip() == "ok"
