#!/bin/sh
# fma-check.sh: guards the bit-exactness of package ggml against fused multiply-add.
#
# Go fuses x*y+z into one FMA instruction on arm64, ppc64le, s390x, riscv64, loong64 and on
# amd64 with GOAMD64=v3/v4, which changes rounding and so the quantized bytes. The code wraps
# every product that feeds an add in float32(). This script checks that:
#   1. the golden tests pass when built with GOAMD64=v3 (needs an AVX2/FMA CPU);
#   2. no FMA instruction appears in the package's code (tests included) for any of those targets;
#   3. the arm64 test binary builds, and, when qemu-aarch64 (Debian: qemu-user) is installed,
#      its golden tests pass under emulation.
# Run from anywhere: sh libs/ggml/testdata/fma-check.sh
set -eu

pkgdir=$(cd "$(dirname "$0")/.." && pwd)
cd "$pkgdir/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0

echo "== golden tests, GOAMD64=v3"
if grep -qw fma /proc/cpuinfo 2>/dev/null; then
	GOAMD64=v3 go test -count=1 -run 'Golden' ./ggml/ || status=1
else
	echo "skipped: this CPU has no FMA"
fi

echo "== FMA instructions in package ggml"
for target in amd64:v3 arm64 ppc64le s390x riscv64 loong64; do
	goarch=${target%%:*}
	goamd64=v1
	[ "$target" = amd64:v3 ] && goamd64=v3
	bin="$tmp/ggml-$goarch.test"
	if ! GOARCH=$goarch GOAMD64=$goamd64 go test -c -o "$bin" ./ggml/; then
		echo "$target: build failed"
		status=1
		continue
	fi
	if ! go tool objdump -s '^quantfleet\.dev/libs/ggml\.' "$bin" >"$tmp/dis.txt" 2>"$tmp/dis.err"; then
		echo "$target: objdump failed: $(head -1 "$tmp/dis.err")"
		continue
	fi
	if grep -E '[[:space:]]V?FN?M(ADD|SUB)[A-Z0-9]*[[:space:]]' "$tmp/dis.txt" >"$tmp/fma.txt"; then
		echo "$target: FMA instructions found:"
		cat "$tmp/fma.txt"
		status=1
	else
		echo "$target: none in $(wc -l <"$tmp/dis.txt") instructions"
	fi
done

echo "== arm64 golden tests"
if command -v qemu-aarch64 >/dev/null 2>&1; then
	# The test binary reads testdata/ relative to the package directory.
	(cd "$pkgdir" && qemu-aarch64 "$tmp/ggml-arm64.test" -test.count=1 -test.run 'Golden') || status=1
else
	echo "skipped: qemu-aarch64 not installed (compile-only check above)"
fi

[ $status -eq 0 ] && echo "fma-check: OK" || echo "fma-check: FAILED"
exit $status
