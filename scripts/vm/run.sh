#!/usr/bin/env bash
# Usage: scripts/vm/run.sh <command> [args...]
#
# Boots Debian's kernel (see image.sh) in qemu (TCG), runs the command inside
# it as root with the host's / mounted read-only (writes go to a tmpfs
# overlay and vanish), in the current directory, prints its output and exits
# with its exit code. The guest sees IKEGW_IN_VM=1, and IKEGW_VM_OUT, a
# directory whose contents come back to the host (printed path; removed
# unless IKEGW_VM_KEEP=1). No network device: the guest talks to nothing.
#
# Environment:
#   IKEGW_VM_TIMEOUT  seconds before the guest is killed (default 600); exit 124
#   IKEGW_VM_MEM      guest memory in MiB (default 2048)
#   IKEGW_VM_CPUS     guest CPUs (default 2)
#   IKEGW_VM_ENV      names of extra host variables to pass into the guest
#   IKEGW_VM_KEEP=1   keep the run directory (command, output files, rc)
#   plus IKEGW_VM_KERNEL / IKEGW_VM_MODULES (see image.sh)
# Exit codes: the command's own, 124 on timeout, 125 when the VM failed
# before the command could report an exit code.
set -euo pipefail

if [ $# -eq 0 ]; then
	echo "usage: $0 <command> [args...]" >&2
	exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache="$repo/.cache/vm"

eval "$("$here/image.sh")"

timeout_s=${IKEGW_VM_TIMEOUT:-600}
mem=${IKEGW_VM_MEM:-2048}
cpus=${IKEGW_VM_CPUS:-2}

mkdir -p "$cache/runs"
rundir=$(mktemp -d "$cache/runs/run.XXXXXX")
cleanup() {
	if [ "${IKEGW_VM_KEEP:-0}" = 1 ]; then
		echo "vm: run directory kept: $rundir" >&2
	else
		rm -rf "$rundir"
	fi
}
trap cleanup EXIT

# The guest's command script: host values are quoted with printf %q, so it
# is run by bash (the host's, inside the chroot).
{
	echo "# written by scripts/vm/run.sh"
	for v in PATH HOME GOTRACEBACK GOFLAGS GOCACHE GOPATH ${IKEGW_VM_ENV:-}; do
		if [ -n "${!v+x}" ]; then printf 'export %s=%q\n' "$v" "${!v}"; fi
	done
	echo "export IKEGW_IN_VM=1 IKEGW_VM_OUT=/run/ikegw-vm/out"
	echo "mkdir -p /run/ikegw-vm/out"
	printf 'cd %q || exit 127\n' "$PWD"
	printf 'exec'
	printf ' %q' "$@"
	printf '\n'
} >"$rundir/cmd.sh"
mkdir -p "$rundir/out"
{
	echo "$PWD"
	case "$1" in /*) dirname "$1" ;; esac
} >"$rundir/keep"

echo "vm: kernel $KVER, $cpus cpu, ${mem} MiB, timeout ${timeout_s}s"
echo "vm: running in $PWD: $*"
echo "vm: ----- guest output -----"
start=$(date +%s)
set +e
timeout -k 10 "$timeout_s" qemu-system-x86_64 \
	-accel tcg -cpu max -smp "$cpus" -m "$mem" \
	-nodefaults -no-user-config -display none -no-reboot \
	-chardev stdio,id=con,signal=off -serial chardev:con \
	-nic none -device virtio-rng-pci \
	-kernel "$KERNEL" -initrd "$INITRD" \
	-append "console=ttyS0 rdinit=/init panic=-1 quiet loglevel=3 random.trust_cpu=on" \
	-virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap" \
	-virtfs "local,path=$rundir,mount_tag=ikegwout,security_model=none" \
	</dev/null
qrc=$?
set -e
took=$(($(date +%s) - start))
echo "vm: ----- end of guest output -----"
if [ "$qrc" -eq 124 ] || [ "$qrc" -eq 137 ]; then
	echo "vm: TIMEOUT: the guest did not finish within ${timeout_s}s (command: $*)"
	exit 124
fi
if [ ! -f "$rundir/rc" ]; then
	echo "vm: FAILED: the VM stopped (qemu exit $qrc) after ${took}s without reporting the command's exit code"
	exit 125
fi
rc=$(cat "$rundir/rc")
if [ -n "$(ls -A "$rundir/out")" ]; then
	echo "vm: files the guest left in IKEGW_VM_OUT: $(ls "$rundir/out" | tr '\n' ' ')"
	if [ "${IKEGW_VM_KEEP:-0}" != 1 ]; then echo "vm: (set IKEGW_VM_KEEP=1 to keep them)"; fi
fi
echo "vm: command exited with $rc after ${took}s: $*"
exit "$rc"
