#!/usr/bin/env bash
# The GPTQ/AWQ quality protocol: every mode quantized with K distinct calibration draws of
# 128 samples × 512 tokens from calib.txt (draw k = samples 128k..128k+127, --calibration-offset),
# group 128, asymmetric; each checkpoint evaluated as written on eval.txt (400 windows of 512
# tokens); mean ± standard deviation of the perplexity per mode. With REF_GPTQ_SRC and REF_AWQ_SRC
# (checkouts of IST-DASLab/gptq and mit-han-lab/llm-awq, kept outside this repository) and a
# python3 with torch + transformers, the same draws also go through the reference
# (scripts/reference/quality_ref.py) and the table puts both side by side with the bar:
# our mean ≤ the reference's mean + 0.2 %.
#
# usage: scripts/quality.sh [OUT_DIR]      (from the repository root)
# Environment: SHARED (default ../shared), QF (default: make build; bin/quantfleet),
#   MODES (default rtn4,rtn3,gptq4,gptq4-act,gptq3,gptq3-act,awq4), DRAWS (default 0,1,2,3,4),
#   JOBS (parallel quantfleet runs, default 1), THREADS (GOMAXPROCS per run, default: all cores / JOBS),
#   REF_ONLY=1 (only the reference), OURS_ONLY=1 (only quantfleet),
#   DEVICE (quantfleet's --device for quantize and eval, default cpu; DEVICE=cuda: the protocol on
#   the GPU, recorded in each result line).
# Runs take about 3 minutes (GPTQ) to 8 minutes (AWQ) each on 2 cores; on 16 cores with JOBS=6
# the whole protocol takes about 10 minutes. Results: OUT_DIR/results.jsonl, OUT_DIR/quality.md.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
OUT=${1:-$(mktemp -d /tmp/quality.XXXXXX)}
MODES=${MODES:-rtn4,rtn3,gptq4,gptq4-act,gptq3,gptq3-act,awq4}
DRAWS=${DRAWS:-0,1,2,3,4}
JOBS=${JOBS:-1}
DEVICE=${DEVICE:-cpu}
THREADS=${THREADS:-$(( ($(nproc) + JOBS - 1) / JOBS ))}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
if [ -z "${QF:-}" ]; then
	make build >/dev/null
	QF=bin/quantfleet
fi
QF=$(cd "$(dirname "$QF")" && pwd)/$(basename "$QF")
MODEL=$SHARED/models/tiny-llama

# one_run MODE DRAW: quantize and evaluate; appends one JSON line to results.jsonl.
one_run() {
	local mode=$1 k=$2 name args
	local first=$((k * 128))
	name=$mode-d$k
	case $mode in
	rtn*) args=(--format gptq --level "${mode#rtn}bit" --group-size 128 --sym=false --rtn) ;;
	gptq*) args=(--format gptq --level "$(echo "$mode" | tr -dc 0-9)bit" --group-size 128 --sym=false) ;;
	awq*) args=(--format awq --level "${mode#awq}bit" --group-size 128) ;;
	*) echo "unknown mode $mode" >&2; return 1 ;;
	esac
	[[ $mode == *-act ]] && args+=(--act-order)
	[[ $mode != rtn* ]] && args+=(--calibration-data "$SHARED/data/calib.txt" --calibration-samples 128 --seqlen 512 --calibration-offset "$first")
	local t0 t1 t2 ppl
	t0=$(date +%s.%N)
	GOMAXPROCS=$THREADS "$QF" quantize --model "$MODEL" "${args[@]}" --output-dir "$OUT" --output-name "$name" --device "$DEVICE" --verbosity quiet --json >"$OUT/$name.quantize.json"
	t1=$(date +%s.%N)
	ppl=$(GOMAXPROCS=$THREADS "$QF" eval --model "$OUT/$name" --data "$SHARED/data/eval.txt" --ctx 512 --windows 400 --device "$DEVICE" --verbosity quiet --json |
		tail -n 1 | sed -E 's/.*"perplexity":([0-9.eE+-]+).*/\1/')
	t2=$(date +%s.%N)
	printf '{"impl":"quantfleet","mode":"%s","draw":%d,"first_sample":%d,"samples":128,"seqlen":512,"perplexity":%s,"quantize_s":%.1f,"eval_s":%.1f,"device":"%s"}\n' \
		"$mode" "$k" "$first" "$ppl" "$(awk "BEGIN{print $t1 - $t0}")" "$(awk "BEGIN{print $t2 - $t1}")" "$DEVICE" >>"$OUT/results.jsonl"
	rm -rf "${OUT:?}/$name"
}
export -f one_run
export OUT QF SHARED MODEL THREADS DEVICE

if [ -z "${REF_ONLY:-}" ]; then
	for mode in ${MODES//,/ }; do
		for k in ${DRAWS//,/ }; do
			# round-to-nearest uses no calibration: one run stands for every draw
			if [[ $mode == rtn* ]] && [ "$k" != "${DRAWS%%,*}" ]; then continue; fi
			echo "$mode $k"
		done
	done | xargs -P "$JOBS" -L 1 bash -c 'one_run "$0" "$1"' &
	ours=$!
fi
if [ -z "${OURS_ONLY:-}" ] && [ -n "${REF_GPTQ_SRC:-}" ] && [ -n "${REF_AWQ_SRC:-}" ]; then
	python3 scripts/reference/quality_ref.py --model "$MODEL" --calib "$SHARED/data/calib.txt" --eval "$SHARED/data/eval.txt" \
		--gptq-src "$REF_GPTQ_SRC" --awq-src "$REF_AWQ_SRC" --modes "$MODES" --draws "$DRAWS" \
		--out "$OUT/results.jsonl" ${REF_DUMP_LAYER0:+--dump-layer0 "$REF_DUMP_LAYER0"}
fi
[ -n "${ours:-}" ] && wait "$ours"
python3 scripts/quality_summary.py "$OUT/results.jsonl" | tee "$OUT/quality.md"
