#!/usr/bin/env bash
# bench/handshake.sh: IKEv1 handshake rate, ikegw's load generator
# (cmd/ikeload, ikegw's engine as initiator) against
#   (a) strongSwan 5.9.8 charon as responder (kernel-libipsec, so NAT-T), and
#   (b) a single ikegwd as responder (userspace data plane, bbolt state),
#   (c) a 3-node ikegw cluster (every SA committed through Raft; the lab of
#       deploy/gwlab, driven by bench/clusterhs; ecp256 only: the lab's load
#       connection proposes aes128-sha256-ecp256; counter sync 1 s,
#       ikegwd's default, not the lab's 200 ms),
# for aes128-sha256 with ecp256 and with modp2048 (ESP aes128-sha256, no
# PFS), RUNS runs each, interleaved (a, b, a, b, ...) so the ratios are
# measured under the same machine load. Writes raw JSON per run and a
# Markdown report (medians, ratios to strongSwan).
#
# Needs root (network namespaces), charon + swanctl, Go. Runs only in
# namespaces it creates (unique names, removed on exit).
#
# Usage: bench/handshake.sh [report.md]      (default bench/RESULTS-handshake.md)
# Environment: TUNNELS (2000), TUNNELS_<suite> per suite (TUNNELS_modp2048
#              500: its DH is ~50x dearer), CONC (64), RUNS (5), SUITES ("ecp256 modp2048"),
#              SETUPS ("strongswan ikegwd cluster"), INPROC=0 skips the in-process
#              benchmarks, KEEP=1 keeps the work directory, PERF_DIR=dir
#              records each responder with perf during its load run and
#              writes perf reports (flat, by symbol) there.
set -euo pipefail

TUNNELS=${TUNNELS:-2000}
TUNNELS_modp2048=${TUNNELS_modp2048:-500}
CONC=${CONC:-64}
RUNS=${RUNS:-5}
SUITES=${SUITES:-"ecp256 modp2048"}
SETUPS=${SETUPS:-"strongswan ikegwd cluster"}
ESP=aes128-sha256
REPO=$(cd "$(dirname "$0")/.." && pwd)
REPORT=${1:-$REPO/bench/RESULTS-handshake.md}

ID_PREFIX=ikb
# shellcheck source=bench/responder.sh
. "$REPO/bench/responder.sh"

declare -A LOADCMD
case " $SETUPS " in
*" cluster "*)
	echo "building bench/clusterhs" >&2
	(cd "$REPO" && go build -o "$WORK/clusterhs" ./bench/clusterhs) || die "bench/clusterhs does not build"
	;;
esac
run_load() { # setup suite run
	local perfpid=""
	if [ -n "${PERF_DIR:-}" ]; then
		mkdir -p "$PERF_DIR"
		perf record -q -F 999 -g -p "$RESP_PID" -o "$WORK/perf-$1-$2-$3.data" >/dev/null 2>&1 &
		perfpid=$!
		PIDS+=("$perfpid")
		sleep 0.5
	fi
	run_load_inner "$@"
	if [ -n "$perfpid" ]; then
		kill -INT "$perfpid" 2>/dev/null || true
		wait "$perfpid" 2>/dev/null || true
		perf report -i "$WORK/perf-$1-$2-$3.data" --stdio --no-children -g none --sort dso,symbol 2>/dev/null | grep -v '^$' | grep -E '^ +[0-9]' | head -60 >"$PERF_DIR/$1-$2-$3.txt" || true
	fi
}
run_load_inner() { # setup suite run
	local out="$WORK/raw/$1-$2-$3.json" n LOCAL
	n=$(tunnels_for "$2")
	LOCAL=$(local_range "$n")
	LOADCMD[$2]="ikeload -target 10.77.0.1 -local $LOCAL -tunnels $n -concurrency $CONC -proposal $(proposal "$2") -esp $ESP -encap -psk-file PSKFILE -tunnel-timeout 30s -duration 120s -o json"
	ip netns exec "$NSL" "$WORK/ikeload" -target 10.77.0.1 -local "$LOCAL" -tunnels "$n" -concurrency "$CONC" \
		-proposal "$(proposal "$2")" -esp "$ESP" -encap -psk-file "$WORK/psk" -tunnel-timeout 30s -duration 120s -o json \
		>"$out" 2>"$WORK/raw/$1-$2-$3.err" || true
	[ -s "$out" ] || { cat "$WORK/raw/$1-$2-$3.err" >&2; die "ikeload produced no result ($1 $2 run $3)"; }
}

field() { jq -r ".$2" "$1"; }

