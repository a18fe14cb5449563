#!/usr/bin/env bash
# Runs one command inside a throw-away VM that runs Debian's kernel (IPVS as
# modules) with this machine's root filesystem, read-only, as its root: the
# host's binaries and its ipvsadm run unchanged against the guest kernel.
#
#   tests/vm/run.sh [--rw HOSTDIR]... [--timeout SECS] -- CMD [ARGS...]
#
# CMD runs as root in the caller's working directory with PATH, HOME, TERM
# (when stdout is a terminal), RUST_BACKTRACE, RUST_LOG, every IPVS_*, TEST_*
# and CARGO_* variable, and IPVS_MANAGER_IN_VM=1. Its stdout and stderr arrive,
# merged, on this script's stdout; kernel messages do not (see below). The
# script exits with CMD's status, 124 when the VM exceeds the timeout, and 125
# when the VM fails (no status reported: panic, failed boot, qemu error).
#
# Inside the guest the root filesystem is read-only; /run, /var/run (unless a
# symlink) and /dev/shm are empty tmpfs; /tmp shows the host's /tmp and takes
# writes into a tmpfs: nothing written there reaches the host. Each --rw
# HOSTDIR is mounted writable at the same path, so results written there land
# on the host.
#
# Environment: IPVS_VM_CACHE (see setup.sh); IPVS_VM_KERNEL_LOG=FILE keeps the
# guest's kernel log (dmesg) in FILE; IPVS_VM_APPEND adds to the kernel's
# command line.
set -euo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd -- "$here/../.." && pwd)
cache=${IPVS_VM_CACHE:-$repo/target/vm-cache}

usage() {
  sed -n 's/^#   //p' "${BASH_SOURCE[0]}" >&2
  exit 2
}
fail() { printf 'vm-run: %s\n' "$1" >&2; exit "${2:-125}"; }

rw=()
timeout=1200
while (($#)); do
  case $1 in
    --rw) (($# >= 2)) || usage; rw+=("$2"); shift 2 ;;
    --rw=*) rw+=("${1#--rw=}"); shift ;;
    --timeout) (($# >= 2)) || usage; timeout=$2; shift 2 ;;
    --timeout=*) timeout=${1#--timeout=}; shift ;;
    --) shift; break ;;
    -h | --help | -*) usage ;;
    *) break ;;
  esac
