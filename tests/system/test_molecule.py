"""`molecule test` for every scenario: converge a Debian 12 image booting systemd with the
shipped Ansible role (packaging/ansible/site.yml), check idempotence, verify with the shipped
checks, roll back and compare with the image's original resolver state (molecule/).

The images come from rig.images (cached between scenarios and runs); the wheelhouse the role
installs offline is built once per session."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from rig.containers import build_wheelhouse, project_dependencies
from rig.images import PODMAN_CONF
from tests.machinery import skip_or_fail

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
# Scenario → (rig image, environment variable its molecule.yml reads the image ref from).
SCENARIOS = {
    "default": ("ifupdown-dhclient", "DNSCACHE_IMAGE_IFUPDOWN_DHCLIENT"),
    "resolved": ("resolved", "DNSCACHE_IMAGE_RESOLVED"),
    "networkmanager": ("networkmanager", "DNSCACHE_IMAGE_NETWORKMANAGER"),
}
# Well under the ~9 minutes any one foreground command may take here.
SCENARIO_TIMEOUT = 480


@pytest.fixture(scope="session")
def molecule() -> str:
    path = shutil.which("molecule")
    if path is None:
        skip_or_fail('molecule is not installed: pip install molecule "molecule-plugins[podman]" '
                     "ansible")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def role_wheelhouse(system_image: Callable[[str], str],
                    tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The agent, its dependencies and the checks' (pytest, testinfra) as wheels."""
    dest = tmp_path_factory.mktemp("role-wheelhouse")
    deps = project_dependencies((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    build_wheelhouse(REPO, dest, [*deps, "pytest", "pytest-testinfra"])
    return dest


def test_scenario_files_cover_the_images() -> None:
    for scenario, (_, env) in SCENARIOS.items():
        text = (REPO / "molecule" / scenario / "molecule.yml").read_text(encoding="utf-8")
        assert f"${{{env}:-" in text, scenario
        assert "systemd: always" in text and "SYS_ADMIN" in text and "network: none" in text


@pytest.mark.system
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_molecule_scenario(scenario: str, molecule: str, role_wheelhouse: Path,
                           system_image: Callable[[str], str], tmp_path: Path) -> None:
    image, env_name = SCENARIOS[scenario]
    env = dict(os.environ)
    env.update({
        env_name: system_image(image),
        "DNSCACHE_WHEELHOUSE": str(role_wheelhouse),
        "CONTAINERS_CONF": str(PODMAN_CONF),
        "ANSIBLE_NOCOLOR": "1",
        "PY_COLORS": "0",
        "MOLECULE_NO_LOG": "false",
        # Keep every agent invocation off the real IMDS (the containers have no network).
        "DNSCACHE_AGENT_IMDS_ENDPOINT": "http://127.0.0.1:9",
    })
    start = time.monotonic()
    try:
        result = subprocess.run([molecule, "test", "-s", scenario], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=SCENARIO_TIMEOUT,
                                check=False)
    except subprocess.TimeoutExpired as exc:
        subprocess.run([molecule, "destroy", "-s", scenario], cwd=REPO, env=env,
                       capture_output=True, timeout=120, check=False)
        pytest.fail(f"molecule test -s {scenario}: no result after {SCENARIO_TIMEOUT}s "
                    f"({exc})")
    seconds = time.monotonic() - start
    (tmp_path / f"molecule-{scenario}.log").write_text(result.stdout + result.stderr)
    log.warning("molecule test -s %s: exit %s in %.0f s", scenario, result.returncode, seconds)
    print(f"molecule test -s {scenario}: {seconds:.0f} s")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    for step in ("converge", "idempotence", "verify", "side_effect"):
        assert f"{step}: Executed: Successful" in output, (step, output[-3000:])
