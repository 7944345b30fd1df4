#!/usr/bin/env bash
# bench/throughput.sh: iperf3 through one IPsec tunnel between two network
# namespaces (veth), side by side:
#   (a) strongswan: charon <-> charon, both kernel-libipsec (userspace ESP on
#       a TUN, NAT-T forced: the only strongSwan data plane on this host);
#   (b) ikegwd:     ikegwd <-> ikegwd, two standalone nodes, userspace data
#       plane on both (the left one initiates through its admin API);
#   (c) mixed:      ikegwd (left, initiates) <-> charon kernel-libipsec (right).
# For each ESP proposal (ESPS: aes128gcm16 aes256-sha256; IKE is always
# aes128-sha256-ecp256): TCP (MSS 1360 => 1400-byte IP packets) and UDP
# (-b 0, 1372-byte payload => 1400-byte IP packets), 1 and 4 flows (-P 4),
# DUR seconds each, RUNS rounds; in each round every setup is brought up
# fresh in turn (a, b, c, a, b, c, ...) so load drift hits all alike.
# Reports receiver-side Mbit/s medians, the ratio ikegwd/strongswan and the
# daemons' CPU (user+system from /proc/PID/stat) per test, and for UDP the
# share of the offered datagrams that did not arrive.
#
# Needs root, charon + swanctl, iperf3, jq, Go. Only namespaces it creates
# (unique names, removed on exit, with every process it started).
# Usage: bench/throughput.sh [report.md]   (default bench/RESULTS-throughput.md)
# Environment: RUNS (5), DUR (10), ESPS, SETUPS ("strongswan ikegwd mixed"),
#              TESTS ("tcp1 tcp4 udp1 udp4"), KEEP=1 keeps the work dir,
#              PERF_DIR=dir records both daemons with perf during each test
#              and writes flat profiles (by thread, object, symbol) there.
set -euo pipefail

RUNS=${RUNS:-5}
DUR=${DUR:-10}
ESPS=${ESPS:-"aes128gcm16 aes256-sha256"}
SETUPS=${SETUPS:-"strongswan ikegwd mixed"}
TESTS=${TESTS:-"tcp1 tcp4 udp1 udp4"}
IKE=aes128-sha256-ecp256
REPO=$(cd "$(dirname "$0")/.." && pwd)
REPORT=${1:-$REPO/bench/RESULTS-throughput.md}

ID_PREFIX=ikt
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
command -v iperf3 >/dev/null || die "iperf3 not installed: apt-get install -y --no-install-recommends iperf3"
command -v jq >/dev/null || die "jq not installed"
[ "$DUR" -ge 1 ] && [ "$DUR" -le 120 ] || die "DUR $DUR: want 1..120"

# NSL: left, initiator, iperf3 client, 10.66.0.1, protects 10.98.1.0/24;
# NSR: right, responder, iperf3 server, 10.66.0.2, protects 10.98.2.0/24.

echo "building ikegwd, ikegwctl" >&2
(cd "$REPO" && go build -o "$WORK/ikegwd" ./cmd/ikegwd && go build -o "$WORK/ikegwctl" ./cmd/ikegwctl)

ip netns add "$NSL"
ip netns add "$NSR"
ip link add "$ID-a" type veth peer name "$ID-b"
ip link set "$ID-a" netns "$NSL" name eth0
ip link set "$ID-b" netns "$NSR" name eth0
for ns in "$NSL" "$NSR"; do
	ip -n "$ns" link set lo up
	ip -n "$ns" link set eth0 up
	ip netns exec "$ns" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 net.ipv4.conf.eth0.rp_filter=0
done
ip -n "$NSL" addr add 10.66.0.1/24 dev eth0
ip -n "$NSR" addr add 10.66.0.2/24 dev eth0
ip -n "$NSL" addr add 10.98.1.1/32 dev lo
ip -n "$NSR" addr add 10.98.2.1/32 dev lo
declare -A NSOF=([l]="$NSL" [r]="$NSR")
declare -A PUB=([l]=10.66.0.1 [r]=10.66.0.2)
declare -A PEER=([l]=10.66.0.2 [r]=10.66.0.1)
declare -A NET=([l]=10.98.1.0/24 [r]=10.98.2.0/24)
declare -A PNET=([l]=10.98.2.0/24 [r]=10.98.1.0/24)

PSK="bench-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf '%s\n' "$PSK" >"$WORK/psk"
chmod 600 "$WORK/psk"

declare -A DPID # side -> daemon pid
declare -A DKIND

