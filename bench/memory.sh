#!/usr/bin/env bash
# bench/memory.sh: responder memory per established tunnel. ikegw's load
# generator (cmd/ikeload) sets up TUNNELS (1000) tunnels (IKE
# aes128-sha256-ecp256, ESP aes128-sha256, NAT-T) against
#   (a) strongSwan 5.9.8 charon (kernel-libipsec), and
#   (b) a standalone ikegwd (userspace data plane),
# RUNS (3) runs each, alternating (a, b, a, b, ...). Each run starts a fresh
# responder, waits for it to settle, reads its VmRSS (/proc/PID/status),
# runs the load, waits 3 s, reads VmRSS again while the tunnels are still
# established (ikeload exits without deleting them) and divides the growth by
# the responder's established IKE SA count. Writes bench/RESULTS-memory.md.
#
# Needs root, charon + swanctl, Go, jq. Only namespaces it creates (unique
# names, removed on exit). Usage: bench/memory.sh [report.md]
set -euo pipefail

TUNNELS=${TUNNELS:-1000}
CONC=${CONC:-64}
RUNS=${RUNS:-3}
SUITES=ecp256
SETUPS=${SETUPS:-"strongswan ikegwd"}
ESP=aes128-sha256
REPO=$(cd "$(dirname "$0")/.." && pwd)
REPORT=${1:-$REPO/bench/RESULTS-memory.md}

die() { echo "memory.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
CHARON=""
for p in /usr/lib/ipsec/charon /usr/libexec/ipsec/charon /usr/lib/strongswan/charon; do
	[ -x "$p" ] && CHARON=$p && break
done
command -v swanctl >/dev/null || CHARON=""
[ -n "$CHARON" ] || die "strongSwan (charon, swanctl) not installed: scripts/deps.sh installs it"
tunnels_for() { echo "$TUNNELS"; }
MAXT=0
for suite in $SUITES; do
	case $suite in ecp256 | modp2048 | ecp384 | modp3072 | curve25519) ;; *) die "suite $suite: want ecp256, modp2048, ecp384, modp3072 or curve25519" ;; esac
	n=$(tunnels_for "$suite")
	[ "$n" -ge 1 ] && [ "$n" -le 60000 ] || die "tunnels for $suite: $n: want 1..60000"
	[ "$n" -gt "$MAXT" ] && MAXT=$n
done

ID="ikm$$$RANDOM"
NSR="$ID-r"   # responder
NSL="$ID-l"   # load generator
WORK=$(mktemp -d "/tmp/$ID.XXXX")
PIDS=()

cleanup() {
	set +e
	for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
	ip netns del "$NSR" 2>/dev/null
	ip netns del "$NSL" 2>/dev/null
	if [ "${KEEP:-}" = 1 ]; then echo "work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "building ikeload and ikegwd" >&2
(cd "$REPO" && go build -o "$WORK/ikeload" ./cmd/ikeload)
HAVE_IKEGWD=0
IKEGWD_SRC="the working tree"
build_ikegwd() { (cd "$1" && go build -o "$WORK/ikegwd" ./cmd/ikegwd && go build -o "$WORK/ikegwctl" ./cmd/ikegwctl); }
if build_ikegwd "$REPO" 2>"$WORK/ikegwd-build.log"; then
	HAVE_IKEGWD=1
elif rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null); then
	# Someone's half-done edit must not stop the benchmark: fall back to
	# the last commit.
	echo "ikegwd does not build from the working tree; trying commit $rev" >&2
	mkdir -p "$WORK/src"
	git -C "$REPO" archive HEAD | tar -x -C "$WORK/src"
	if build_ikegwd "$WORK/src" 2>>"$WORK/ikegwd-build.log"; then
		HAVE_IKEGWD=1
		IKEGWD_SRC="commit $rev (the working tree did not build)"
	fi
fi
if [ "$HAVE_IKEGWD" != 1 ]; then
	echo "ikegwd does not build; strongSwan only:" >&2
	cat "$WORK/ikegwd-build.log" >&2
fi

