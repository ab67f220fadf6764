#!/usr/bin/env bash
# GPTQ/AWQ acceptance runs of issue 4 on tiny-llama: quantize with 128 calibration samples of
# 512 tokens (group 128, asymmetric), write the checkpoint, and measure perplexity on the
# checkpoint as written (eval.txt, 400 windows of 512 tokens), next to the reference numbers
# of IST-DASLab/gptq and mit-han-lab/llm-awq. Runs in sequence; about 20 minutes on 2 cores.
#
# usage: scripts/gptq-awq-quality.sh [OUT_DIR]     (run from the repository root)
# Environment: SHARED (default ../shared), QF (default: build bin/quantfleet), ONLY (a regexp
# of run names to do, e.g. ONLY='rtn|gptq4').
# The first six runs are the acceptance table; the last two the reference's numbers without
# act-order.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
OUT=${1:-$(mktemp -d /tmp/gptq-awq-quality.XXXXXX)}
mkdir -p "$OUT"
if [ -z "${QF:-}" ]; then
	make build >/dev/null
	QF=bin/quantfleet
fi
MODEL=$SHARED/models/tiny-llama
CALIB=(--calibration-data "$SHARED/data/calib.txt" --calibration-samples 128 --seqlen 512)
COMMON=(--group-size 128 --sym=false)

# name | reference | bar | quantize arguments ("-" for the unquantized model)
RUNS=(
	"bf16|17.628|17.628 ± 0.02|-"
	"rtn4|18.681|± 0.03|--format gptq --level 4bit ${COMMON[*]} --rtn"
	"gptq4-act-order|18.388|≤ 18.40|--format gptq --level 4bit ${COMMON[*]} --act-order ${CALIB[*]}"
	"awq4|18.443|≤ 18.45|--format awq --level 4bit --group-size 128 ${CALIB[*]}"
	"rtn3|23.447|± 0.05|--format gptq --level 3bit ${COMMON[*]} --rtn"
	"gptq3-act-order|21.659|≤ 21.70|--format gptq --level 3bit ${COMMON[*]} --act-order ${CALIB[*]}"
	# the reference's numbers without act-order (no bar)
	"gptq4|18.370|-|--format gptq --level 4bit ${COMMON[*]} ${CALIB[*]}"
	"gptq3|21.541|-|--format gptq --level 3bit ${COMMON[*]} ${CALIB[*]}"
)

printf '| run | reference | bar | ours | quantize s | eval s |\n|---|---|---|---|---|---|\n' | tee "$OUT/results.md"
for run in "${RUNS[@]}"; do
	IFS='|' read -r name ref bar args <<<"$run"
	if [ -n "${ONLY:-}" ] && ! [[ $name =~ $ONLY ]]; then continue; fi
	dir=$MODEL
	qs=0
	if [ "$args" != "-" ]; then
		t0=$(date +%s.%N)
		# shellcheck disable=SC2086 # args are word lists
		"$QF" quantize --model "$MODEL" $args --output-dir "$OUT" --output-name "$name" --verbosity quiet --json >"$OUT/$name.quantize.json"
		qs=$(echo "$(date +%s.%N) - $t0" | bc)
		dir=$OUT/$name
	fi
	t0=$(date +%s.%N)
	ppl=$("$QF" eval --model "$dir" --data "$SHARED/data/eval.txt" --ctx 512 --windows 400 --verbosity quiet --json |
		tail -n 1 | sed -E 's/.*"perplexity":([0-9.]+).*/\1/')
	es=$(echo "$(date +%s.%N) - $t0" | bc)
	printf '| %s | %s | %s | %.3f | %.0f | %.0f |\n' "$name" "$ref" "$bar" "$ppl" "$qs" "$es" | tee -a "$OUT/results.md"
done
echo "checkpoints and results in $OUT"
