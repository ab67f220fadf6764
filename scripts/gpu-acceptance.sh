#!/usr/bin/env bash
# gpu-acceptance.sh — issue 11's GPU checks on a GPU machine, in parts that each fit a
# 10-minute command. Run from the repository root with the binaries of `make build test-gpu`
# (bin/quantfleet, bin/genmodel, bin/gpu-tests/*.test) carried over:
#
#   OUT=/tmp/acc scripts/gpu-acceptance.sh tests     # the GPU test binaries but AWQ's (~5 min)
#   OUT=/tmp/acc scripts/gpu-acceptance.sh awq       # AWQ's GPU tests (llamacuda, cli)
#   OUT=/tmp/acc scripts/gpu-acceptance.sh bench     # scripts/bench-gpu.sh (~8 min)
#   OUT=/tmp/acc scripts/gpu-acceptance.sh quality   # the quality protocol with --device cuda
#   OUT=/tmp/acc scripts/gpu-acceptance.sh errors    # bad input: no GPU, broken NVRTC/cuBLAS, OOM
#
# The binaries exceed what a device call carries (64 MiB): `scripts/gpu-acceptance.sh pack` (here,
# after `make build test-gpu`) writes them xz-compressed to $CARRY (default .devcarry/gpu3, ignored
# by git, ~25 MB); on the device machine every part unpacks what bin/ lacks from there.
#
# Environment: QUANTFLEET_TINY_LLAMA (tiny-llama's directory), QUANTFLEET_CALIB (calib.txt;
# eval.txt beside it), REF_GPTQ_SRC and REF_AWQ_SRC (bench, quality). Every part writes its logs
# under $OUT and ends with the PASS/FAIL lines it found.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
CARRY=${CARRY:-.devcarry/gpu3}
BINS="quantfleet genmodel worker gpu-tests/cuda.test gpu-tests/device.test gpu-tests/gptqcuda.test gpu-tests/llamacuda.test gpu-tests/cli.test"
if [ "${1:-}" = pack ]; then
	mkdir -p "$CARRY/gpu-tests"
	for b in $BINS; do xz -T0 -6 -c "bin/$b" >"$CARRY/$b.xz" || exit 1; done
	du -sh "$CARRY"
	exit 0
fi
for b in $BINS; do
	if [ ! -x "bin/$b" ] && [ -f "$CARRY/$b.xz" ]; then
		mkdir -p "$(dirname "bin/$b")"
		xz -dc "$CARRY/$b.xz" >"bin/$b" && chmod +x "bin/$b"
	fi
