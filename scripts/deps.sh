#!/usr/bin/env bash
# Installs what ikegw's build, tests and lab need on Debian 12, idempotently.
# Usage: scripts/deps.sh [test|run|bench|kernel]...  (default: test)
set -euo pipefail

want=(iproute2 nftables iputils-ping tcpdump procps psmisc
      strongswan-charon strongswan-swanctl libcharon-extra-plugins
      libstrongswan-extra-plugins libstrongswan-standard-plugins)
for what in "${@:-test}"; do
  case "$what" in
    kernel) want+=(qemu-system-x86 busybox-static cpio kmod) ;;
    bench) want+=(iperf3 hyperfine jq iptables) ;;  # iptables: CLUSTERIP for bench/hacompare.sh
  esac
done

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing Debian packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Go tools, pinned.
gobin=$(go env GOPATH)/bin
if ! "$gobin/staticcheck" -version 2>/dev/null | grep -q '0.8.2'; then
  echo "deps: installing staticcheck 0.8.2"
  GOFLAGS= go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi
