# bench/lib.sh: what every namespace benchmark starts with (sourced, not
# run): die, the root check, charon and swanctl, and two network namespaces
# NSL and NSR named from a unique ID, with a work directory, PIDS of the
# processes started, and a cleanup on exit that kills them and removes the
# namespaces (and WORK unless KEEP=1). The namespaces themselves are created
# by the sourcing script. Set ID_PREFIX (a short tag) before sourcing.
die() { echo "${0##*/}: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
CHARON=""
for p in /usr/lib/ipsec/charon /usr/libexec/ipsec/charon /usr/lib/strongswan/charon; do
	[ -x "$p" ] && CHARON=$p && break
done
command -v swanctl >/dev/null || CHARON=""
[ -n "$CHARON" ] || die "strongSwan (charon, swanctl) not installed: scripts/deps.sh installs it"

ID="${ID_PREFIX:-ikb}$$$RANDOM"
NSL="$ID-l"
NSR="$ID-r"
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
