#!/bin/sh
# Install bind and dnscache-agent into an image, and enable (not start) the service.
# Used by provisioner.pkr.hcl; works on any builder where systemd is PID 1. $WHEEL is the
# agent wheel's path on the builder.
set -eu
: "${WHEEL:?set WHEEL to the dnscache-agent wheel}"
VENV=/opt/dnscache-agent/venv

if command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends bind9 bind9-utils python3-venv ethtool
elif command -v dnf >/dev/null 2>&1; then
    dnf install -y bind bind-utils python3 ethtool
else
    echo "install-dnscache-agent.sh: no apt-get or dnf" >&2
    exit 1
fi

python3 -m venv "$VENV"
"$VENV/bin/pip" install --disable-pip-version-check --no-cache-dir "$WHEEL"
rm -f "$WHEEL"

# Units from the installed package, ExecStart= pointing into the venv; enabled for boot. Only
# the units are written (and checkpointed, so `rollback` on an instance removes them): the
# plan for bind, the pacer and the resolver is applied by the repair unit at first boot, for
# the instance it boots on.
"$VENV/bin/dnscache-agent" install-service --no-start
