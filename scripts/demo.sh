#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the main job on the built-in simulated VPC: the agent
# applies itself to a sandboxed instance whose Amazon resolver drops packets over 1024/s, a
# short load runs through the cache, and the query statistics are printed. As root.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$here/scripts/setup.sh"
cd "$here"
exec .venv/bin/python -m rig.demo --seconds 5 "$@"