start_swan() { # side esp dir
	local s=$1 d=$3 sub i
	mkdir -p "$d/swanctl"
	for sub in x509 x509ca x509ocsp x509aa x509ac x509crl pubkey private rsa ecdsa bliss pkcs8 pkcs12 conf.d; do mkdir -p "$d/swanctl/$sub"; done
	cat >"$d/strongswan.conf" <<EOC
charon {
  load_modular = no
  load = random nonce openssl aes sha1 sha2 hmac gcm kdf drbg gmp curve25519 pem pkcs1 x509 pubkey constraints revocation kernel-libipsec kernel-netlink socket-default vici updown
  filelog {
    bench {
      path = $d/charon.log
      time_format = %T
      default = 0
    }
  }
  syslog {
    identifier = charon-tput
    daemon {
      default = -1
    }
  }
}
EOC
	cat >"$d/swanctl/swanctl.conf" <<EOC
connections {
  bench {
    version = 1
    local_addrs = ${PUB[$s]}
    remote_addrs = ${PEER[$s]}
    proposals = $IKE
    dpd_delay = 0
    local {
      auth = psk
    }
    remote {
      auth = psk
    }
    children {
      net {
        local_ts = ${NET[$s]}
        remote_ts = ${PNET[$s]}
        esp_proposals = $2
      }
    }
  }
}
secrets {
  ike-bench {
    secret = "$PSK"
  }
}
EOC
	chmod -R go-rwx "$d"
	STRONGSWAN_CONF="$d/strongswan.conf" ip netns exec "${NSOF[$s]}" unshare --mount --propagation private \
		sh -c 'mount -t tmpfs -o mode=0755 ikt-run /run && mount --bind "$1" /etc/swanctl && exec "$2"' sh "$d/swanctl" "$CHARON" \
		>"$d/charon.out" 2>&1 &
	DPID[$s]=$!
	DKIND[$s]=swan
	PIDS+=("$!")
	for i in $(seq 1 100); do
		if nsenter -t "${DPID[$s]}" -m -n swanctl --stats >/dev/null 2>&1; then
			nsenter -t "${DPID[$s]}" -m -n swanctl --load-all >"$d/load-all.out" 2>&1 || { cat "$d/load-all.out" >&2; die "swanctl --load-all failed"; }
			return 0
		fi
		kill -0 "${DPID[$s]}" 2>/dev/null || { cat "$d/charon.out" "$d/charon.log" >&2; die "charon exited at startup"; }
		sleep 0.1
	done
	die "charon's vici socket does not answer"
}

start_ikegwd() { # side esp dir
	local s=$1 d=$3 i
	mkdir -p "$d/state"
	"$WORK/ikegwd" keygen --out "$d/cluster.key" >/dev/null
	cat >"$d/ikegwd.yaml" <<EOC
node:
  name: tput-$s
  state_dir: $d/state
  cluster_key_file: $d/cluster.key
ike:
  listen: [${PUB[$s]}]
dataplane:
  kind: userspace
  tun: ikegw%d
log:
  level: warn
admin:
  socket: $d/admin.sock
connections:
  - name: bench
    local_addrs: ${PUB[$s]}
    remote_addrs: ${PEER[$s]}
    psk_file: $WORK/psk
    proposals: [$IKE]
    dpd_delay: 0s
    start_action: none
    children:
      - name: net
        local_ts: [${NET[$s]}]
        remote_ts: [${PNET[$s]}]
        esp_proposals: [$2]
EOC
	"$WORK/ikegwd" check-config "$d/ikegwd.yaml" >"$d/check.out" 2>&1 || { cat "$d/check.out" >&2; die "ikegwd check-config failed"; }
	ip netns exec "${NSOF[$s]}" "$WORK/ikegwd" run -c "$d/ikegwd.yaml" >"$d/ikegwd.log" 2>&1 &
	DPID[$s]=$!
	DKIND[$s]=ikegwd
	PIDS+=("$!")
	for i in $(seq 1 100); do
		[ -S "$d/admin.sock" ] && return 0
		kill -0 "${DPID[$s]}" 2>/dev/null || { cat "$d/ikegwd.log" >&2; die "ikegwd exited at startup"; }
		sleep 0.1
	done
	die "ikegwd's admin socket did not appear"
}

initiate() { # dir-of-left
	if [ "${DKIND[l]}" = swan ]; then
		timeout 30 nsenter -t "${DPID[l]}" -m -n swanctl --initiate --child net --timeout 20 >"$1/initiate.out" 2>&1 || { cat "$1/initiate.out" >&2; return 1; }
	else
		timeout 30 "$WORK/ikegwctl" --socket "$1/admin.sock" initiate bench >"$1/initiate.out" 2>&1 || { cat "$1/initiate.out" >&2; return 1; }
	fi
	# wait until traffic passes
	local i
	for i in $(seq 1 100); do
		ip netns exec "$NSL" ping -c1 -W1 -I 10.98.1.1 10.98.2.1 >/dev/null 2>&1 && return 0
		sleep 0.2
	done
	return 1
}

