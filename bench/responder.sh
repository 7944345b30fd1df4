# bench/responder.sh: the set-up shared by bench/handshake.sh and
# bench/memory.sh (sourced, not run): checks (root, strongSwan), two
# network namespaces (responder NSR 10.77.0.1, load generator NSL with one
# source address per tunnel), ikeload and ikegwd builds (from the last
# commit when the working tree does not build), cleanup on exit, and the
# functions that start and stop a strongSwan or ikegwd responder.
#
# The sourcing script sets before: SUITES, SETUPS, TUNNELS (and optionally
# TUNNELS_<suite>), CONC, ESP, REPO, and ID_PREFIX (a short tag for the
# namespace names).
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
tunnels_for() { eval "echo \${TUNNELS_$1:-$TUNNELS}"; }
MAXT=0
for suite in $SUITES; do
	case $suite in ecp256 | modp2048 | ecp384 | modp3072 | curve25519) ;; *) die "suite $suite: want ecp256, modp2048, ecp384, modp3072 or curve25519" ;; esac
	n=$(tunnels_for "$suite")
	[ "$n" -ge 1 ] && [ "$n" -le 60000 ] || die "tunnels for $suite: $n: want 1..60000"
	[ "$n" -gt "$MAXT" ] && MAXT=$n
done

# NSR: the responder; NSL: the load generator.

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
