#!/usr/bin/env bash
# bench/failover.sh: failover outage vs tunnel count (issue 5 target, issue 7
# item 2). For each N in SIZES (1 100 1000) it builds the cluster lab
# (2 gateways + witness, userspace data plane, `ikegw-lab bench`): the
# strongSwan peer's tunnel carries a ping every 10 ms, cmd/ikeload sets up
# the other N-1 tunnels (Main Mode + Quick Mode, PSK, NAT-T) so the cluster
# holds N IKE SAs and N IPsec SA pairs; then it kills the active RUNS (5)
# times per kind (KINDS: daemon death = SIGKILL of ikegwd alone, node death
# = links cut and every process killed; `planned` = SIGTERM handover), the
# dead node restarted as standby between runs. Outage = the largest gap
# between ping replies; split = detection (failure -> the new active's
# Raft is a candidate), election (-> leader), ready (-> takeover start), its
# load / commit / install / engine, and the rest (VIP claim, announcements,
# first packets). PASSES=N repeats the sizes in alternation.
#
# LEASE, HEARTBEAT, ELECTION and COUNTER_SYNC (Go durations) replace the
# lab's Raft timings (leader lease 100ms, heartbeat and election 200ms) and
# counter sync (200ms), for every size of the run: the lab's values suit 1
# to 1,000 tunnels; 10,000 on this 2-core machine needs ikegwd's defaults
# (LEASE=500ms HEARTBEAT=1s ELECTION=1s COUNTER_SYNC=1s; BENCHMARKS.md says
# why). Each JSON line records the timings it ran with.
#
# Needs root, charon + swanctl, Go, jq. Usage: bench/failover.sh [report.md]
# Raw JSON lines in bench/results/failover-N.jsonl.
set -euo pipefail
SIZES=${SIZES:-"1 100 1000"}
RUNS=${RUNS:-5}
KINDS=${KINDS:-daemon-death,node-death}
LEASE=${LEASE:-100ms}
HEARTBEAT=${HEARTBEAT:-200ms}
ELECTION=${ELECTION:-200ms}
COUNTER_SYNC=${COUNTER_SYNC:-200ms}
REPO=$(cd "$(dirname "$0")/.." && pwd)
REPORT=${1:-$REPO/bench/RESULTS-failover.md}
OUT=$REPO/bench/results
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/ikegw-fobench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cd "$REPO"
for c in ikegwd ikegwctl ikeload ikegw-lab; do
	go build -o "$WORK/$c" "./cmd/$c"
done
# PASSES > 1 alternates the sizes (1 100 1000 1 100 1000 ...), so that a
# change of the machine's load spreads over every size instead of one.
PASSES=${PASSES:-1}
UNIQ=$(tr ' ' '\n' <<<"$SIZES" | awk 'NF && !seen[$0]++' | tr '\n' ' ')
LOADS=()
for n in $UNIQ; do : > "$OUT/failover-$n.jsonl"; done
for pass in $(seq "$PASSES"); do
	for n in $SIZES; do
		LOADS+=("$n:$(cut -d' ' -f1 /proc/loadavg)")
		echo "failover bench: pass $pass, $n tunnels, $RUNS runs of $KINDS (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
		"$WORK/ikegw-lab" bench --tunnels "$n" --runs "$RUNS" --kinds "$KINDS" \
			--lease "$LEASE" --heartbeat "$HEARTBEAT" --election "$ELECTION" --counter-sync "$COUNTER_SYNC" \
			--bin "$WORK/ikegwd" --ikeload "$WORK/ikeload" --ctl "$WORK/ikegwctl" >> "$OUT/failover-$n.jsonl"
	done
done
# median of a jq number stream
med='sort | if length == 0 then null else (if length % 2 == 1 then .[length/2|floor] else (.[length/2-1] + .[length/2]) / 2 end) end'
{
	echo "# Failover outage vs tunnel count"
	echo
	echo "- Machine: $(nproc) cores, $(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}'), kernel $(uname -r); 1-min load at the start of each size (size:load): ${LOADS[*]}; at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "- Date: $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
	echo "- Command: \`bench/failover.sh\` (SIZES=\"$SIZES\" RUNS=$RUNS PASSES=$PASSES KINDS=$KINDS LEASE=$LEASE HEARTBEAT=$HEARTBEAT ELECTION=$ELECTION COUNTER_SYNC=$COUNTER_SYNC), per size and pass \`ikegw-lab bench --tunnels N --runs $RUNS --kinds $KINDS --lease $LEASE --heartbeat $HEARTBEAT --election $ELECTION --counter-sync $COUNTER_SYNC\`"
	echo "- Lab: 2 gateways + witness, Raft heartbeat $HEARTBEAT, election $ELECTION, leader lease $LEASE, userspace data plane, counter sync $COUNTER_SYNC; ping every 10 ms through the strongSwan peer's tunnel"
	echo "- Split (medians of the seamless runs): detect = failure -> the new active's Raft is a candidate; elect = candidate -> leader; ready = leader -> takeover start (Barrier, or its log applied); load / commit / install / engine = the takeover; rest = outage minus all of these (VIP claim, announcements, first packets; 0 when the ping resumed before the takeover's own end was reached in the gap)"
	echo
	echo "| tunnels | kind | runs ok | outage median (min-max) ms | lost median | detect ms | elect ms | ready ms | load ms | commit ms | install ms | engine ms | rest ms | replayed seq (all runs) | active lost its role during setup |"
	echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
	for n in $UNIQ; do
		f="$OUT/failover-$n.jsonl"
		for k in ${KINDS//,/ }; do
			jq -rs --arg k "$k" --arg n "$n" "
				def med: $med;
				def r: if . == null then null else . * 10 | round / 10 end;
				[.[] | select(.kind == \$k)] as \$all | [\$all[] | select(.seamless)] as \$ok |
				\"| \(\$n) | \(\$k) | \(\$ok|length)/\(\$all|length) | \([\$ok[].outage_ms]|med|r) (\([\$ok[].outage_ms]|min|r)-\([\$ok[].outage_ms]|max|r)) | \([\$ok[].lost]|med) | \([\$ok[].detect_ms // empty]|med|r) | \([\$ok[].elect_ms // empty]|med|r) | \([\$ok[].ready_ms // empty]|med|r) | \([\$ok[].load_ms]|med|r) | \([\$ok[].commit_ms]|med|r) | \([\$ok[].install_ms]|med|r) | \([\$ok[].engine_ms]|med|r) | \([\$ok[].rest_ms]|med|r) | \([\$all[].seq_failures]|add) | \([\$all[].setup_active_losses // 0]|unique|map(tostring)|join(\", \")) |\"
			" "$f"
		done
	done
	echo
	echo "Raw: bench/results/failover-N.jsonl (one line per failover; \`error\` says why a run was not seamless)."
} > "$REPORT"
cat "$REPORT"