stop_daemons() {
	local s i
	for s in l r; do kill -TERM "${DPID[$s]}" 2>/dev/null || true; done
	for s in l r; do
		for i in $(seq 1 50); do kill -0 "${DPID[$s]}" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "${DPID[$s]}" 2>/dev/null || true
		wait "${DPID[$s]}" 2>/dev/null || true
	done
}

cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }

iperf_cmd() { # test -> client args
	case $1 in
	tcp1) echo "-c 10.98.2.1 -B 10.98.1.1 -t $DUR -M 1360 -J" ;;
	tcp4) echo "-c 10.98.2.1 -B 10.98.1.1 -t $DUR -M 1360 -P 4 -J" ;;
	udp1) echo "-c 10.98.2.1 -B 10.98.1.1 -t $DUR -u -b 0 -l 1372 -J" ;;
	udp4) echo "-c 10.98.2.1 -B 10.98.1.1 -t $DUR -u -b 0 -l 1372 -P 4 -J" ;;
	*) die "unknown test $1" ;;
	esac
}
# receiver-side Mbit/s from iperf3 JSON
mbps() {
	jq -r 'if .end.sum_received then .end.sum_received.bits_per_second elif .end.sum then .end.sum.bits_per_second * (1 - (.end.sum.lost_percent // 0) / 100) else empty end | . / 1e6 | . * 10 | round / 10' "$1" 2>/dev/null
}

# UDP: percent of the datagrams sent that were lost on the way ("-" for TCP)
loss() {
	jq -r 'if .start.test_start.protocol == "UDP" then (.end.sum.lost_percent // empty) | . * 10 | round / 10 else "-" end' "$1" 2>/dev/null
}

mkdir -p "$WORK/raw"
: >"$WORK/raw/all"
HZ=$(getconf CLK_TCK)
for run in $(seq 1 "$RUNS"); do
	for esp in $ESPS; do
		for setup in $SETUPS; do
			d="$WORK/$setup-$esp-$run"
			mkdir -p "$d/l" "$d/r"
			case $setup in
			strongswan) start_swan r "$esp" "$d/r"; start_swan l "$esp" "$d/l" ;;
			ikegwd) start_ikegwd r "$esp" "$d/r"; start_ikegwd l "$esp" "$d/l" ;;
			mixed) start_swan r "$esp" "$d/r"; start_ikegwd l "$esp" "$d/l" ;;
			*) die "unknown setup $setup" ;;
			esac
			if ! initiate "$d/l"; then
				echo "$setup $esp run $run: tunnel did not come up" >&2
				for t in $TESTS; do echo "$setup $esp $t $run n/a n/a n/a n/a" >>"$WORK/raw/all"; done
				stop_daemons
				continue
			fi
			for t in $TESTS; do
				ip netns exec "$NSR" iperf3 -s -B 10.98.2.1 -1 >"$d/server-$t.out" 2>&1 &
				sp=$!
				PIDS+=("$sp")
				sleep 0.3
				perfpid=""
				if [ -n "${PERF_DIR:-}" ]; then
					mkdir -p "$PERF_DIR"
					perf record -q -F 999 -g -p "${DPID[l]},${DPID[r]}" -o "$d/perf-$t.data" >/dev/null 2>&1 &
					perfpid=$!
					PIDS+=("$perfpid")
				fi
				cl=$(cpu_ticks "${DPID[l]}"); cr=$(cpu_ticks "${DPID[r]}"); t0=$(date +%s.%N)
				# shellcheck disable=SC2046
				timeout $((DUR + 20)) ip netns exec "$NSL" iperf3 $(iperf_cmd "$t") >"$d/$t.json" 2>"$d/$t.err" || true
				t1=$(date +%s.%N)
				if [ -n "$perfpid" ]; then
					kill -INT "$perfpid" 2>/dev/null || true
					wait "$perfpid" 2>/dev/null || true
					perf report -i "$d/perf-$t.data" --stdio --no-children -g none --sort comm,dso,symbol 2>/dev/null |
						grep -E '^ +[0-9]' | head -60 >"$PERF_DIR/$setup-$esp-$t-$run.txt" || true
				fi
				el=$(awk -v a="$(cpu_ticks "${DPID[l]}")" -v b="$cl" -v t="$t1" -v s="$t0" -v hz="$HZ" 'BEGIN { printf "%.0f", (a - b) / hz / (t - s) * 100 }')
				er=$(awk -v a="$(cpu_ticks "${DPID[r]}")" -v b="$cr" -v t="$t1" -v s="$t0" -v hz="$HZ" 'BEGIN { printf "%.0f", (a - b) / hz / (t - s) * 100 }')
				kill "$sp" 2>/dev/null || true
				wait "$sp" 2>/dev/null || true
				m=$(mbps "$d/$t.json")
				[ -n "$m" ] || m=n/a
				l=$(loss "$d/$t.json")
				[ -n "$l" ] || l=n/a
				echo "$setup $esp $t $run $m $el $er $l" >>"$WORK/raw/all"
				printf '%-10s %-13s %-5s run %d: %8s Mbit/s  CPU left %s%% right %s%%  UDP loss %s%%\n' "$setup" "$esp" "$t" "$run" "$m" "$el" "$er" "$l" >&2
			done
			stop_daemons
		done
	done
