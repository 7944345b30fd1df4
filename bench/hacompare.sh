#!/usr/bin/env bash
# Failover vs strongSwan's ha plugin, side by side in the VM (issue 7 item
# 3; package bench/hacompare). Builds the bench/hacompare test binary and
# ikegwd on the host, boots Debian's 6.1 kernel (scripts/vm/run.sh) with
# CLUSTERIP and netfilter loaded, and runs TestCompareVM there: RUNS
# failovers of each implementation, alternating, each on a fresh lab, 6 s of
# 50 ms pings before the active node is killed. Prints one
# "hacompare-result: {json}" line per run and a Markdown table of medians;
# the whole guest output goes to OUT (default bench/results/hacompare.txt).
#
# Environment: RUNS (default 5), ONLY=ha|ikegw, PEER=kernel (kernel ESP on
# the strongSwan run's peer instead of kernel-libipsec), IKEGW_VM_TIMEOUT
# (default 300 s per run).
# Needs root, qemu (scripts/deps.sh kernel) and iptables (iptables-legacy).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
out=${OUT:-bench/results/hacompare.txt}
case "$out" in /*) ;; *) out=$repo/$out ;; esac
runs=${RUNS:-5}
mkdir -p "$(dirname "$out")" .cache/vm/bin
command -v iptables-legacy >/dev/null || { echo "hacompare: iptables-legacy missing (Debian package iptables)" >&2; exit 1; }
tbin=$(mktemp "$repo/.cache/vm/bin/hacompare.XXXXXX.test")
gbin=$(mktemp "$repo/.cache/vm/bin/ikegwd.XXXXXX")
trap 'rm -f "$tbin" "$gbin"' EXIT
go test -c -o "$tbin" ./bench/hacompare/
go build -o "$gbin" ./cmd/ikegwd
export IKEGW_HACOMPARE_RUNS=$runs IKEGW_HACOMPARE_IKEGWD=$gbin
export IKEGW_HACOMPARE_ONLY=${ONLY:-} IKEGW_HACOMPARE_PEER=${PEER:-}
export IKEGW_VM_ENV="IKEGW_HACOMPARE_RUNS IKEGW_HACOMPARE_IKEGWD IKEGW_HACOMPARE_ONLY IKEGW_HACOMPARE_PEER"
# CLUSTERIP and what it needs, loaded by the guest's init (no modprobe in
# the chroot); crc32c before libcrc32c (TESTBED.md).
export IKEGW_VM_MODULES="crc32c_generic libcrc32c nf_conntrack ip_tables iptable_filter ipt_CLUSTERIP"
export IKEGW_VM_TIMEOUT=${IKEGW_VM_TIMEOUT:-$((300 * runs * 2 + 120))}
{
	echo "hacompare: $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), host $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "hacompare: strongSwan $(dpkg-query -W -f='${Version}' strongswan-charon 2>/dev/null || echo unknown), iptables $(dpkg-query -W -f='${Version}' iptables 2>/dev/null || echo unknown)"
	echo "hacompare: command: RUNS=$runs ONLY=${ONLY:-} PEER=${PEER:-} bench/hacompare.sh"
} | tee "$out"
cd bench/hacompare
set +e
"$repo/scripts/vm/run.sh" "$tbin" -test.v -test.count=1 -test.run 'TestCompareVM$' -test.timeout 0 2>&1 | tee -a "$out" |
	grep -E --line-buffered '^(vm:|vm-init:|hacompare-|\||--- |FAIL|ok|PASS)|hacompare_test.go:[0-9]+: (strongswan-ha|ikegw) run'
rc=${PIPESTATUS[0]}
set -e
echo "hacompare: guest output in $out (exit $rc)"
exit "$rc"