done
(($#)) || usage
[[ $timeout =~ ^[1-9][0-9]*$ ]] || fail "--timeout wants whole seconds, got '$timeout'" 2
case $PWD/ in
  /run/* | /var/run/* | /dev/shm/*)
    fail "the working directory $PWD is on a tmpfs inside the VM: run from elsewhere" 2 ;;
esac

# Fast (a few dpkg queries) when the cache is complete; builds it otherwise.
"$here/setup.sh"

job=$(mktemp -d "${TMPDIR:-/tmp}/ipvs-vm.XXXXXX")
trap 'rm -rf -- "$job"' EXIT

# A mark the command cannot print by accident: /init writes it with the status.
mark="@@IPVS-VM-EXIT-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')@@"
printf '%s\n' "$mark" >"$job/mark"

: >"$job/mounts"
virtfs=()
i=0
for dir in "${rw[@]}"; do
  path=$(realpath -e -- "$dir") || fail "--rw $dir: no such directory" 2
  [[ -d $path ]] || fail "--rw $dir: not a directory" 2
  [[ $path != / && $path != *$'\n'* ]] || fail "--rw $dir: unsupported path" 2
  i=$((i + 1))
  virtfs+=(-virtfs "local,path=$path,mount_tag=rw$i,security_model=none,multidevs=remap")
  printf 'rw%d %s\n' "$i" "$path" >>"$job/mounts"
done

tty=false
[[ -t 1 ]] && tty=true
{
  vars=(PATH HOME RUST_BACKTRACE RUST_LOG)
  $tty && vars+=(TERM)
  while IFS= read -r v; do vars+=("$v"); done < <(compgen -e | grep -E '^(IPVS_|TEST_|CARGO_)')
  for v in "${vars[@]}"; do
    if [[ -v $v ]]; then printf 'export %s=%q\n' "$v" "${!v}"; fi
  done
  echo 'export IPVS_MANAGER_IN_VM=1'
  printf 'cd -- %q || exit 125\n' "$PWD"
  if $tty; then
    # The guest's stdout is a serial line: a terminal, as here.
    printf 'exec'
    printf ' %q' "$@"
    printf '\n'
  else
    # Not a terminal here, so not one there either (no colours in logs).
    printf '%q ' "$@"
    # shellcheck disable=SC2016 # written for the guest's bash
    printf '2>&1 | cat\nexit "${PIPESTATUS[0]}"\n'
  fi
} >"$job/job.sh"

# ttyS0, the kernel console, goes to a file; ttyS1 carries the command's
# output and the end mark to our stdout.
# shellcheck disable=SC2054 # qemu's option values contain commas
qemu=(
  qemu-system-x86_64 -accel tcg -smp 2 -m 2048
  -nographic -no-reboot -nic none -monitor none
  -serial "file:$job/console.log"
  -chardev stdio,id=out,signal=off -serial chardev:out
  -kernel "$cache/vmlinuz" -initrd "$cache/initrd.gz"
  -append "console=ttyS0 quiet panic=-1${IPVS_VM_APPEND:+ $IPVS_VM_APPEND}"
  -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap"
  -virtfs "local,path=$job,mount_tag=job,security_model=none,multidevs=remap"
  "${virtfs[@]}"
)

shopt -s lastpipe
status=
set +e
timeout -k 10 "$timeout" "${qemu[@]}" </dev/null 2>"$job/qemu.err" |
  while IFS= read -r line || [[ -n $line ]]; do
    line=${line%$'\r'}
    if [[ $line == *"$mark "* ]]; then
      [[ -n ${line%%"$mark "*} ]] && printf '%s\n' "${line%%"$mark "*}"
      status=${line##*"$mark "}
    else
      printf '%s\n' "$line"
    fi
  done
qemu_rc=${PIPESTATUS[0]}
set -e

if [[ -n ${IPVS_VM_KERNEL_LOG:-} && -f $job/dmesg ]]; then
  cp -- "$job/dmesg" "$IPVS_VM_KERNEL_LOG"
fi
# Kernel splats are worth knowing about even when the command passed.
if [[ -f $job/dmesg ]] && grep -qE 'WARNING:|BUG:|Oops|Call Trace' "$job/dmesg"; then
  printf 'vm-run: the guest kernel logged a warning or bug:\n' >&2
  grep -E -A20 'WARNING:|BUG:|Oops' "$job/dmesg" | head -n 60 >&2 || true
fi

show_console() {
  if [[ -s $job/qemu.err ]]; then
    printf -- '--- qemu stderr ---\n' >&2
    tail -n 20 "$job/qemu.err" >&2
  fi
  [[ -s $job/console.log ]] || return 0
  # Without the firmware's terminal escapes; from the first sign of trouble
  # when there is one (a panic's reason comes just before its stack dump).
  sed 's/\x1b\[[0-9;?]*[A-Za-z]//g; s/\x1bc//g; s/\r$//' "$job/console.log" >"$job/console.txt"
  local first
  first=$(grep -n -m1 -E 'Kernel panic|BUG:|Oops|general protection|WARNING:' "$job/console.txt" | cut -d: -f1 || true)
  if [[ -n $first ]]; then
    first=$((first > 3 ? first - 3 : 1))
    printf -- '--- guest console, from line %d ---\n' "$first" >&2
    tail -n +"$first" "$job/console.txt" | head -n 60 >&2 || true
  else
    printf -- '--- guest console, last 40 lines ---\n' >&2
    tail -n 40 "$job/console.txt" >&2
  fi
}

if ((qemu_rc == 124 || qemu_rc == 137)); then
  show_console
  fail "the VM exceeded the ${timeout}s timeout and was killed" 124
fi
if [[ ! $status =~ ^[0-9]+$ ]]; then
  show_console
  fail "the VM stopped without reporting the command's exit status (qemu exit $qemu_rc)"
fi
exit "$status"
