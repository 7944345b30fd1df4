#!/usr/bin/env bash
# Reproduces the golden IKEv1 captures in this directory: two strongSwan
# (5.9.8, Debian 12) instances in network namespaces negotiate IKEv1 with a
# PSK, tcpdump records the exchange, and every ISAKMP message is written to
# <run>-NN-<i|r>.bin (NN = order on the wire, i/r = sent by the
# initiator/responder, the 4-byte non-ESP marker of port 4500 stripped).
# The pcap, both configurations and the initiator's and responder's charon
# logs (ike=4 enc=4: DH secret, SKEYID*, keys and IVs) go to <run>/.
#
# Not run by the tests (they only read its output). Needs root, strongSwan
# (scripts/deps.sh installs it), tcpdump and python3.
#
#   ike/isakmp/testdata/capture.sh            # all runs
#   ike/isakmp/testdata/capture.sh mm-aes256  # one run
#
# Runs:
#   mm-aes256  Main Mode aes256-sha256-modp2048, ESP aes256-sha256 (no PFS)
#   mm-aes128  Main Mode aes128-sha1-modp2048, ESP aes128-sha1-modp2048 (PFS)
#   am-aes256  Aggressive Mode aes256-sha256-modp2048, ESP aes256-sha256
#   mm-dpd     as mm-aes256, but the initiator has dpd_delay = 2s and the
#              tunnel idles 3.5 s: one or two R-U-THERE / R-U-THERE-ACK exchanges
#
# ike/ikecrypto's known-answer tests read the mm-aes256, mm-aes128 and
# am-aes256 logs and expect their exact message sequence: keep those runs
# as they are.
#
# The PSK is a published test value, never used anywhere else.
#
# After a new capture, refresh the decrypted bodies (fuzz seeds, and the
# check that logs and packets match):
#   go test ./ike/isakmp -run Decrypted -update
set -euo pipefail

