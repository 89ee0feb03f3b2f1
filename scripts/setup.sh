#!/usr/bin/env bash
# Installs everything dnscache-agent's demo, tests and benchmarks need on Debian 12, as root.
# Idempotent: a second run installs nothing new. Daemons are installed without being started on
# this host (a policy-rc.d that exits 101); tests start their own copies inside namespaces and
# containers. Python packages go into .venv (Debian's python3 is externally managed, PEP 668).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export DEBIAN_FRONTEND=noninteractive

apt_pkgs=(
  # the cache and its tools
  bind9 bind9-utils bind9-dnsutils dnsperf
  # the simulated VPC and the DHCP renew test
  iproute2 nftables ethtool dnsmasq-base isc-dhcp-client procps
  # peers for the benchmark
  unbound
  # containers booting systemd (service, resolver-manager and molecule tests)
  podman debootstrap runc slirp4netns uidmap fuse-overlayfs systemd-container
  # python
  python3 python3-venv python3-pip
)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 755 "$policy"; created_policy=1
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ "$created_policy" = 1 ]; then rm -f "$policy"; fi
fi

venv="$here/.venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
stamp="$venv/.installed-$(sha256sum "$here/pyproject.toml" | cut -c1-16)"
if [ ! -e "$stamp" ]; then
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$here[test]"
  touch "$stamp"
fi
