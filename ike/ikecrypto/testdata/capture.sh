#!/usr/bin/env bash
# Reproduces the strongSwan key-derivation logs in this directory: two
# strongSwan 5.9.8 (Debian 12) instances in their own network and mount
# namespaces run IKEv1 Main Mode with a PSK plus one Quick Mode, charon
# logging its key material (ike=4 enc=3 chd=4: DH secret, SKEYID*, encryption key,
# IVs, nonces, Quick Mode keys). The logs of both sides (gzipped: the ENC
# parser traces make them ~200 KB each) and the pcap go to <run>/. The tests
# in ../kdf_strongswan_test.go read the logs only.
#
# Not run by the tests. Needs root, strongSwan (scripts/deps.sh installs
# it) and tcpdump.
#
#   ike/ikecrypto/testdata/capture.sh              # all runs
#   ike/ikecrypto/testdata/capture.sh mm-aes256-sha1
#
# Runs (chosen to exercise what the other captures do not):
#   mm-aes256-sha1  aes256-sha1-modp2048: SHA1 gives a 20-byte SKEYID_e, so
#                   the 32-byte key needs the RFC 2409 Appendix B expansion;
#                   ESP aes256-sha256-modp2048 (PFS: g(qm)^xy in KEYMAT).
#   mm-3des-sha1    3des-sha1-modp1024 (legacy; 24-byte key from a 20-byte
#                   SKEYID_e, 8-byte IVs), ESP aes128-sha1 without PFS.
#   mm-aes128-sha384-ecp256   ECP KE values (x | y) and secrets (x), SHA2-384
#                   PRF; ESP aes128-sha256-ecp256 (PFS with an ECP secret).
#   mm-aes256-sha384-ecp384   ECP-384; ESP aes256-sha384, no PFS.
#   mm-aes192-sha512-ecp521   ECP-521 (66-byte coordinates), SHA2-512 PRF,
#                   AES-192; ESP aes256-sha512, no PFS.
#   mm-aes256-sha256-x25519   Curve25519 (RFC 8031); ESP
#                   aes256-sha256-curve25519 (PFS).
#
# The PSK is a published test value, never used anywhere else.
set -euo pipefail

