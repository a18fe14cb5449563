#!/usr/bin/env bash
# Prepares the real-kernel test rig: the host tools, Debian's kernel (which has
# IPVS as modules) and an initramfs that loads those modules, mounts the host's
# root filesystem over 9p and runs one command chrooted into it (see run.sh).
#
# Idempotent. A complete cache built by this very script is reused without
# touching apt; edit this file (or delete the cache) to rebuild.
#
# Environment:
#   IPVS_VM_CACHE           cache directory (default: <repo>/target/vm-cache)
#   IPVS_VM_KERNEL_PACKAGE  kernel package to use (default: what
#                           linux-image-amd64 depends on)
set -euo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd -- "$here/../.." && pwd)
cache=${IPVS_VM_CACHE:-$repo/target/vm-cache}

log() { printf 'vm-setup: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Modules the guest loads, in order. Dependencies that are not listed
# (modinfo depends= and softdep pre:) are resolved below and loaded first, so
# this list only has to name what the tests want.
wanted_modules=(
  # 9p over virtio: the host's files
  virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
  netfs fscache 9pnet 9pnet_virtio 9p
  # /tmp: the host's, read-only, under a tmpfs that takes the writes
  overlay
  # conntrack (ip_vs needs it), crc32c before libcrc32c (softdep, not a depends)
  crc32c_generic libcrc32c nf_defrag_ipv4 nf_defrag_ipv6 nf_conntrack
  # IPVS, every scheduler this kernel has (6.1 has no twos), the SIP engine
  ip_vs
  ip_vs_rr ip_vs_wrr ip_vs_lc ip_vs_wlc ip_vs_lblc ip_vs_lblcr ip_vs_dh
  ip_vs_sh ip_vs_sed ip_vs_nq ip_vs_fo ip_vs_ovf ip_vs_mh
  nf_conntrack_sip ip_vs_pe_sip
  # test networks: the chrooted host has no /lib/modules for this kernel, so
  # nothing autoloads; whatever `ip link add type X` needs must be here
  dummy veth llc stp bridge
  tunnel4 ip_tunnel ipip gre ip_gre
  # netlink monitor: captures the requests ipvsadm sends, for codec tests
  nlmon
)
packages=(qemu-system-x86 busybox-static cpio ipvsadm iproute2 xz-utils bird2)

ensure_packages() {
  local missing=() p
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
      || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  [[ $EUID -eq 0 ]] || die "missing packages (${missing[*]}); install them as root"
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >&2
}

kernel_package() {
  if [[ -n ${IPVS_VM_KERNEL_PACKAGE:-} ]]; then
    printf '%s\n' "$IPVS_VM_KERNEL_PACKAGE"
    return
  fi
  local pkg
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null \
        | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
  if [[ -z $pkg && $EUID -eq 0 ]]; then
    apt-get update -qq
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null \
          | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
  fi
  [[ -n $pkg ]] || die "cannot resolve the kernel package from 'apt-cache depends linux-image-amd64'"
  printf '%s\n' "$pkg"
}

# The stamp names this script's content: a changed module list or /init rebuilds.
stamp_want="$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1) ${IPVS_VM_KERNEL_PACKAGE:-}"

cache_ready() {
  [[ -f $cache/stamp && $(cat "$cache/stamp") == "$stamp_want" \
     && -f $cache/vmlinuz && -f $cache/initrd.gz ]]
}

ensure_packages
mkdir -p "$cache"
if cache_ready; then exit 0; fi

# Two test binaries may start at once on a cold cache: build once.
exec 9>"$cache/.lock"
flock 9
if cache_ready; then exit 0; fi

pkg=$(kernel_package)
log "kernel package: $pkg"
debdir=$cache/deb
mkdir -p "$debdir"
deb=$(find "$debdir" -maxdepth 1 -name "${pkg}_*.deb" -print -quit)
if [[ -z $deb ]]; then
  log "downloading $pkg (about 70 MB)"
  apt_opts=()
  # apt's _apt user cannot write into a root-owned cache: download as root.
  [[ $EUID -eq 0 ]] && apt_opts=(-o APT::Sandbox::User=root)
  (cd "$debdir" && apt-get download -qq "${apt_opts[@]}" "$pkg") \
    || die "apt-get download $pkg failed"
  deb=$(find "$debdir" -maxdepth 1 -name "${pkg}_*.deb" -print -quit)
  [[ -n $deb ]] || die "apt-get download left no ${pkg}_*.deb in $debdir"
  # Debian moved on to a newer kernel: drop the one it replaces.
  find "$debdir" -maxdepth 1 -name 'linux-image-*.deb' ! -name "${pkg}_*.deb" -delete
fi

root=$cache/kernel
rm -rf "$root"
log "unpacking $(basename "$deb")"
dpkg -x "$deb" "$root"
vmlinuz=$(find "$root/boot" -maxdepth 1 -name 'vmlinuz-*' -print -quit)
[[ -n $vmlinuz ]] || die "no boot/vmlinuz-* in $deb"
kver=${vmlinuz##*/vmlinuz-}
moddir=$root/lib/modules/$kver
[[ -d $moddir ]] || die "no lib/modules/$kver in $deb"

# name -> file, for every module the package ships (.ko, .ko.xz, .ko.zst).
declare -A modfile=()
while IFS= read -r -d '' f; do
  n=${f##*/}
  n=${n%.ko*}
  modfile[${n//-/_}]=$f
done < <(find "$moddir" -name '*.ko*' -print0)

staging=$cache/initramfs
rm -rf "$staging"
mkdir -p "$staging"/{bin,dev,proc,sys,host,job,ovl,lib/modules}

# Modules go into the initramfs uncompressed: busybox insmod does not
# decompress, and the kernel's own in-kernel decompression is config-dependent.
plain_module() { # src dst
  case $1 in
    *.ko) cp "$1" "$2" ;;
    *.ko.xz) xz -dc "$1" >"$2" ;;
    *.ko.zst) command -v zstd >/dev/null || die "zstd is needed for $1"
              zstd -qdc "$1" >"$2" ;;
    *.ko.gz) gzip -dc "$1" >"$2" ;;
    *) die "unknown module format: $1" ;;
  esac
}