mkdir -p "$WORK/raw"
for suite in $SUITES; do
	for run in $(seq 1 "$RUNS"); do
		for setup in $SETUPS; do
			d="$WORK/$setup-$suite-$run"
			mkdir -p "$d"
			case $setup in
			strongswan)
				swan_conf "$d" "$suite"
				start_strongswan "$d"
				run_load "$setup" "$suite" "$run"
				swan_count >"$WORK/raw/$setup-$suite-$run.sas"
				resp_cpu_ms >"$WORK/raw/$setup-$suite-$run.cpu"
				stop_resp
				;;
			ikegwd)
				[ "$HAVE_IKEGWD" = 1 ] || continue
				ikegwd_conf "$d" "$suite"
				start_ikegwd "$d"
				run_load "$setup" "$suite" "$run"
				ikegwd_count "$d" >"$WORK/raw/$setup-$suite-$run.sas"
				resp_cpu_ms >"$WORK/raw/$setup-$suite-$run.cpu"
				stop_resp
				;;
			cluster)
				[ "$HAVE_IKEGWD" = 1 ] && [ "$suite" = ecp256 ] || continue
				n=$(tunnels_for "$suite")
				CLUSTERCMD="clusterhs -ikegwd ikegwd -ikeload ikeload -tunnels $n -concurrency $CONC"
				"$WORK/clusterhs" -ikegwd "$WORK/ikegwd" -ikeload "$WORK/ikeload" -tunnels "$n" -concurrency "$CONC" \
					-o "$WORK/raw/$setup-$suite-$run.json" 2>"$WORK/raw/$setup-$suite-$run.err" ||
					{ tail -20 "$WORK/raw/$setup-$suite-$run.err" >&2; die "clusterhs failed ($suite run $run)"; }
				echo n/a >"$WORK/raw/$setup-$suite-$run.sas"
				# The active's CPU (the cluster's total is in the raw JSON).
				jq -r '.cpu_ms_per_tunnel * .ok | floor' "$WORK/raw/$setup-$suite-$run.json" >"$WORK/raw/$setup-$suite-$run.cpu"
				;;
			*) die "unknown setup $setup" ;;
			esac
			f="$WORK/raw/$setup-$suite-$run.json"
			[ -e "$WORK/raw/$setup-$suite-$run.json" ] || continue
			printf '%-10s %-9s run %d: ok %s/%s  %s tunnels/s  p50 %s ms  p99 %s ms  responder: %s IKE SAs, %s ms CPU\n' "$setup" "$suite" "$run" \
				"$(field "$f" ok)" "$(tunnels_for "$suite")" "$(field "$f" tunnels_per_s)" "$(field "$f" p50_ms)" "$(field "$f" p99_ms)" \
				"$(cat "$WORK/raw/$setup-$suite-$run.sas")" "$(cat "$WORK/raw/$setup-$suite-$run.cpu")" >&2
		done
	done
done

median() { sort -g | awk '{v[NR]=$1} END {if (NR==0) {print "n/a"; exit} if (NR%2) print v[(NR+1)/2]; else printf "%.4g\n", (v[NR/2]+v[NR/2+1])/2}'; }
# val setup suite run field: one run's value; cpu_ms_per_tunnel is the
# responder's CPU time divided by the tunnels set up.
val() {
	local f="$WORK/raw/$1-$2-$3"
	if [ "$4" = cpu_ms_per_tunnel ]; then
		awk -v c="$(cat "$f.cpu")" -v n="$(field "$f.json" ok)" 'BEGIN { if (n > 0 && c != "n/a") printf "%.3f\n", c / n; else print "n/a" }'
	else
		field "$f.json" "$4"
	fi
}
med() { # setup suite field
	local run
	for run in $(seq 1 "$RUNS"); do [ -e "$WORK/raw/$1-$2-$run.json" ] && val "$1" "$2" "$run" "$3"; done | { grep -v n/a || true; } | median
}
# paired_ratio setup suite field: median over runs of this setup's value
# divided by strongSwan's in the same (adjacent) run.
paired_ratio() {
	local run a b
	for run in $(seq 1 "$RUNS"); do
		[ -e "$WORK/raw/$1-$2-$run.json" ] && [ -e "$WORK/raw/strongswan-$2-$run.json" ] || continue
		a=$(val "$1" "$2" "$run" "$3")
		b=$(val strongswan "$2" "$run" "$3")
		ratio "$a" "$b"
		echo
	done | { grep -v n/a || true; } | median
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a=="n/a" || b=="n/a" || b==0) print "n/a"; else printf "%.2f", a/b }'; }