PSK='ikegw-ikecrypto-test-psk'
here=$(cd "$(dirname "$0")" && pwd)
runs=("$@")
[ ${#runs[@]} -gt 0 ] || runs=(mm-aes256-sha1 mm-3des-sha1 mm-aes128-sha384-ecp256 mm-aes256-sha384-ecp384 mm-aes192-sha512-ecp521 mm-aes256-sha256-x25519)

sfx=$(head -c3 /dev/urandom | od -An -tx1 | tr -d ' \n')
nsA=ikcA-$sfx nsB=ikcB-$sfx vA=vcA$sfx vB=vcB$sfx
work=$(mktemp -d /tmp/ikecrypto-capture.XXXXXX)
pids=()

cleanup() {
	set +e
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	sleep 0.5
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
	pids=()
	ip netns pids "$nsA" 2>/dev/null | xargs -r kill -9 2>/dev/null
	ip netns pids "$nsB" 2>/dev/null | xargs -r kill -9 2>/dev/null
	ip netns del "$nsA" 2>/dev/null
	ip netns del "$nsB" 2>/dev/null
}
trap 'cleanup; rm -rf "$work"' EXIT

write_conf() { # dir local remote local_ts remote_ts ike esp
	local dir=$1
	mkdir -p "$dir/swanctl"
	cat >"$dir/strongswan.conf" <<EOF
charon {
	load = random nonce openssl aes des sha1 sha2 hmac gmp curve25519 kdf pem pkcs1 pubkey x509 revocation constraints kernel-libipsec kernel-netlink socket-default vici updown
	install_routes = no
	filelog {
		charon {
			path = $dir/charon.log
			append = no
			flush_line = yes
			time_format = %T
			default = 1
			ike = 4
			enc = 3
			chd = 4
			cfg = 2
		}
	}
}
EOF
	cat >"$dir/swanctl/swanctl.conf" <<EOF
connections {
	kat {
		version = 1
		local_addrs = $2
		remote_addrs = $3
		proposals = $6
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
	ike-kat {
		secret = "$PSK"
	}
}
EOF
}

# start_charon ns dir: prints the PID of charon (inside the namespaces).
start_charon() {
	ip netns exec "$1" unshare -m sh -c "
		mount -t tmpfs tmpfs /run &&
		mount --bind '$2/swanctl' /etc/swanctl &&
		STRONGSWAN_CONF='$2/strongswan.conf' exec /usr/lib/ipsec/charon" \
		>"$2/charon.stdout" 2>&1 &
	local sh=$!
	pids+=("$sh")
	for _ in $(seq 50); do
		# unshare execs sh which execs charon: same PID as $sh.
		if nsenter -t "$sh" -m -n test -S /run/charon.vici 2>/dev/null; then
			echo "$sh"
			return
		fi
		sleep 0.2
	done
	echo "charon in $1 did not start" >&2
	return 1
}

one_run() { # name ike esp
	local name=$1 ike=$2 esp=$3
	echo "capture: $name ($ike / $esp)"
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
	write_conf "$dA" 192.0.2.1 192.0.2.2 10.1.0.1/32 10.2.0.1/32 "$ike" "$esp"
	write_conf "$dB" 192.0.2.2 192.0.2.1 10.2.0.1/32 10.1.0.1/32 "$ike" "$esp"

	ip netns exec "$nsA" tcpdump -i "$vA" -U -s 0 -w "$work/$name/capture.pcap" 'udp port 500 or udp port 4500' \
		>"$work/$name/tcpdump.log" 2>&1 &
	pids+=($!)
	local pA pB
	pA=$(start_charon "$nsA" "$dA")
	pB=$(start_charon "$nsB" "$dB")
	nsenter -t "$pA" -m -n swanctl --load-all >/dev/null
	nsenter -t "$pB" -m -n swanctl --load-all >/dev/null
	sleep 1
	nsenter -t "$pA" -m -n swanctl --initiate --child net --timeout 30 >"$work/$name/initiate.log" 2>&1
	nsenter -t "$pA" -m -n swanctl --list-sas --raw >"$work/$name/list-sas.txt" 2>&1 || true
	nsenter -t "$pA" -m -n swanctl --terminate --ike kat --timeout 10 >/dev/null 2>&1 || true
	sleep 1
	cleanup

	local out=$here/$name
	rm -rf "$out"
	mkdir -p "$out"
	cp "$work/$name/capture.pcap" "$work/$name/list-sas.txt" "$out/"
	for r in initiator responder; do
		sed "s#$work/$name/$r/##g" "$work/$name/$r/charon.log" | gzip -9n >"$out/$r.log.gz"
	done
	cp "$dA/swanctl/swanctl.conf" "$out/initiator-swanctl.conf"
	echo "$PSK" >"$out/psk.txt"
}

for r in "${runs[@]}"; do
	case $r in
	mm-aes256-sha1) one_run mm-aes256-sha1 aes256-sha1-modp2048 aes256-sha256-modp2048 ;;
	mm-3des-sha1) one_run mm-3des-sha1 3des-sha1-modp1024 aes128-sha1 ;;
	mm-aes128-sha384-ecp256) one_run "$r" aes128-sha384-ecp256 aes128-sha256-ecp256 ;;
	mm-aes256-sha384-ecp384) one_run "$r" aes256-sha384-ecp384 aes256-sha384 ;;
	mm-aes192-sha512-ecp521) one_run "$r" aes192-sha512-ecp521 aes256-sha512 ;;
	mm-aes256-sha256-x25519) one_run "$r" aes256-sha256-curve25519 aes256-sha256-curve25519 ;;
	*) echo "unknown run $r" >&2; exit 2 ;;
	esac
done