# modinfo fields from the .modinfo section (key=value strings, NUL-separated);
# the host has no kmod and busybox modinfo wants a modules.dep.
modinfo_field() { # plain.ko key
  tr '\0' '\n' <"$1" | sed -n "s/^$2=//p"
}

declare -A state=() # name -> visiting | done
order=()
add_module() { # name [needed-by]
  local name=${1//-/_} deps d src dst
  [[ ${state[$name]:-} == "done" ]] && return 0
  [[ ${state[$name]:-} == visiting ]] && die "module dependency cycle at $name"
  src=${modfile[$name]:-}
  if [[ -z $src ]]; then
    # softdeps name crypto algorithms ("crc32c"): take the generic driver.
    if [[ -n ${modfile[${name}_generic]:-} ]]; then add_module "${name}_generic"; return; fi
    # Built into this kernel: nothing to load.
    grep -q "/$name.ko\$" "$moddir/modules.builtin" 2>/dev/null && { state[$name]="done"; return 0; }
    die "module $name${2:+ (needed by $2)} is not in $pkg"
  fi
  state[$name]=visiting
  dst=$staging/lib/modules/$name.ko
  plain_module "$src" "$dst"
  deps=$(modinfo_field "$dst" depends | tr ',' ' ')
  deps+=" $(modinfo_field "$dst" softdep | sed -n 's/.*pre:\([^:]*\)\(post:.*\)\?$/\1/p')"
  for d in $deps; do add_module "$d" "$name"; done
  state[$name]="done"
  order+=("$name")
}
for m in "${wanted_modules[@]}"; do add_module "$m"; done
printf '%s\n' "${order[@]}" >"$staging/lib/modules/load-order"

# busybox-static's binary (it replaces the dynamic busybox package).
cp /bin/busybox "$staging/bin/busybox"

cat >"$staging/init" <<'INIT'
#!/bin/busybox sh
# PID 1 of the test VM. ttyS0 (console) carries kernel messages, ttyS1 the
# job's output and the end mark. The job is described by the "job" 9p share
# that run.sh prepared: job.sh (run with the host's bash), mounts, mark; the
# kernel log goes back there as dmesg.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
exec </dev/null >/dev/console 2>&1

out=/dev/ttyS1
stty -F "$out" raw -echo 2>/dev/null
# No end mark: run.sh reports a VM that stops without one as a failure.
die() {
  echo "ipvs-vm: $*" >"$out"
  poweroff -f
}

while read -r m; do
  insmod "/lib/modules/$m.ko" || die "insmod $m failed (see the kernel log)"
done </lib/modules/load-order

ninep=trans=virtio,version=9p2000.L,msize=512000
mount -t 9p -o "$ninep,ro,cache=loose" hostroot /host || die "cannot mount the host root"
mount -t 9p -o "$ninep" job /job || die "cannot mount the job share"
read -r mark </job/mark

mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
mount -t devtmpfs dev /host/dev
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts devpts /host/dev/pts
mount -t tmpfs shm /host/dev/shm
ln -sfn /proc/self/fd /host/dev/fd
ln -sfn /proc/self/fd/0 /host/dev/stdin
ln -sfn /proc/self/fd/1 /host/dev/stdout
ln -sfn /proc/self/fd/2 /host/dev/stderr
# The host's /tmp stays readable (a checkout there still works); writes go to
# a tmpfs and vanish with the VM.
mount -t tmpfs ovl /ovl && mkdir /ovl/upper /ovl/work \
  && mount -t overlay tmp -o lowerdir=/host/tmp,upperdir=/ovl/upper,workdir=/ovl/work /host/tmp \
  || { echo "ipvs-vm: overlay on /tmp failed, using an empty tmpfs" >"$out"; mount -t tmpfs tmp /host/tmp; }
mount -t tmpfs run /host/run
[ -L /host/var/run ] || mount -t tmpfs varrun /host/var/run
ip link set lo up
hostname ipvs-vm

# Writable shares, mounted at the host's path; created first when that path
# lies on one of the tmpfs above.
while read -r tag path; do
  [ -n "$tag" ] || continue
  mkdir -p "/host$path" 2>/dev/null
  mount -t 9p -o "$ninep" "$tag" "/host$path" || die "cannot mount $path"
done </job/mounts

cp /job/job.sh /host/run/ipvs-vm-job.sh
env -i chroot /host /bin/bash /run/ipvs-vm-job.sh </dev/null >"$out" 2>&1
status=$?
dmesg >/job/dmesg
sync
echo "$mark $status" >"$out"
poweroff -f
INIT
chmod 755 "$staging/init"

log "packing initramfs (${#order[@]} modules)"
(cd "$staging" && find . -print0 | LC_ALL=C sort -z \
  | cpio --null -o -H newc --owner=0:0 --quiet | gzip -6) >"$cache/initrd.gz.new"
mv "$cache/initrd.gz.new" "$cache/initrd.gz"
cp "$vmlinuz" "$cache/vmlinuz"
printf '%s\n' "$kver" >"$cache/kernel-version"
rm -rf "$root" # 400 MB unpacked; the .deb stays for an offline rebuild
printf '%s\n' "$stamp_want" >"$cache/stamp"
log "ready: kernel $kver in $cache"