# In-process engine benchmarks (ike/ikev1/bench_test.go), RUNS times each.
INPROC_CMD="go test -run '^\$' -bench 'Handshake|ResponderSplit' -benchmem -count 1 ./ike/ikev1/   # $RUNS times"
SCALE_CMD="go test -run '^\$' -bench ResponderScale -benchtime 200x -benchmem -count 1 ./ike/ikev1/   # $RUNS times"
if [ "${INPROC:-1}" = 1 ]; then
	echo "in-process benchmarks: $INPROC_CMD" >&2
	# -count 1 in a loop rather than -count N: each round measures the
	# whole and its parts close together in time, so machine load drifts
	# hit them alike.
	: >"$WORK/inproc.txt"
	for r in $(seq 1 "$RUNS"); do
		(cd "$REPO" && go test -run '^$' -bench 'Handshake|ResponderSplit' -benchmem -count 1 ./ike/ikev1/) >>"$WORK/inproc.txt" 2>&1 ||
			{ cat "$WORK/inproc.txt" >&2; die "in-process benchmarks failed"; }
	done
	echo "in-process benchmarks: $SCALE_CMD" >&2
	for r in $(seq 1 "$RUNS"); do
		(cd "$REPO" && go test -run '^$' -bench ResponderScale -benchtime 200x -benchmem -count 1 ./ike/ikev1/) >>"$WORK/inproc.txt" 2>&1 ||
			{ cat "$WORK/inproc.txt" >&2; die "in-process benchmarks failed"; }
	done
	# One line per benchmark and unit: name unit median.
	awk '/^Benchmark/ { n = $1; sub(/-[0-9]+$/, "", n); for (i = 3; i < NF; i += 2) { k = n SUBSEP $(i+1); v[k] = v[k] " " $i; if (!(k in seen)) { seen[k] = 1; order[++m] = k } } }
	function med(str,   x, c, i, j, t) { c = split(str, x, " "); for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (x[j] + 0 < x[i] + 0) { t = x[i]; x[i] = x[j]; x[j] = t } return (c % 2) ? x[(c + 1) / 2] : (x[c / 2] + x[c / 2 + 1]) / 2 }
	END { for (i = 1; i <= m; i++) { split(order[i], p, SUBSEP); print p[1], p[2], med(v[order[i]]) } }' "$WORK/inproc.txt" >"$WORK/inproc.med"
fi
# inproc benchmark unit: the median
inproc() { awk -v n="$1" -v u="$2" '$1 == n && $2 == u { print $3 }' "$WORK/inproc.med"; }
us() { awk -v v="$(inproc "$1" "$2")" 'BEGIN { if (v == "") print "n/a"; else printf "%.1f", v / 1000 }'; }

