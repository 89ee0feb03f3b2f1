#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the whole test suite: lint, types, unit, integration
# (real named in a simulated VPC) and system tests (containers booting systemd). As root.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$here/scripts/setup.sh"
cd "$here"
# The tests run molecule, ansible-playbook and pytest from the project's venv.
export PATH="$here/.venv/bin:$PATH"
# Nothing a test runs may reach the real instance metadata service.
export DNSCACHE_AGENT_IMDS_ENDPOINT="http://127.0.0.1:9"
# Every test must run: a missing tool fails the suite instead of skipping.
export DNSCACHE_REQUIRE_ALL=1
.venv/bin/ruff check .
.venv/bin/mypy dnscache_agent
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