done
OUT=${OUT:-$(mktemp -d /tmp/gpu-acceptance.XXXXXX)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PART=${1:-tests}
TINY=${QUANTFLEET_TINY_LLAMA:-../shared/models/tiny-llama}
CALIB=${QUANTFLEET_CALIB:-../shared/data/calib.txt}
EVAL=${QUANTFLEET_EVAL:-$(dirname "$CALIB")/eval.txt}
export QUANTFLEET_TINY_LLAMA=$TINY QUANTFLEET_CALIB=$CALIB QUANTFLEET_EVAL=$EVAL
T=bin/gpu-tests
QF=bin/quantfleet

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "nvidia-smi: none"

# The CUDA libraries: libs/cuda looks in the usual places and in pip's nvidia wheels; if the
# driver check still fails, put the wheels' lib directories on LD_LIBRARY_PATH and retry.
if ! timeout 60 "$T/device.test" -test.run TestSelectGPU -test.v >"$OUT/device-probe.log" 2>&1 ||
	grep -q "not available\|no CUDA device" "$OUT/device-probe.log"; then
	LD_LIBRARY_PATH=$(ls -d /opt/*/.venv/lib/python3*/site-packages/nvidia/*/lib /usr/local/lib/python3*/dist-packages/nvidia/*/lib 2>/dev/null | paste -sd:)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
	export LD_LIBRARY_PATH
	echo "retrying with LD_LIBRARY_PATH=$LD_LIBRARY_PATH" | tee -a "$OUT/device-probe.log"
	timeout 60 "$T/device.test" -test.run TestSelectGPU -test.v >>"$OUT/device-probe.log" 2>&1
fi
grep -E "PASS|FAIL|SKIP" "$OUT/device-probe.log" | head -5

summary() { grep -hE "^\s*(--- )?(PASS|FAIL)|[^a-z](PASS|FAIL) " "$@" | sed -E 's/^\s+//' | sort | uniq -c | sort -rn | head -80; }

run() { # log[:binary] timeout args...: $T/binary.test (binary defaults to log) into $OUT/log.log
	local name=${1%%:*} bin=${1#*:}
	local to=$2
	shift 2
	echo "== $name"
	timeout "$to" "$T/$bin.test" -test.v "$@" >"$OUT/$name.log" 2>&1
	echo "   exit $? ($(grep -c '^--- PASS' "$OUT/$name.log") passed, $(grep -c '^--- FAIL' "$OUT/$name.log") failed, $(grep -c '^--- SKIP' "$OUT/$name.log") skipped)"
}

case $PART in
tests)
	run cuda 60
	run device 60
	run gptqcuda 200 -test.timeout 3m
	run llamacuda 420 -test.timeout 7m -test.skip 'AWQ'
	run cli 240 -test.timeout 4m -test.run 'TestDevice' -test.skip 'AWQ'
	grep -hE "^\s+\S+\.go:[0-9]+: (PASS|FAIL)|^--- FAIL" "$OUT"/*.log | sed -E 's/^\s+//'
	grep -h "Llama-3-8B layer\|TF32 projections\|eval .*perplexity\|quantize --device\|quantize tiny-llama" "$OUT"/llamacuda.log "$OUT"/cli.log | sed -E 's/^\s+//'
	;;
awq)
	run llamacuda-awq:llamacuda 420 -test.timeout 7m -test.run 'AWQ'
	run cli-awq:cli 150 -test.timeout 150s -test.run 'TestDeviceCUDAAWQ'
	grep -hE "^\s+\S+\.go:[0-9]+: (PASS|FAIL)|^--- FAIL" "$OUT"/llamacuda-awq.log "$OUT"/cli-awq.log | sed -E 's/^\s+//'
	grep -h "AWQ .*GPU\|awq --device\|quantize tiny-llama AWQ\|eval awq" "$OUT"/llamacuda-awq.log "$OUT"/cli-awq.log | sed -E 's/^\s+//'
	;;
bench)
	REF_GPTQ_SRC=${REF_GPTQ_SRC:-} REF_AWQ_SRC=${REF_AWQ_SRC:-} OUT=$OUT/bench timeout 590 scripts/bench-gpu.sh
	;;
quality)
	# Every mode, 3 calibration draws (5 take longer than one command), quantize and eval on the GPU.
	SHARED_DIR=$(mktemp -d /tmp/qshared.XXXXXX)
	mkdir -p "$SHARED_DIR/models" "$SHARED_DIR/data"
	ln -s "$(cd "$TINY" && pwd)" "$SHARED_DIR/models/tiny-llama"
	ln -s "$(cd "$(dirname "$CALIB")" && pwd)/$(basename "$CALIB")" "$SHARED_DIR/data/calib.txt"
	ln -s "$(cd "$(dirname "$EVAL")" && pwd)/$(basename "$EVAL")" "$SHARED_DIR/data/eval.txt"
	SHARED=$SHARED_DIR QF=$QF DEVICE=cuda OURS_ONLY=1 DRAWS=${DRAWS:-0,1,2} JOBS=${JOBS:-4} THREADS=${THREADS:-4} \
		timeout 590 bash scripts/quality.sh "$OUT/quality" >"$OUT/quality.log" 2>&1
	echo "exit $?"
	cat "$OUT/quality/results.jsonl" 2>/dev/null
	cat "$OUT/quality/quality.md" 2>/dev/null
	;;
errors)
	m=$TINY
	w=$OUT/errors
	mkdir -p "$w"
	check() { # name expected-exit cmd...
		local name=$1 want=$2
		shift 2
		local err
		err=$("$@" 2>&1 >/dev/null)
		local rc=$?
		local lines
		lines=$(printf '%s' "$err" | grep -c .)
		if [ "$rc" = "$want" ] && [ "$lines" -le 1 ]; then echo "PASS $name: exit $rc: $err"; else echo "FAIL $name: exit $rc (want $want), $lines lines: $err"; fi
	}
	q=(quantize --model "$m" --format gptq --level 4bit --calibration-data "$CALIB" --calibration-samples 8 --seqlen 128 --output-dir "$w" --verbosity quiet)
	# No GPU: the driver hidden (a directory without libcuda first on the path does not hide it: use
	# CUDA_VISIBLE_DEVICES, which leaves no device).
	check "no GPU (CUDA_VISIBLE_DEVICES=)" 2 env CUDA_VISIBLE_DEVICES= "$QF" "${q[@]}" --output-name nogpu --device cuda
	# A missing or broken NVRTC / cuBLAS: an unloadable file of its name in the directory searched
	# first ($QUANTFLEET_CUDA_LIB_DIR) stands for it.
	for lib in libnvrtc.so.13 libcublas.so.13; do
		d=$(mktemp -d)
		: >"$d/$lib"
		check "broken ${lib%%.so*}" 2 env QUANTFLEET_CUDA_LIB_DIR="$d" "$QF" "${q[@]}" --output-name nolib --device cuda
	done
	# Out of memory: one layer whose down_proj solve alone (98304 columns: ~200 GB) exceeds any
	# card, refused before it starts.
	big=$OUT/oom-model
	[ -f "$big/config.json" ] || bin/genmodel --out "$big" --tokenizer "$m" --hidden 8192 --layers 1 --heads 64 --kv-heads 8 \
		--intermediate 98304 --vocab 8192 2>"$OUT/oom-genmodel.log"
	check "out of memory" 1 "$QF" "${q[@]/$m/$big}" --output-name oom --device cuda
	left=$(ls -A "$w")
	if [ -z "$left" ]; then echo "PASS nothing at the output path"; else echo "FAIL left at the output path: $left"; fi
	;;
*)
	echo "usage: scripts/gpu-acceptance.sh pack|tests|awq|bench|quality|errors" >&2
	exit 2
	;;
esac
