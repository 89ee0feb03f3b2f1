#!/bin/sh
# The resolver state rollback must restore: each path's kind and content (link target or
# sha256), and the name servers resolv.conf lists. Used before converge and after rollback.
for p in /etc/resolv.conf /etc/default/resolvconf /etc/resolvconf/resolv.conf.d/base \
         /etc/resolvconf/resolv.conf.d/head /etc/dhcp/dhclient.conf \
         /etc/systemd/resolved.conf /etc/systemd/resolved.conf.d/dnscache-agent.conf \
         /etc/NetworkManager/NetworkManager.conf /etc/NetworkManager/conf.d/dnscache-agent.conf \
         /etc/bind/named.conf.options; do
  if [ -L "$p" ]; then echo "$p link $(readlink "$p")"
  elif [ -e "$p" ]; then echo "$p file $(sha256sum < "$p" | cut -d' ' -f1)"
  else echo "$p absent"; fi
done
echo "nameservers $(awk '$1 == "nameserver" {printf "%s ", $2}' /etc/resolv.conf)"
