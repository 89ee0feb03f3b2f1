#!/usr/bin/env bash
# Build (or find in the cache) the images the molecule scenarios boot, and tag each
# localhost/dnscache-test-<name>:molecule, the default molecule.yml falls back to.
# Usage: molecule/images.sh   (root; podman and debootstrap, see scripts/setup.sh)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
export CONTAINERS_CONF="$here/rig/podman/containers.conf"
python3 -m rig.images ifupdown-dhclient resolved networkmanager | while read -r ref _; do
  name="${ref%%:*}"
  podman tag "$ref" "$name:molecule"
  echo "$name:molecule -> $ref"
done