{
	echo "# Handshake rate: ikegw's load generator against strongSwan and ikegwd"
	echo
	echo "Generated by \`bench/handshake.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(cd "$REPO" && git rev-parse --short HEAD)."
	echo
	echo "## Machine"
	echo
	echo '```'
	echo "nproc: $(nproc)"
	lscpu | head -n 15
	echo "kernel: $(uname -r)"
	echo "charon: $("$CHARON" --version 2>&1 | head -1 || true)$(dpkg-query -W -f ' (Debian ${Version})' strongswan-charon 2>/dev/null || true)"
	echo "go: $(go version)"
	echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo '```'
	echo
	echo "## Setup"
	echo
	echo "- Two network namespaces joined by a veth pair. The generator owns $MAXT addresses ($(local_range "$MAXT")) on lo; each tunnel uses its own, so the responder sees as many distinct peers as tunnels, one ISAKMP SA and one IPsec SA pair each."
	for suite in $SUITES; do echo "- Tunnels per run for $suite: $(tunnels_for "$suite"), concurrency $CONC."; done
	echo "- Per tunnel: IKEv1 Main Mode (PSK) + Quick Mode, ESP $ESP, no PFS, tunnel mode, selectors 10.200.0.0+i/32 <-> 10.99.0.0/24. Setup latency is from Initiate to the initiator installing the Quick Mode's pair."
	echo "- Generator: \`ikeload\` (ikegw's engine as initiator, one engine/event loop, in-memory state, a data plane that only records installs), \`-encap\` so both responders do NAT-T (strongSwan's kernel-libipsec fakes a NAT anyway) and IKE floats to 4500."
	echo "- (a) strongSwan: charon $("$CHARON" --version 2>&1 | head -1 | awk '{print $NF}'), kernel-libipsec (userspace ESP on a TUN), threads = 16, ikesa_table_size = 4096, ikesa_table_segments = 16, no DPD, log level 0, one connection with remote_addrs = 10.78.0.0/16."
	echo "- (b) ikegwd (built from $IKEGWD_SRC): a single node, userspace data plane (TUN), state in bbolt under /tmp, log level warn, one connection with remote_addrs %any."
	case " $SETUPS " in *" cluster "*)
		echo "- (c) cluster: deploy/gwlab's lab with 3 gateways (no witness), each ikegwd in its own namespace with its own bbolt state, Raft over mutual TLS with fsync, heartbeat/election 1 s, lease 500 ms; the active holds the outside VIP and commits every SA (and the cached Main Mode message 6) through Raft before sending what it guards; the generator sits on the outside segment. Built fresh per run. Its CPU column is the active node's (user + system of its \`ikegwd run\` during the load run); the followers' is in the raw JSON (cpu_ms_gwN) and summed below. The replication cost is read from the active's metrics around the run: Raft entries and sealed bytes proposed per tunnel (counter syncs included) and the commit latency histogram's p50/p99 (Prometheus-style interpolation inside 0.5/1/2/5/10/20/50 ms buckets)." ;;
	esac
	echo "- Responder CPU is the responder process's user + system time (/proc/PID/stat, $(getconf CLK_TCK) Hz ticks) from its start until the run ended, divided by the tunnels set up: it includes start-up, and it is the least noisy number on a shared machine."
	echo "- Each run starts a fresh responder; runs alternate between the setups (a, b, a, b, ...). $RUNS runs per setup and suite; the generator and the responder share the machine's $(nproc) cores (and the machine is shared with other work: compare the ratios, not the absolute numbers)."
	echo
	echo "Commands per run (in the generator's namespace; PSKFILE is a 0600 file):"
	echo
	echo '```'
	for suite in $SUITES; do echo "${LOADCMD[$suite]}"; done
	[ -n "${CLUSTERCMD:-}" ] && echo "$CLUSTERCMD   # (c), bench/clusterhs: builds the lab, runs ikeload with the same flags against the VIP"
	echo '```'
	echo
	echo "## Medians"
	echo
	echo "| suite | responder | ok | tunnels/s | p50 ms | p99 ms | responder CPU ms/tunnel | tunnels/s vs strongSwan (ratio of medians) | tunnels/s vs strongSwan (median of per-run ratios) | CPU/tunnel, strongSwan's over this |"
	echo "|---|---|---|---|---|---|---|---|---|---|"
	for suite in $SUITES; do
		base=$(med strongswan "$suite" tunnels_per_s)
		basecpu=$(med strongswan "$suite" cpu_ms_per_tunnel)
		for setup in $SETUPS; do
			[ "$setup" = ikegwd ] && [ "$HAVE_IKEGWD" != 1 ] && continue
			[ "$setup" = cluster ] && [ "$suite" != ecp256 ] && continue
			tps=$(med "$setup" "$suite" tunnels_per_s)
			cpu=$(med "$setup" "$suite" cpu_ms_per_tunnel)
			echo "| $suite | $setup | $(med "$setup" "$suite" ok) of $(tunnels_for "$suite") | $tps | $(med "$setup" "$suite" p50_ms) | $(med "$setup" "$suite" p99_ms) | $cpu | $(ratio "$tps" "$base") | $(paired_ratio "$setup" "$suite" tunnels_per_s) | $(ratio "$basecpu" "$cpu") |"
		done
	done
	case " $SETUPS " in *" cluster "*)
		echo
		echo "Cluster CPU (all three gateways) per tunnel, median: $(med cluster ecp256 cluster_cpu_ms_per_tunnel) ms; the active's: $(med cluster ecp256 cpu_ms_per_tunnel) ms. The three replicas, the generator and the strongSwan peer of the lab share the machine's $(nproc) cores, where (a) and (b) run one responder process: on this machine the cluster's rate is bounded by the CPU of three replicas, which production gives three machines."
				echo "Replication during the cluster runs (medians): $(med cluster ecp256 raft_bytes_per_tunnel) bytes and $(med cluster ecp256 raft_entries_per_tunnel) Raft entries per tunnel; commit latency p50 $(med cluster ecp256 raft_commit_p50_ms) ms, p99 $(med cluster ecp256 raft_commit_p99_ms) ms over $(med cluster ecp256 raft_commits) commits per run (one commit carries what the engine's actions of one event-loop turn persist)." ;;
	esac
	echo
	echo "## Raw runs"
	echo
	echo "| suite | responder | run | ok | failed | elapsed s | tunnels/s | p50 ms | p90 ms | p99 ms | max ms | initiator retransmits | responder IKE SAs after | responder CPU ms | generator CPU ms |"
	echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
	for suite in $SUITES; do
		for setup in $SETUPS; do
			for run in $(seq 1 "$RUNS"); do
				f="$WORK/raw/$setup-$suite-$run.json"
				[ -e "$f" ] || continue
				echo "| $suite | $setup | $run | $(field "$f" ok) | $(field "$f" failed) | $(field "$f" elapsed_s) | $(field "$f" tunnels_per_s) | $(field "$f" p50_ms) | $(field "$f" p90_ms) | $(field "$f" p99_ms) | $(field "$f" max_ms) | $(field "$f" retransmits) | $(cat "$WORK/raw/$setup-$suite-$run.sas") | $(cat "$WORK/raw/$setup-$suite-$run.cpu") | $(field "$f" initiator_cpu_ms) |"
			done
		done
	done
	if [ "${INPROC:-1}" = 1 ]; then
		echo
		echo "## In-process engine cost (no sockets, no persistence)"
		echo
		echo "One Main Mode + Quick Mode (PSK, ESP $ESP, no PFS) between two ikegw engines in memory. BenchmarkHandshake (wall time): \"pair\" is both engines' work, \"responder\" only the responder's five HandlePacket calls (MM1, MM3, MM5, QM1, QM3), with the allocations of those calls. BenchmarkResponderSplit measures, in the same loop iteration and in thread CPU time (robust to other load on the machine), the responder's HandlePacket calls and then each part redone on the inputs of a real exchange: dh = group GenerateKey + Shared, prf = every PRF derivation (SKEYID*, key, IVs, NAT-D, HASH_I/R, QM HASH(1..3), KEYMAT both ways), cbc = the five AES-CBC operations, codec = payload decode of the five received messages + encode of the four sent ones; rest = responder minus the parts (records, clones, proposal and selector matching, timers). Medians of $RUNS rounds:"
		echo
		echo '```'
		echo "$INPROC_CMD"
		echo '```'
		echo
		echo "| suite | pair µs (wall) | responder µs (wall) | responder allocs/exchange | responder B/exchange | responder µs (CPU) | dh | prf | cbc | codec | rest |"
		echo "|---|---|---|---|---|---|---|---|---|---|---|"
		for suite in $SUITES; do
			[ -n "$(inproc "BenchmarkHandshake/$suite/responder" ns/op)" ] || continue
			sp="BenchmarkResponderSplit/$suite"
			echo "| $suite | $(us "BenchmarkHandshake/$suite/pair" ns/op) | $(us "BenchmarkHandshake/$suite/responder" ns/op) | $(inproc "BenchmarkHandshake/$suite/responder" allocs/op) | $(inproc "BenchmarkHandshake/$suite/responder" B/op) | $(us "$sp" resp-cpu-ns/op) | $(us "$sp" dh-cpu-ns/op) | $(us "$sp" prf-cpu-ns/op) | $(us "$sp" cbc-cpu-ns/op) | $(us "$sp" codec-cpu-ns/op) | $(us "$sp" rest-cpu-ns/op) |"
		done
		echo
		echo "Responder cost of one more exchange (ecp256) while it holds N established tunnels from N peers (each new tunnel is deleted again, untimed, so N stays fixed); medians of $RUNS runs:"
		echo
		echo '```'
		echo "$SCALE_CMD"
		echo '```'
		echo
		echo "| established tunnels | responder µs/exchange (wall) | responder µs/exchange (CPU) | B/exchange | allocs/exchange |"
		echo "|---|---|---|---|---|"
		for n in $(awk '$1 ~ /^BenchmarkResponderScale\// && $2 == "ns/op" { sub(/.*established=/, "", $1); print $1 }' "$WORK/inproc.med"); do
			b="BenchmarkResponderScale/ecp256/established=$n"
			echo "| $n | $(us "$b" ns/op) | $(us "$b" resp-cpu-ns/op) | $(inproc "$b" B/op) | $(inproc "$b" allocs/op) |"
		done
		echo
		echo "Raw output:"
		echo
		echo '```'
		grep -E '^(Benchmark|cpu|goos|goarch)' "$WORK/inproc.txt"
		echo '```'
	fi
	if [ "$HAVE_IKEGWD" != 1 ]; then
		echo
		echo "ikegwd did not build, so only strongSwan was measured:"
		echo
		echo '```'
		cat "$WORK/ikegwd-build.log"
		echo '```'
	fi
} >"$REPORT"
echo "report written to $REPORT" >&2