# Network: responder 10.77.0.1 (protected subnet 10.99.0.0/24, 10.99.0.1 on
# its lo: kernel-libipsec needs an own address in its local selector); the
# generator owns 10.78.0.1.. on lo (one source address per tunnel) behind
# 10.77.0.2 and proposes 10.200.0.0 + i as tunnel i's selector.
ip netns add "$NSR"
ip netns add "$NSL"
ip link add "$ID-a" type veth peer name "$ID-b"
ip link set "$ID-a" netns "$NSR" name eth0
ip link set "$ID-b" netns "$NSL" name eth0
for ns in "$NSR" "$NSL"; do
	ip -n "$ns" link set lo up
	ip -n "$ns" link set eth0 up
	ip netns exec "$ns" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 net.ipv4.conf.eth0.rp_filter=0
done
ip -n "$NSR" addr add 10.77.0.1/24 dev eth0
ip -n "$NSR" addr add 10.99.0.1/32 dev lo
ip -n "$NSR" route add 10.78.0.0/16 via 10.77.0.2
ip -n "$NSL" addr add 10.77.0.2/24 dev eth0
ip -n "$NSL" route add 10.99.0.0/24 via 10.77.0.1
addr() { echo "10.78.$(($1 >> 8)).$(($1 & 255))"; }
for i in $(seq 1 "$MAXT"); do echo "addr add $(addr "$i")/32 dev lo"; done | ip -n "$NSL" -batch -
local_range() { echo "$(addr 1)-$(addr "$1")"; }

PSK="bench-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf '%s\n' "$PSK" >"$WORK/psk"
chmod 600 "$WORK/psk"

proposal() { echo "aes128-sha256-$1"; }

# ---- strongSwan ----
swan_conf() { # dir suite
	local d=$1
	mkdir -p "$d/swanctl"
	for sub in x509 x509ca x509ocsp x509aa x509ac x509crl pubkey private rsa ecdsa bliss pkcs8 pkcs12 conf.d; do
		mkdir -p "$d/swanctl/$sub"
	done
	cat >"$d/strongswan.conf" <<EOF
charon {
  load_modular = no
  load = random nonce openssl aes sha1 sha2 hmac kdf drbg gmp curve25519 pem pkcs1 x509 pubkey constraints revocation kernel-libipsec kernel-netlink socket-default vici updown
  # many peers: a real hash table for IKE SAs, threads for the workers
  threads = 16
  ikesa_table_size = 4096
  ikesa_table_segments = 16
  init_limit_half_open = 0
  filelog {
    bench {
      path = $d/charon.log
      time_format = %T
      default = 0
      ike = 0
    }
  }
  syslog {
    identifier = charon-bench
    daemon {
      default = -1
    }
  }
}
EOF
	cat >"$d/swanctl/swanctl.conf" <<EOF
connections {
  bench {
    version = 1
    local_addrs = 10.77.0.1
    remote_addrs = 10.78.0.0/16
    proposals = $(proposal "$2")
    aggressive = no
    dpd_delay = 0
    local {
      auth = psk
    }
    remote {
      auth = psk
    }
    children {
      net {
        local_ts = 10.99.0.0/24
        remote_ts = 10.200.0.0/16
        esp_proposals = $ESP
      }
    }
  }
}
secrets {
  ike-bench {
    secret = "$PSK"
  }
}
EOF
	chmod -R go-rwx "$d"
}

RESP_PID=""
start_strongswan() { # dir
	local d=$1
	# Own mount namespace: a tmpfs on /run (pid file, vici socket) and the
	# instance's swanctl directory over /etc/swanctl.
	STRONGSWAN_CONF="$d/strongswan.conf" ip netns exec "$NSR" unshare --mount --propagation private \
		sh -c 'mount -t tmpfs -o mode=0755 ikb-run /run && mount --bind "$1" /etc/swanctl && exec "$2"' sh "$d/swanctl" "$CHARON" \
		>"$d/charon.out" 2>&1 &
	RESP_PID=$!
	PIDS+=("$RESP_PID")
	local i
	for i in $(seq 1 100); do
		if nsenter -t "$RESP_PID" -m -n swanctl --stats >/dev/null 2>&1; then
			nsenter -t "$RESP_PID" -m -n swanctl --load-all >"$d/load-all.out" 2>&1 || { cat "$d/load-all.out" >&2; die "swanctl --load-all failed"; }
			return 0
		fi
		kill -0 "$RESP_PID" 2>/dev/null || { cat "$d/charon.out" "$d/charon.log" >&2; die "charon exited at startup"; }
		sleep 0.1
	done
	die "charon's vici socket does not answer"
}

