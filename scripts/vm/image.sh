#!/usr/bin/env bash
# Prepares (idempotently) the kernel and initramfs for scripts/vm/run.sh and
# prints two lines: KERNEL=<path to vmlinuz> and INITRD=<path to initramfs>.
#
# Cache: <repo>/.cache/vm/<kernel version>/ holds the unpacked Debian kernel
# package (boot/, lib/modules/ with depmod's files), and
# initramfs-<hash>.cpio, keyed by the hash of the init script and the module
# list, so a change to either builds a new one and two concurrent runs never
# see a half-written file (everything is built in a temp dir and renamed
# into place under a lock).
#
# Environment:
#   IKEGW_VM_KERNEL   Debian kernel package (default: what linux-image-amd64
#                     depends on, e.g. linux-image-6.1.0-56-amd64)
#   IKEGW_VM_MODULES  extra modules to load at boot, space separated, in
#                     load order (dependencies are added automatically)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache="$repo/.cache/vm"
mkdir -p "$cache"

say() { echo "vm: $*" >&2; }
die() { echo "vm: ERROR: $*" >&2; exit 1; }

for tool in qemu-system-x86_64 busybox cpio depmod modprobe apt-get dpkg; do
	if ! command -v "$tool" >/dev/null 2>&1 && ! [ -x "/sbin/$tool" ] && ! [ -x "/usr/sbin/$tool" ]; then
		say "missing $tool; installing the VM packages (scripts/deps.sh kernel)"
		"$repo/scripts/deps.sh" kernel >&2
		break
	fi
done
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed' ||
	die "the initramfs needs a static busybox: install the Debian package busybox-static"
PATH=$PATH:/sbin:/usr/sbin

newest_pkg() {
	apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}'
}
pkg=${IKEGW_VM_KERNEL:-}
if [ -z "$pkg" ]; then
	pkg=$(newest_pkg)
	if [ -z "$pkg" ]; then
		say "apt-cache does not know linux-image-amd64; running apt-get update"
		apt-get update -qq >&2 || die "apt-get update failed"
		pkg=$(newest_pkg)
	fi
fi
[ -n "$pkg" ] || die "cannot find the kernel package (set IKEGW_VM_KERNEL=linux-image-<version>-amd64)"

exec 9>"$cache/.lock"
flock 9

# fetch PKG: download and unpack it into $cache/<version> unless there.
fetch() {
	local kv=${1#linux-image-} tmp
	[ -f "$cache/$kv/.done" ] && return 0
	say "fetching $1 into $cache/$kv"
	tmp=$(mktemp -d "$cache/.dl.XXXXXX")
	if ! (cd "$tmp" && apt-get download "$1" >&2); then
		rm -rf "$tmp"
		return 1
	fi
	dpkg -x "$tmp"/linux-image-*.deb "$tmp/root" && depmod -b "$tmp/root" "$kv" || {
		rm -rf "$tmp"
		die "unpacking $1 failed"
	}
	rm -rf "${cache:?}/$kv"
	mv -T "$tmp/root" "$cache/$kv"
	touch "$cache/$kv/.done"
	rm -rf "$tmp"
}
if ! fetch "$pkg"; then
	say "apt-get download $pkg failed; updating the package lists"
	apt-get update -qq >&2 || true
	if [ -n "${IKEGW_VM_KERNEL:-}" ]; then
		fetch "$pkg" || die "cannot download $pkg (IKEGW_VM_KERNEL)"
	else
		pkg=$(newest_pkg)
		if [ -z "$pkg" ] || ! fetch "$pkg"; then
			# Offline or the mirror moved on: the newest kernel already cached.
			cached=$(ls -d "$cache"/*/.done 2>/dev/null | sed 's#/.done$##' | sort -V | tail -n 1)
			[ -n "$cached" ] || die "cannot download a kernel package and none is cached in $cache"
			pkg=linux-image-$(basename "$cached")
			say "WARNING: using the cached $pkg"
		fi
	fi
fi
kver=${pkg#linux-image-}
kdir="$cache/$kver"
kernel="$kdir/boot/vmlinuz-$kver"
[ -f "$kernel" ] || die "$kernel missing from $pkg"

# Modules loaded at boot, in order. Crypto first (drbg needs aes, ctr, hmac,
# sha256, sha512 and an entropy source; without drbg every ESP state add
# fails with "unable to initialize cryptographic operations").
boot_modules="virtio_pci virtio_rng 9pnet_virtio 9p overlay
	aesni_intel ctr hmac sha256_generic sha512_generic sha1_generic cbc
	gcm ghash-generic ghash-clmulni-intel seqiv echainiv authenc authencesn
	jitterentropy_rng drbg
	xfrm_user esp4 esp6 xfrm4_tunnel xfrm6_tunnel xfrm_interface af_key
	veth tun ${IKEGW_VM_MODULES:-}"
# Also shipped (loadable on demand through /sbin/modprobe = busybox):
extra_dirs="kernel/crypto kernel/arch/x86/crypto kernel/lib kernel/net/ipv4
	kernel/net/ipv6 kernel/net/xfrm kernel/net/key kernel/net/netfilter
	kernel/net/bridge kernel/net/8021q kernel/net/llc kernel/net/802
	kernel/net/sched kernel/net/core"

key=$( (cat "$here/init" "$here/image.sh"; echo "$boot_modules") | sha256sum | cut -c1-16)
initrd="$kdir/initramfs-$key.cpio"
if [ ! -f "$initrd" ]; then
	say "building $initrd"
	tmp=$(mktemp -d "$cache/.ird.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	r="$tmp/root"
	mkdir -p "$r"/{bin,sbin,etc,proc,sys,dev,tmp,lib/modules/"$kver"}
	cp /bin/busybox "$r/bin/busybox"
	ln -s /bin/busybox "$r/sbin/modprobe"
	install -m 0755 "$here/init" "$r/init"
	: >"$r/etc/ikegw-modules"
	for m in $boot_modules; do
		out=$(modprobe -d "$kdir" -S "$kver" --show-depends "$m" 2>&1) ||
			die "module $m: $out"
		echo "$out" | awk '$1 == "insmod" {print $2}' | while read -r ko; do
			rel=${ko#"$kdir/lib/modules/$kver/"}
			mkdir -p "$r/lib/modules/$kver/$(dirname "$rel")"
			cp -n "$ko" "$r/lib/modules/$kver/$rel"
			grep -qxF "/lib/modules/$kver/$rel" "$r/etc/ikegw-modules" ||
				echo "/lib/modules/$kver/$rel" >>"$r/etc/ikegw-modules"
		done
	done
	for d in $extra_dirs; do
		[ -d "$kdir/lib/modules/$kver/$d" ] || continue
		mkdir -p "$r/lib/modules/$kver/$d"
		cp -rn "$kdir/lib/modules/$kver/$d/." "$r/lib/modules/$kver/$d/"
	done
	cp "$kdir/lib/modules/$kver"/modules.{dep,alias,builtin,softdep,symbols,order} "$r/lib/modules/$kver/"
	(cd "$r" && find . -print0 | cpio --null -o -H newc --quiet) >"$tmp/initramfs.cpio"
	mv "$tmp/initramfs.cpio" "$initrd"
	rm -rf "$tmp"
	trap - EXIT
fi
echo "KERNEL=$kernel"
echo "INITRD=$initrd"
echo "KVER=$kver"
