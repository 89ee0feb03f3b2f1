#!/usr/bin/env bash
# Installs everything dnscache-agent's demo, tests and benchmarks need on Debian 12 (as root).
# Idempotent: a second run installs nothing new. Daemons are installed without being started
# on the host (policy-rc.d exits 101); the tests start their own copies inside namespaces.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export DEBIAN_FRONTEND=noninteractive

apt_pkgs=(bind9 bind9-utils bind9-dnsutils dnsperf nftables iproute2 ethtool dnsmasq-base
          unbound isc-dhcp-client procps)
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
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  [ "$created_policy" = 1 ] && rm -f "$policy"
fi

python3 -m pip install -q --disable-pip-version-check -e "$here[test]"
