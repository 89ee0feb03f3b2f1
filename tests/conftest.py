"""Suite-wide guards: no test may reach the real instance metadata service."""
from __future__ import annotations

import os

import pytest

# A refused loopback port: anything that forgets to point IMDS at a fake gets "not on EC2".
os.environ.setdefault("DNSCACHE_AGENT_IMDS_ENDPOINT", "http://127.0.0.1:9")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by folder so `-m "not system"` and friends work without decorators."""
    for item in items:
        path = str(item.fspath)
        if "/tests/integration/" in path:
            item.add_marker(pytest.mark.integration)
        elif "/tests/system/" in path:
            item.add_marker(pytest.mark.system)