swan_count() { nsenter -t "$RESP_PID" -m -n swanctl --stats 2>/dev/null | sed -n 's/^IKE_SAs: \([0-9]*\) total.*/\1/p'; }

# ---- ikegwd ----
ikegwd_conf() { # dir suite
	local d=$1
	mkdir -p "$d/state"
	"$WORK/ikegwd" keygen --out "$d/cluster.key" >/dev/null
	cat >"$d/ikegwd.yaml" <<EOF
node:
  name: bench
  state_dir: $d/state
  cluster_key_file: $d/cluster.key
ike:
  listen: [10.77.0.1]
dataplane:
  kind: userspace
  tun: ikegw%d
log:
  level: warn
admin:
  socket: $d/admin.sock
connections:
  - name: bench
    local_addrs: 10.77.0.1
    remote_addrs: "%any"
    remote_id: "%any"
    psk_file: $WORK/psk
    proposals: [$(proposal "$2")]
    dpd_delay: 0s
    children:
      - name: net
        local_ts: [10.99.0.0/24]
        remote_ts: [10.200.0.0/16]
        esp_proposals: [$ESP]
EOF
	"$WORK/ikegwd" check-config "$d/ikegwd.yaml" >"$d/check.out" 2>&1 || { cat "$d/check.out" >&2; die "ikegwd check-config failed"; }
}

start_ikegwd() { # dir
	local d=$1
	ip netns exec "$NSR" "$WORK/ikegwd" run -c "$d/ikegwd.yaml" >"$d/ikegwd.log" 2>&1 &
	RESP_PID=$!
	PIDS+=("$RESP_PID")
	local i
	for i in $(seq 1 100); do
		[ -S "$d/admin.sock" ] && return 0
		kill -0 "$RESP_PID" 2>/dev/null || { cat "$d/ikegwd.log" >&2; die "ikegwd exited at startup"; }
		sleep 0.1
	done
	die "ikegwd's admin socket did not appear"
}

# resp_cpu_ms: CPU time (user + system) the responder process used so far.
resp_cpu_ms() {
	awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%d\n", ($12 + $13) * 1000 / hz }' "/proc/$RESP_PID/stat"
}

ikegwd_count() { "$WORK/ikegwctl" --socket "$1/admin.sock" status -o json 2>/dev/null | jq -r .ike_sas; }

stop_resp() {
	kill -TERM "$RESP_PID" 2>/dev/null || true
	local i
	for i in $(seq 1 50); do kill -0 "$RESP_PID" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$RESP_PID" 2>/dev/null || true
	wait "$RESP_PID" 2>/dev/null || true
	RESP_PID=""
}

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$RESP_PID/status"; }
LOCAL=$(local_range "$TUNNELS")
LOADCMD="ikeload -target 10.77.0.1 -local $LOCAL -tunnels $TUNNELS -concurrency $CONC -proposal aes128-sha256-ecp256 -esp $ESP -encap -psk-file PSKFILE -tunnel-timeout 30s -duration 120s -o json"
echo "per run, in the generator's namespace: $LOADCMD" >&2
mkdir -p "$WORK/raw"
suite=ecp256
for run in $(seq 1 "$RUNS"); do
	for setup in $SETUPS; do
		d="$WORK/$setup-$run"
		mkdir -p "$d"
		case $setup in
		strongswan) swan_conf "$d" "$suite"; start_strongswan "$d" ;;
		ikegwd) [ "$HAVE_IKEGWD" = 1 ] || continue; ikegwd_conf "$d" "$suite"; start_ikegwd "$d" ;;
		*) die "unknown setup $setup" ;;
		esac
		sleep 2
		before=$(rss_kb)
		out="$WORK/raw/$setup-$run.json"
		timeout 150 ip netns exec "$NSL" "$WORK/ikeload" -target 10.77.0.1 -local "$LOCAL" -tunnels "$TUNNELS" -concurrency "$CONC" \
			-proposal aes128-sha256-ecp256 -esp "$ESP" -encap -psk-file "$WORK/psk" -tunnel-timeout 30s -duration 120s -o json \
			>"$out" 2>"$WORK/raw/$setup-$run.err" || true
		[ -s "$out" ] || { cat "$WORK/raw/$setup-$run.err" >&2; die "ikeload produced no result ($setup run $run)"; }
		sleep 3
		after=$(rss_kb)
		if [ "$setup" = strongswan ]; then sas=$(swan_count); else sas=$(ikegwd_count "$d"); fi
		ok=$(jq -r .ok "$out")
		per=$(awk -v a="$after" -v b="$before" -v n="$sas" 'BEGIN { if (n > 0) printf "%.1f", (a - b) * 1000 / n / 1024; else print "n/a" }')
		echo "$setup $run $before $after $ok $sas $per" >>"$WORK/raw/all"
		printf '%-10s run %d: RSS before %s kB, after %s kB, ikeload ok %s, responder IKE SAs %s => %s MiB per 1000 tunnels\n' "$setup" "$run" "$before" "$after" "$ok" "$sas" "$per" >&2
		stop_resp
	done
