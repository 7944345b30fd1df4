#!/usr/bin/env bash
# make bench: every benchmark of ikegw on this machine, in one run, raw
# results under bench/results/ (BENCHMARKS.md quotes them with their
# commands). Needs root for the namespace and VM parts.
#   1. Go micro-benchmarks (codec, crypto, engine, ESP, replay, store,
#      cluster commit), 5 counts each, summarised with benchstat.
#   2. bench/handshake.sh: handshake rate of ikeload against strongSwan
#      5.9.8 and against ikegwd, side by side, medians of 5 runs.
#   3. Failover outages in the cluster lab (deploy/gwlab TestFailover).
#   4. Kernel SA install rate in the VM (xfrm/kernel).
#   5. bench/throughput.sh and bench/memory.sh: iperf3 through a tunnel and
#      RSS per 1,000 tunnels, against strongSwan in the same run.
#   6. bench/failover.sh: outage vs tunnel count (1, 100, 1,000) with the
#      takeover split; then 10,000 with ikegwd's production timings (lease
#      500 ms, heartbeat, election and counter sync 1 s: the lab's 100 ms
#      lease does not hold while 10,000 tunnels are set up on 2 cores).
#   7. bench/hacompare.sh: failover against strongSwan's ha plugin in the VM.
#   8. bench/dos.sh: a 60 s spoofed Main Mode flood (RSS, CPU, drops, a
#      legitimate peer's setup time).
# Environment: SKIP="micro handshake throughput memory failover kernel
# outage hacompare dos".
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench/results
mkdir -p "$out"
skip=" ${SKIP:-} "
{
	echo "machine: $(nproc) cores, $(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}'), kernel $(uname -r)"
	echo "go: $(go version)"
	echo "date: $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
	echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$out/machine.txt"
cat "$out/machine.txt"

if [[ $skip != *" micro "* ]]; then
	echo "bench: Go micro-benchmarks (5 counts)"
	go test -run '^$' -bench . -benchmem -count 5 \
		./ike/isakmp ./ike/ikecrypto ./ike/ikev1 ./xfrm/esp ./xfrm/replay ./store ./cluster \
		> "$out/micro.txt"
	if GOFLAGS= go run golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da "$out/micro.txt" > "$out/micro-benchstat.txt" 2>/dev/null; then
		echo "bench: summary in $out/micro-benchstat.txt"
	else
		echo "bench: benchstat unavailable; raw results in $out/micro.txt"
	fi
fi
if [[ $skip != *" handshake "* ]]; then
	echo "bench: handshake rate vs strongSwan"
	bench/handshake.sh "$out/handshake.md"
fi
if [[ $skip != *" throughput "* ]]; then
	echo "bench: throughput through a tunnel vs strongSwan (iperf3)"
	bench/throughput.sh > "$out/throughput.log" 2>&1 || echo "bench: throughput.sh failed (see $out/throughput.log)"
fi
if [[ $skip != *" memory "* ]]; then
	echo "bench: RSS per 1,000 tunnels vs strongSwan"
	bench/memory.sh > "$out/memory.log" 2>&1 || echo "bench: memory.sh failed (see $out/memory.log)"
fi
if [[ $skip != *" failover "* ]]; then
	echo "bench: failover outages (cluster lab)"
	go test -count=1 -run 'TestFailover$' -v ./deploy/gwlab/ 2>&1 | grep -E 'outage|new active|rejoined|^(---|ok|FAIL)' > "$out/failover.txt" || true
	cat "$out/failover.txt"
fi
if [[ $skip != *" kernel "* ]]; then
	echo "bench: kernel SA install rate (VM)"
	scripts/vm/test-kernel.sh -test.run '^$' -test.bench 'InstallPairs' -test.benchtime 1x > "$out/kernel-install.txt" 2>&1 || true
	grep -E 'Benchmark|pairs/s' "$out/kernel-install.txt" || true
fi
if [[ $skip != *" outage "* ]]; then
	echo "bench: failover outage vs tunnel count"
	bench/failover.sh > "$out/failover-bench.log" 2>&1 || echo "bench: failover.sh failed (see $out/failover-bench.log)"
	echo "bench: failover outage at 10,000 tunnels (production timings)"
	SIZES=10000 RUNS=3 LEASE=500ms HEARTBEAT=1s ELECTION=1s COUNTER_SYNC=1s bench/failover.sh bench/RESULTS-failover-10000.md \
		> "$out/failover-10000.log" 2>&1 || echo "bench: failover.sh at 10,000 failed (see $out/failover-10000.log)"
fi
if [[ $skip != *" hacompare "* ]]; then
	echo "bench: failover vs strongSwan's ha plugin (VM)"
	bench/hacompare.sh > "$out/hacompare.log" 2>&1 || echo "bench: hacompare.sh failed (see $out/hacompare.log)"
fi
if [[ $skip != *" dos "* ]]; then
	echo "bench: spoofed Main Mode flood"
	bench/dos.sh > /dev/null 2>&1 || echo "bench: dos.sh failed (see $out/dos.txt)"
fi
echo "bench: done; results in $out/"