PSK='ikegw-golden-test-psk'
here=$(cd "$(dirname "$0")" && pwd)
runs=("$@")
[ ${#runs[@]} -gt 0 ] || runs=(mm-aes256 mm-aes128 am-aes256 mm-dpd)

sfx=$(head -c3 /dev/urandom | od -An -tx1 | tr -d ' \n')
nsA=ikgA-$sfx nsB=ikgB-$sfx vA=vgA$sfx vB=vgB$sfx
work=$(mktemp -d /tmp/ikegw-capture.XXXXXX)
pids=()

cleanup() {
	set +e
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	sleep 0.5
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
	pids=()
	ip netns del "$nsA" 2>/dev/null
	ip netns del "$nsB" 2>/dev/null
}
trap 'cleanup; rm -rf "$work"' EXIT

# strongswan.conf for one instance: explicit plugin list (no
# /etc/strongswan.d), kernel-libipsec for ESP (host kernel has none), debug
# log with key material.
write_strongswan_conf() { # dir aggressive_override
	local dir=$1 am=$2
	cat >"$dir/strongswan.conf" <<EOF
charon {
	load = random nonce openssl aes sha1 sha2 md5 hmac gmp kdf pem pkcs1 pubkey x509 revocation constraints kernel-libipsec kernel-netlink socket-default vici updown
	install_routes = no
	i_dont_care_about_security_and_use_aggressive_mode_psk = $am
	filelog {
		charon {
			path = $dir/charon.log
			append = no
			flush_line = yes
			time_format = %T
			default = 1
			ike = 4
			enc = 4
			cfg = 2
			knl = 1
			chd = 4
		}
	}
}
EOF
}

write_swanctl_conf() { # dir local remote local_ts remote_ts ike esp aggressive dpd_delay
	local dir=$1
	mkdir -p "$dir/swanctl"
	cat >"$dir/swanctl/swanctl.conf" <<EOF
connections {
	golden {
		version = 1
		aggressive = $8
		local_addrs = $2
		remote_addrs = $3
		proposals = $6
		dpd_delay = $9
		local {
			auth = psk
			id = $2
		}
		remote {
			auth = psk
			id = $3
		}
		children {
			net {
				local_ts = $4
				remote_ts = $5
				esp_proposals = $7
			}
		}
	}
}
secrets {
	ike-golden {
		secret = "$PSK"
	}
}
EOF
}

# Starts charon in namespace $1 with config dir $2, in its own mount
# namespace (tmpfs /run, $2/swanctl over /etc/swanctl). ip netns exec,
# unshare and sh all exec, so $! ends up being charon itself.
start_charon() { # ns dir
	ip netns exec "$1" unshare -m sh -c "
		mount -t tmpfs tmpfs /run &&
		mount --bind '$2/swanctl' /etc/swanctl &&
		STRONGSWAN_CONF='$2/strongswan.conf' exec /usr/lib/ipsec/charon" \
		>"$2/charon.stdout" 2>&1 &
	pids+=($!)
	charon_pid=$!
	for _ in $(seq 50); do
		if nsenter -t "$charon_pid" -m -n test -S /run/charon.vici 2>/dev/null; then
			return
		fi
		sleep 0.2
	done
	echo "charon in $1 did not start" >&2
	return 1
}

one_run() { # name ike esp aggressive dpd_delay
	local name=$1 ike=$2 esp=$3 am=$4 dpd=${5:-0s}
	local out=$here/$name
	echo "capture: $name ($ike / $esp, aggressive=$am)"
	ip netns add "$nsA"
	ip netns add "$nsB"
	ip link add "$vA" netns "$nsA" type veth peer name "$vB" netns "$nsB"
	ip -n "$nsA" addr add 192.0.2.1/24 dev "$vA"
	ip -n "$nsB" addr add 192.0.2.2/24 dev "$vB"
	ip -n "$nsA" addr add 10.1.0.1/32 dev lo
	ip -n "$nsB" addr add 10.2.0.1/32 dev lo
	for ns in "$nsA" "$nsB"; do ip -n "$ns" link set lo up; done
	ip -n "$nsA" link set "$vA" up
	ip -n "$nsB" link set "$vB" up

	local dA=$work/$name/initiator dB=$work/$name/responder
	mkdir -p "$dA" "$dB"
	write_strongswan_conf "$dA" no
	write_strongswan_conf "$dB" "$am"
	write_swanctl_conf "$dA" 192.0.2.1 192.0.2.2 10.1.0.1/32 10.2.0.1/32 "$ike" "$esp" "$am" "$dpd"
	write_swanctl_conf "$dB" 192.0.2.2 192.0.2.1 10.2.0.1/32 10.1.0.1/32 "$ike" "$esp" "$am" 0s

	ip netns exec "$nsA" tcpdump -i "$vA" -U -s 0 -w "$work/$name/capture.pcap" 'udp port 500 or udp port 4500' \
		>"$work/$name/tcpdump.log" 2>&1 &
	pids+=($!)
	local pA pB
	start_charon "$nsA" "$dA"
	pA=$charon_pid
	start_charon "$nsB" "$dB"
	pB=$charon_pid
	nsenter -t "$pA" -m -n swanctl --load-all >/dev/null
	nsenter -t "$pB" -m -n swanctl --load-all >/dev/null
	sleep 1 # tcpdump is listening by now
	nsenter -t "$pA" -m -n swanctl --initiate --child net --timeout 30 >"$work/$name/initiate.log" 2>&1
	nsenter -t "$pA" -m -n swanctl --list-sas --raw >"$work/$name/list-sas.txt" 2>&1 || true
	if [ "$dpd" != 0s ]; then
		# Idle long enough for one DPD R-U-THERE / R-U-THERE-ACK exchange.
		sleep 3.5
	fi
	# Delete the IKE SA cleanly: adds the encrypted Informational DELETEs.
	nsenter -t "$pA" -m -n swanctl --terminate --ike golden --timeout 10 >/dev/null 2>&1 || true
	sleep 1
	cleanup

	rm -rf "$out"
	mkdir -p "$out/initiator" "$out/responder"
	cp "$work/$name/capture.pcap" "$work/$name/list-sas.txt" "$out/"
	for r in initiator responder; do
		cp "$work/$name/$r/charon.log" "$work/$name/$r/strongswan.conf" "$work/$name/$r/swanctl/swanctl.conf" "$out/$r/"
		# Paths of the temporary directory are not useful in the copies.
		sed -i "s#$work/$name/$r/##g" "$out/$r/strongswan.conf"
	done
	echo "$PSK" >"$out/psk.txt"
	rm -f "$here/$name"-*.bin
	python3 - "$out/capture.pcap" "$here/$name" <<'EOF'
import struct, sys
pcap, prefix = sys.argv[1], sys.argv[2]
data = open(pcap, 'rb').read()
magic = struct.unpack('<I', data[:4])[0]
assert magic == 0xa1b2c3d4, hex(magic)
linktype = struct.unpack('<I', data[20:24])[0]
assert linktype == 1, linktype  # Ethernet
off, n = 24, 0
while off + 16 <= len(data):
    _, _, incl, _ = struct.unpack('<IIII', data[off:off+16])
    pkt = data[off+16:off+16+incl]
    off += 16 + incl
    if struct.unpack('>H', pkt[12:14])[0] != 0x0800:
        continue
    ip = pkt[14:]
    ihl = (ip[0] & 0xf) * 4
    if ip[9] != 17:
        continue
    src = '.'.join(str(c) for c in ip[12:16])
    udp = ip[ihl:]
    sport, dport = struct.unpack('>HH', udp[:4])
    payload = udp[8:]
    if 4500 in (sport, dport):
        if payload[:4] != b'\0\0\0\0':
            continue  # ESP in UDP
        payload = payload[4:]
    if len(payload) == 1 and payload[0] == 0xff:
        continue  # NAT-T keepalive
    n += 1
    who = 'i' if src == '192.0.2.1' else 'r'
    open('%s-%02d-%s.bin' % (prefix, n, who), 'wb').write(payload)
print('capture: %d ISAKMP messages' % n)
EOF
}

for r in "${runs[@]}"; do
	case $r in
	mm-aes256) one_run mm-aes256 aes256-sha256-modp2048 aes256-sha256 no ;;
	mm-aes128) one_run mm-aes128 aes128-sha1-modp2048 aes128-sha1-modp2048 no ;;
	am-aes256) one_run am-aes256 aes256-sha256-modp2048 aes256-sha256 yes ;;
	mm-dpd) one_run mm-dpd aes256-sha256-modp2048 aes256-sha256 no 2s ;;
	*) echo "unknown run $r" >&2; exit 2 ;;
	esac
done