done

median() { sort -g | awk '{v[NR]=$1} END {if (NR==0) {print "n/a"; exit} if (NR%2) print v[(NR+1)/2]; else printf "%.4g\n", (v[NR/2]+v[NR/2+1])/2}'; }
col() { awk -v s="$1" -v c="$2" '$1 == s && $c != "n/a" { print $c }' "$WORK/raw/all" | median; }
{
	echo "# Memory: responder RSS per 1,000 established tunnels"
	echo
	echo "Generated by \`bench/memory.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(cd "$REPO" && git rev-parse --short HEAD)."
	echo
	echo '```'
	echo "nproc: $(nproc)"
	echo "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1)"
	echo "kernel: $(uname -r)"
	echo "charon: $("$CHARON" --version 2>&1 | head -1 || true)$(dpkg-query -W -f ' (Debian ${Version})' strongswan-charon 2>/dev/null || true)"
	echo "go: $(go version)"
	echo '```'
	echo
	echo "## Method"
	echo
	echo "- Two namespaces joined by a veth pair; the generator owns $TUNNELS addresses on lo, one per tunnel (so $TUNNELS distinct peers, one ISAKMP SA + one IPsec SA pair each). IKE aes128-sha256-ecp256 (Main Mode, PSK), ESP $ESP, no PFS, NAT-T forced (\`-encap\`; kernel-libipsec needs it anyway)."
	echo "- (a) charon $("$CHARON" --version 2>&1 | head -1 | awk '{print $NF}') with kernel-libipsec (threads = 16, ikesa_table_size = 4096, log level 0); (b) a standalone ikegwd ($IKEGWD_SRC), userspace data plane, bbolt state under /tmp, log level warn. Same configs as bench/handshake.sh."
	echo "- Per run: fresh responder, sleep 2 s, VmRSS from /proc/PID/status; run ikeload; sleep 3 s; VmRSS again (the tunnels are still established: ikeload exits without deleting them, no DPD). MiB per 1,000 tunnels = (after - before) / established IKE SAs reported by the responder (swanctl --stats / ikegwctl status) x 1000."
	echo "- Runs alternate a, b, a, b, ...; $RUNS runs each; medians."
	echo "- Caveat: RSS is what the process holds, not what it needs: Go's heap keeps freed memory until the scavenger returns it, and glibc malloc likewise. Handshake garbage therefore counts in both."
	echo
	echo "Per-run command (generator namespace; PSKFILE is a 0600 file):"
	echo
	echo '```'
	echo "$LOADCMD"
	echo '```'
	echo
	echo "## Medians"
	echo
	echo "| responder | RSS before (kB) | RSS after (kB) | established IKE SAs | MiB per 1,000 tunnels |"
	echo "|---|---|---|---|---|"
	for setup in $SETUPS; do echo "| $setup | $(col "$setup" 3) | $(col "$setup" 4) | $(col "$setup" 6) | $(col "$setup" 7) |"; done
	echo
	echo "## Raw runs"
	echo
	echo "| responder | run | RSS before (kB) | RSS after (kB) | ikeload ok | responder IKE SAs | MiB per 1,000 tunnels |"
	echo "|---|---|---|---|---|---|---|"
	awk '{ printf "| %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7 }' "$WORK/raw/all"
} >"$REPORT"
echo "report written to $REPORT" >&2
