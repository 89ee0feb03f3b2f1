"""The pid-file service backend only claims a named in its own network namespace: /run is
shared between namespaces, and a foreign named must never be reloaded or stopped."""
from __future__ import annotations

import os
import subprocess

from dnscache_agent.services import same_network_namespace
from rig import SimulatedVpc


def test_process_in_another_network_namespace_is_not_ours(vpc: SimulatedVpc) -> None:
    assert same_network_namespace(os.getpid())
    proc = vpc.popen_instance(["sleep", "30"])
    try:
        # `ip netns exec` execs into sleep; wait until it has entered the namespace.
        for _ in range(50):
            if not same_network_namespace(proc.pid):
                break
            subprocess.run(["sleep", "0.1"], check=True)
        assert not same_network_namespace(proc.pid)
    finally:
        proc.kill()
        proc.wait(5)
