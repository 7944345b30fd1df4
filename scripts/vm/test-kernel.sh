#!/usr/bin/env bash
# Usage: scripts/vm/test-kernel.sh [go test binary flags...]
#
# Builds the xfrm/kernel test binary on the host and runs it as root in the
# VM (scripts/vm/run.sh), where the kernel has ESP and IKEGW_IN_VM=1 makes a
# missing ESP a failure instead of a skip. Default flags: -test.v
# -test.count=1 -test.timeout=5m. Benchmarks, for example:
#   scripts/vm/test-kernel.sh -test.run '^$' -test.bench Install -test.benchtime 1x
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"
mkdir -p .cache/vm/bin
# One binary per run, so concurrent runs never replace a running binary.
bin=$(mktemp "$repo/.cache/vm/bin/xfrm-kernel.XXXXXX.test")
trap 'rm -f "$bin"' EXIT
echo "test-kernel: go test -c -o $bin ./xfrm/kernel/"
go test -c -o "$bin" ./xfrm/kernel/
args=("$@")
if [ ${#args[@]} -eq 0 ]; then
	args=(-test.v -test.count=1 -test.timeout=5m)
fi
cd xfrm/kernel
export IKEGW_VM_TIMEOUT=${IKEGW_VM_TIMEOUT:-420}
"$here/run.sh" "$bin" "${args[@]}"
