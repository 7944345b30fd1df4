#!/usr/bin/env bash
# bench/dos.sh: ikegwd under a spoofed Main Mode flood (issue 8). Runs
# cmd/ikegwd's TestDoSSpoofedMainModeFlood with a longer flood: 20,000
# spoofed-source Main Mode message 1 per second from a namespace (raw
# socket, 65,536 sources) while a strongSwan peer sets up a tunnel, rekeys
# it both ways and runs DPD; prints ikegwd's RSS every 5 s, its CPU, the
# known peer's setup time and the drop counters. Root (namespaces).
# Environment: FLOOD (default 60s). Output: bench/results/dos.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/dos.sh: needs root (network namespaces)" >&2; exit 1; }
out=bench/results
mkdir -p "$out"
{
	echo "# bench/dos.sh, $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), flood ${FLOOD:-60s}"
	echo "# machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
	IKEGW_DOS_FLOOD="${FLOOD:-60s}" go test -count=1 -timeout 15m -run '^TestDoSSpoofedMainModeFlood$' -v ./cmd/ikegwd/ 2>&1 |
		grep -E 'dos_security_test.go|^(--- |ok|FAIL)' | sed 's/^ *//'
} | tee "$out/dos.txt"
grep -q '^--- PASS' "$out/dos.txt"
