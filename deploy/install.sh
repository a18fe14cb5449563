#!/usr/bin/env bash
# Installs ipvs-manager as a systemd service on this load-balancer host:
#   /usr/local/bin/ipvs-manager                       the binary
#   /etc/systemd/system/ipvs-manager.service          the unit
#   /etc/ipvs-manager/ipvs-manager.env                the settings (kept if present)
#   /etc/modules-load.d/ipvs-manager.conf             ip_vs, loaded at every boot
# and, on the live system, the ipvs-manager system user, the ip_vs module now
# and `systemctl daemon-reload`. It does not start the service: edit the
# settings first (see the end of its output).
#
# Re-running it upgrades the binary and the unit and keeps the settings; then
# `systemctl restart ipvs-manager` (the kernel table stays in place meanwhile).
#
# Usage: deploy/install.sh [--binary PATH] [--root DIR] [--with-bird]
#   --binary PATH  the ipvs-manager binary (default: ./ipvs-manager beside
#                  this kit, else target/release/ipvs-manager of the checkout)
#   --root DIR     install into DIR instead of / (packaging, tests): files
#                  only, no user, module or systemctl
#   --with-bird    for ANNOUNCE=bgp: install Debian's bird2 (apt) and stop
#                  and disable its own bird.service, whose BGP port the BIRD
#                  that ipvs-manager runs needs
set -euo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
kit=$(cd -- "$here/.." && pwd)

die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }
say() { printf 'install.sh: %s\n' "$*"; }

binary=
root=/
with_bird=false
while (($#)); do
  case $1 in
    --binary) binary=${2:?--binary needs a path}; shift 2 ;;
    --root) root=${2:?--root needs a directory}; shift 2 ;;
    --with-bird) with_bird=true; shift ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
if [[ -z $binary ]]; then
  for candidate in "$kit/ipvs-manager" "$kit/target/release/ipvs-manager"; do
    [[ -x $candidate ]] && { binary=$candidate; break; }
  done
fi
[[ -n $binary && -x $binary ]] \
  || die "no ipvs-manager binary (build it with 'cargo build --release', or pass --binary PATH)"
[[ -f $kit/systemd/ipvs-manager.service && -f $here/ipvs-manager.env ]] \
  || die "run it from the kit: systemd/ipvs-manager.service and deploy/ipvs-manager.env are missing"

live=false
[[ $root == / ]] && live=true
root=${root%/}
if $live; then
  [[ $EUID -eq 0 ]] || die "run it as root (or with --root DIR to stage the files)"
fi

user=ipvs-manager
if $live && ! getent passwd "$user" >/dev/null; then
  say "creating the system user $user"
  useradd --system --user-group --no-create-home --home-dir /var/lib/ipvs-manager \
    --shell /usr/sbin/nologin --comment "ipvs-manager daemon" "$user"
fi

# Replace the binary atomically: a running node keeps its old executable.
install -d -m 0755 "$root/usr/local/bin"
install -m 0755 "$binary" "$root/usr/local/bin/.ipvs-manager.new"
mv -f "$root/usr/local/bin/.ipvs-manager.new" "$root/usr/local/bin/ipvs-manager"
install -D -m 0644 "$kit/systemd/ipvs-manager.service" "$root/etc/systemd/system/ipvs-manager.service"
install -D -m 0644 /dev/null "$root/etc/modules-load.d/ipvs-manager.conf"
printf '# ipvs-manager programs IPVS: load it at boot.\nip_vs\n' \
  >"$root/etc/modules-load.d/ipvs-manager.conf"

# Settings are readable by the service's group only: they name secrets.
conf=$root/etc/ipvs-manager
install -d -m 0750 "$conf"
env_file=$conf/ipvs-manager.env
if [[ -e $env_file ]]; then
  install -m 0640 "$here/ipvs-manager.env" "$env_file.dist"
  say "kept $env_file; the current template is $env_file.dist"
else
  node=$(hostname -s 2>/dev/null || hostname)
  [[ $node =~ ^[A-Za-z0-9._-]{1,64}$ ]] || node=node1
  sed "s/^RAFT_NODE_ID=.*/RAFT_NODE_ID=$node/" "$here/ipvs-manager.env" >"$env_file.new"
  chmod 0640 "$env_file.new"
  mv "$env_file.new" "$env_file"
  say "wrote $env_file (RAFT_NODE_ID=$node)"
fi

if $live; then
  chgrp "$user" "$conf" "$conf"/*
  modprobe ip_vs || say "warning: 'modprobe ip_vs' failed; the node will refuse to start without IPVS"
  if $with_bird; then
    command -v bird >/dev/null || {
      say "installing bird2 (ANNOUNCE=bgp)"
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends bird2
    }
    # Debian starts a BIRD of its own on /etc/bird/bird.conf; ipvs-manager
    # runs one with the configuration it writes, which needs port 179.
    systemctl disable --now bird.service 2>/dev/null || true
  fi
  systemctl daemon-reload
fi
if grep -qE '^ANNOUNCE=bgp' "$env_file" && ! grep -qE '^BGP_SPEAKER=external' "$env_file" \
  && ! command -v bird >/dev/null && ! [[ -x $root/usr/sbin/bird ]]; then
  say "warning: ANNOUNCE=bgp runs BIRD 2, which is not installed: re-run with --with-bird (or apt install bird2)"
fi

say "installed $("$root/usr/local/bin/ipvs-manager" --version 2>/dev/null || echo ipvs-manager)"
cat <<EOF
Next:
  1. edit $env_file (RAFT_NODE_ID, BIND_ADDR/ADVERTISE_ADDR, RAFT_LEADER on
     every host but the first; see deploy/example-3-hosts/)
  2. systemctl enable --now ipvs-manager
  3. systemctl status ipvs-manager; journalctl -u ipvs-manager
EOF
