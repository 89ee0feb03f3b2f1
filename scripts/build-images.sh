#!/usr/bin/env bash
# Builds (or finds in the cache) the Debian images the system tests boot with systemd.
# Usage: scripts/build-images.sh [base|ifupdown-dhclient|resolved|networkmanager ...]
# Cache: $DNSCACHE_IMAGE_CACHE (default /var/cache/dnscache-agent-images). Needs root,
# podman and debootstrap, and the project venv (scripts/setup.sh installs them).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
exec "$here/.venv/bin/python" -m rig.images "$@"