done

median() { sort -g | awk '{v[NR]=$1} END {if (NR==0) {print "n/a"; exit} if (NR%2) print v[(NR+1)/2]; else printf "%.1f\n", (v[NR/2]+v[NR/2+1])/2}'; }
med() { awk -v s="$1" -v e="$2" -v t="$3" -v c="$4" '$1 == s && $2 == e && $3 == t && $c != "n/a" { print $c }' "$WORK/raw/all" | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a=="n/a" || b=="n/a" || b==0) print "n/a"; else printf "%.2f", a/b }'; }
{
	echo "# Throughput: iperf3 through one IKEv1/ESP tunnel, ikegwd vs strongSwan kernel-libipsec"
	echo
	echo "Generated by \`bench/throughput.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(cd "$REPO" && git rev-parse --short HEAD) (RUNS=$RUNS DUR=$DUR)."
	echo
	echo '```'
	echo "nproc: $(nproc)"
	echo "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1)"
	echo "kernel: $(uname -r)"
	echo "charon: $("$CHARON" --version 2>&1 | head -1 || true)$(dpkg-query -W -f ' (Debian ${Version})' strongswan-charon 2>/dev/null || true)"
	echo "iperf3: $(iperf3 --version | head -1)"
	echo "go: $(go version)"
	echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo '```'
	echo
	echo "## Setup"
	echo
	echo "- Two namespaces joined by a veth pair (10.66.0.1 left, 10.66.0.2 right); one tunnel 10.98.1.0/24 <-> 10.98.2.0/24 (10.98.1.1 and 10.98.2.1 on lo). IKEv1 Main Mode PSK, IKE $IKE, no PFS, no DPD; the left side initiates. Each setup is started fresh per ESP proposal and round; setups alternate (strongswan, ikegwd, mixed, strongswan, ...)."
	echo "- strongswan: charon on both sides, kernel-libipsec (userspace ESP on a TUN; the host kernel has no ESP), which forces UDP encapsulation (ESP in UDP 4500)."
	echo "- ikegwd: two standalone ikegwd (userspace data plane on a TUN, log level warn); the left one is told to initiate with \`ikegwctl initiate bench\`. No NAT between them."
	echo "- mixed: ikegwd left (initiator) <-> charon kernel-libipsec right (so ESP in UDP)."
	echo "- iperf3 server in the right namespace on 10.98.2.1, client in the left bound to 10.98.1.1, $DUR s per test. Mbit/s is the receiver's (TCP: sum_received; UDP: received = sent x (1 - loss)). CPU is each daemon's user+system time over the test's wall time (100% = one core). Both ends, both daemons and iperf3 share the machine's $(nproc) cores, which other work also uses: compare ratios, not absolutes."
	echo
	echo "Client commands (server: \`iperf3 -s -B 10.98.2.1 -1\`):"
	echo
	echo '```'
	for t in $TESTS; do echo "$t: iperf3 $(iperf_cmd "$t")"; done
	echo '```'
	echo
	echo "## Medians of $RUNS runs (Mbit/s; CPU % left/right)"
	echo
	echo "| ESP | test | strongswan | ikegwd | mixed | ikegwd / strongswan | CPU strongswan | CPU ikegwd | CPU mixed |"
	echo "|---|---|---|---|---|---|---|---|---|"
	for esp in $ESPS; do
		for t in $TESTS; do
			a=$(med strongswan "$esp" "$t" 5); b=$(med ikegwd "$esp" "$t" 5); c=$(med mixed "$esp" "$t" 5)
			echo "| $esp | $t | $a | $b | $c | $(ratio "$b" "$a") | $(med strongswan "$esp" "$t" 6)/$(med strongswan "$esp" "$t" 7) | $(med ikegwd "$esp" "$t" 6)/$(med ikegwd "$esp" "$t" 7) | $(med mixed "$esp" "$t" 6)/$(med mixed "$esp" "$t" 7) |"
		done
	done
	echo
	echo "## Raw runs"
	echo
	echo "UDP loss: the share of the datagrams iperf3 sent (-b 0: as fast as it can) that did not reach the server."
	echo
	echo "| setup | ESP | test | run | Mbit/s | CPU left % | CPU right % | UDP loss % |"
	echo "|---|---|---|---|---|---|---|---|"
	awk '{ printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8 }' "$WORK/raw/all"
} >"$REPORT"
echo "report written to $REPORT" >&2
