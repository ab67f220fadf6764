#!/usr/bin/env bash
# bench-gpu.sh — GPTQ and AWQ seconds per layer on a GPU: quantfleet beside the references.
#
# Generates (once, in Go: bin/genmodel) a Llama-3-8B-shaped synthetic checkpoint — hidden 4096,
# 32 heads / 8 KV heads, intermediate 14336, 4 layers, vocab 32000, bf16 — and quantizes it on
# SAMPLES × SEQLEN calibration tokens (128 × 2048) of the calibration text with
#   * quantfleet: `quantize --device $DEVICE` GPTQ 4-bit g128 act-order (asymmetric) and AWQ 4-bit
#     g128; seconds per layer from the progress events' timestamps (calibration inputs, the
#     device's start-up that overlaps them — kernel compilation, cuBLAS — and the checkpoint's
#     writing and validation excluded), peak GPU memory (nvidia-smi, sampled every
#     100 ms, the memory in use before the run subtracted), peak host RSS (getrusage of the child);
#   * the references, in the same call on the same card (REF_GPTQ_SRC: IST-DASLab/gptq,
#     REF_AWQ_SRC: mit-han-lab/llm-awq; scripts/reference/bench_ref.py): the same layers built as
#     transformers LlamaDecoderLayer on the same tokens, timed as llama.py / run_awq do.
# The goal: quantfleet at most half the reference's seconds per layer, for GPTQ and for AWQ.
#
# AWQ runs on $DEVICE like GPTQ; AWQ_CPU=1 runs quantfleet's AWQ on the CPU instead (many minutes
# a layer at this size: for a CPU baseline, best with a model of few LAYERS).
#
# usage: OUT=/tmp/bench scripts/bench-gpu.sh          (from the repository root, after `make build`)
# Environment:
#   OUT            results directory (default: a new temporary one): bench.md (the table),
#                  results.jsonl, logs; the model goes to $OUT/model unless BENCH_MODEL is set
#   BENCH_MODEL    checkpoint directory to use or create (reused when it has a config.json)
#   QF, GENMODEL   binaries (default bin/quantfleet, bin/genmodel; built with go when missing)
#   TOKENIZER      directory with tokenizer files to copy (default $QUANTFLEET_TINY_LLAMA or
#                  ../shared/models/tiny-llama)
#   CALIB          calibration text (default $QUANTFLEET_CALIB or ../shared/data/calib.txt)
#   DEVICE         quantfleet's --device (default cuda)
#   LAYERS         layers of the synthetic model (default 4); SAMPLES (128), SEQLEN (2048)
#   GEN_ARGS       genmodel's shape flags instead of the Llama-3-8B shape (a quick check on a CPU:
#                  GEN_ARGS="--hidden 256 --layers 2 --heads 4 --kv-heads 2 --intermediate 512"
#                  DEVICE=cpu SAMPLES=8 SEQLEN=256 NO_REF=1)
#   METHODS        quantfleet's runs (default gptq,gptq-fp32,awq): gptq and awq with the GPU's
#                  default arithmetic (TF32 forwards; AWQ's grid in half precision), gptq-fp32 and
#                  awq-fp32 in IEEE float32 (QUANTFLEET_GPU_TF32=0 QUANTFLEET_GPU_AWQ_HALF=0),
#                  awq-tf32 with TF32 forwards but a float32 grid (QUANTFLEET_GPU_AWQ_HALF=0);
#                  none: the references alone
#   KEEP_RESULTS=1 adds to $OUT/results.jsonl instead of starting it afresh (ours and the references
#                  timed by two invocations on the same machine, one table)
#   REF_LAYERS     layers the references time per method (default 2; their seconds per layer are
#                  the mean over them); REF_METHODS (default gptq,awq); NO_REF=1 skips them
#   PYTHON         python3 with torch and transformers (default python3)
#   SHARD_SAMPLES  --shard-samples of the sharded pipeline, where the binary has it (default: SAMPLES)
# Budget on an H100 with LAYERS=2: model generation ~1 min, the references ~1.5 min for 2 layers each,
# quantfleet ~40 s per GPTQ and ~70 s per AWQ run.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=${OUT:-$(mktemp -d /tmp/bench-gpu.XXXXXX)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOGS=$OUT/logs
mkdir -p "$LOGS"
MODEL=${BENCH_MODEL:-$OUT/model}
QF=${QF:-bin/quantfleet}
GENMODEL=${GENMODEL:-bin/genmodel}
TOKENIZER=${TOKENIZER:-${QUANTFLEET_TINY_LLAMA:-../shared/models/tiny-llama}}
CALIB=${CALIB:-${QUANTFLEET_CALIB:-../shared/data/calib.txt}}
DEVICE=${DEVICE:-cuda}
LAYERS=${LAYERS:-4}
SAMPLES=${SAMPLES:-128}
SEQLEN=${SEQLEN:-2048}
REF_LAYERS=${REF_LAYERS:-2}
REF_METHODS=${REF_METHODS:-gptq,awq}
PYTHON=${PYTHON:-python3}
RESULTS=$OUT/results.jsonl
[ -n "${KEEP_RESULTS:-}" ] || : >"$RESULTS"

for b in "$QF" "$GENMODEL"; do
	if [ ! -x "$b" ]; then
		echo "== building $b"
		(cd services && CGO_ENABLED=0 go build -o "../$b" "./$([ "$(basename "$b")" = genmodel ] && echo internal/genmodel || basename "$b")")
	fi
done
QF=$(cd "$(dirname "$QF")" && pwd)/$(basename "$QF")

if [ ! -f "$MODEL/config.json" ]; then
	echo "== generating the synthetic model in $MODEL"
	t0=$(date +%s.%N)
	# shellcheck disable=SC2086  # GEN_ARGS is a list of flags
	"$GENMODEL" --out "$MODEL" --tokenizer "$TOKENIZER" ${GEN_ARGS:---hidden 4096 --layers $LAYERS --heads 32 --kv-heads 8 --intermediate 14336 --vocab 32000} \
		--shard-mb 4096 2>"$LOGS/genmodel.log"
	echo "   $(tail -n 1 "$LOGS/genmodel.log") in $(awk "BEGIN{printf \"%.0f\", $(date +%s.%N) - $t0}") s"
fi

# gpu_sampler FILE: writes the GPU memory in use (MiB, first GPU) every 100 ms until killed.
have_smi=0
command -v nvidia-smi >/dev/null 2>&1 && have_smi=1
gpu_used() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 2>/dev/null | head -n 1 | tr -d ' '; }
GPU_NAME=$( [ $have_smi = 1 ] && nvidia-smi --query-gpu=name --format=csv,noheader -i 0 | head -n 1 || echo "unknown")

# measure NAME CMD...: runs CMD with stdout to $LOGS/NAME.out, stderr to $LOGS/NAME.err; records
# the peak host RSS of the child (KiB) in $LOGS/NAME.rss, the GPU memory samples in $LOGS/NAME.gpu
# (the first line: in use before the run), the wall seconds in $LOGS/NAME.wall; returns CMD's status.
measure() {
	local name=$1
	shift
	local sampler=""
	if [ $have_smi = 1 ]; then
		gpu_used >"$LOGS/$name.gpu"
		(while :; do gpu_used; sleep 0.1; done) >>"$LOGS/$name.gpu" 2>/dev/null &
		sampler=$!
	fi
	local rc=0
	"$PYTHON" - "$LOGS/$name" "$@" <<'EOF' || rc=$?
import resource, subprocess, sys, time
base, cmd = sys.argv[1], sys.argv[2:]
t0 = time.time()
with open(base + ".out", "w") as o, open(base + ".err", "w") as e:
    rc = subprocess.call(cmd, stdout=o, stderr=e)
open(base + ".wall", "w").write("%.3f\n" % (time.time() - t0))
open(base + ".rss", "w").write("%d\n" % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(rc)
EOF
	if [ -n "$sampler" ]; then
		kill "$sampler" 2>/dev/null || true
		wait "$sampler" 2>/dev/null || true
	fi
	return $rc
}

# The sharded pipeline (--shard-samples, where the binary has it): one shard of all samples by
# default, so that each layer's weights and activations go to the GPU once per group.
SHARD_ARGS=()
if "$QF" quantize --help 2>&1 | grep -q -- "-shard-samples"; then
	SHARD_ARGS=(--shard-samples "${SHARD_SAMPLES:-$SAMPLES}")
	echo "== calibration shards of ${SHARD_SAMPLES:-$SAMPLES} samples"
fi

# ours METHOD ARGS...: quantize the synthetic model; appends one JSON line per run to results.jsonl.
ours() {
	local method=$1
	shift
	echo "== quantfleet $method --device $DEVICE"
	local rc=0
	measure "ours-$method" "$QF" quantize --model "$MODEL" --level 4bit --group-size 128 "$@" \
		--calibration-data "$CALIB" --calibration-samples "$SAMPLES" --seqlen "$SEQLEN" "${SHARD_ARGS[@]}" \
		--output-dir "$OUT/ckpt" --output-name "$method" --overwrite --json --verbosity verbose --device "$DEVICE" || rc=$?
	"$PYTHON" - "$LOGS/ours-$method" "$method" "$DEVICE" "$rc" >>"$RESULTS" <<'EOF'
import json, re, sys, datetime
base, method, device, rc = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def ts(s):
    s = s.rstrip("Z")
    if "." in s:
        head, frac = s.split(".")
        s = head + "." + frac[:6]
    return datetime.datetime.fromisoformat(s).timestamp()
start, marks, meta, err = None, {}, {}, ""
for line in open(base + ".out"):
    try:
        ev = json.loads(line)
    except ValueError:
        continue
    if ev.get("event") == "start" and ev.get("stage") == "quantize":
        start = ts(ev["time"])
    elif ev.get("stage") == "quantize" and ev.get("event") == "progress" and re.match(r"layer \d+/\d+, [a-z]+\d{4}", ev.get("item", "")):
        # "layer 2/4, q0003g1": 2 layers complete; task q0003g1 (of layer 3) just ended
        layer = int(re.match(r"[a-z]+(\d{4})", ev["item"].split(", ")[1]).group(1))
        marks[layer] = ts(ev["time"])  # the last task of each layer: its end
    elif ev.get("event") == "result":
        meta = ev["result"].get("quantization_metadata", {})
    elif ev.get("event") == "error":
        err = ev.get("message", "")
per, prev = [], start
for layer in sorted(marks):
    if prev is not None:
        per.append(marks[layer] - prev)
    prev = marks[layer]
gpu = [int(x) for x in open(base + ".gpu").read().split()] if __import__("os").path.exists(base + ".gpu") else []
rec = {"impl": "quantfleet", "method": method, "device": meta.get("device", device), "gpu": meta.get("gpu", ""),
       "layers": len(per), "seconds_per_layer": round(sum(per) / len(per), 3) if per else None,
       "layer_seconds": [round(p, 3) for p in per], "wall_seconds": float(open(base + ".wall").read()),
       "peak_gpu_mib": (max(gpu) - gpu[0]) if len(gpu) > 1 else None, "peak_host_mib": round(int(open(base + ".rss").read()) / 1024)}
if rc != 0:
    last = open(base + ".err").read().strip().splitlines()
    rec["error"] = err or (last[-1] if last else "exit %d" % rc)
print(json.dumps(rec))
EOF
	rm -rf "$OUT/ckpt"
}

METHODS=",${METHODS:-gptq,gptq-fp32,awq},"
fp32() { QUANTFLEET_GPU_TF32=0 QUANTFLEET_GPU_AWQ_HALF=0 ours "$@"; }
[[ $METHODS == *,gptq,* ]] && ours gptq --format gptq --act-order --sym=false
[ "$DEVICE" != cpu ] && [[ $METHODS == *,gptq-fp32,* ]] && fp32 gptq-fp32 --format gptq --act-order --sym=false
if [[ $METHODS != *,awq,* ]]; then
	:
elif [ -n "${AWQ_CPU:-}" ]; then
	DEVICE=cpu ours awq --format awq
else
	ours awq --format awq
fi
[ "$DEVICE" != cpu ] && [[ $METHODS == *,awq-tf32,* ]] && QUANTFLEET_GPU_AWQ_HALF=0 ours awq-tf32 --format awq
[ "$DEVICE" != cpu ] && [[ $METHODS == *,awq-fp32,* ]] && fp32 awq-fp32 --format awq

if [ -z "${NO_REF:-}" ]; then
	if [ -n "${REF_GPTQ_SRC:-}" ] && [ -n "${REF_AWQ_SRC:-}" ]; then
		echo "== references ($REF_METHODS, $REF_LAYERS layers each)"
		rc=0
		measure ref "$PYTHON" scripts/reference/bench_ref.py --model "$MODEL" --calib "$CALIB" --gptq-src "$REF_GPTQ_SRC" \
			--awq-src "$REF_AWQ_SRC" --samples "$SAMPLES" --seqlen "$SEQLEN" --layers "$REF_LAYERS" --methods "$REF_METHODS" \
			--out "$OUT/ref.jsonl" || rc=$?
		[ $rc = 0 ] || echo "   bench_ref.py exited $rc (see $LOGS/ref.err)"
		[ -f "$OUT/ref.jsonl" ] && cat "$OUT/ref.jsonl" >>"$RESULTS"
	else
		echo "== references skipped: set REF_GPTQ_SRC and REF_AWQ_SRC"
	fi
fi

"$PYTHON" - "$RESULTS" "$GPU_NAME" "$SAMPLES" "$SEQLEN" "$MODEL/config.json" <<'EOF' | tee "$OUT/bench.md"
import json, sys
from collections import defaultdict
path, gpu, samples, seqlen, config = sys.argv[1:]
c = json.load(open(config))
rows = [json.loads(l) for l in open(path) if l.strip()]
ours = {r["method"]: r for r in rows if r["impl"] == "quantfleet"}
ref = defaultdict(list)
ref_err = {}
for r in rows:
    if r["impl"] == "reference":
        if "error" in r:
            ref_err[r["method"]] = r["error"]
        else:
            ref[r["method"]].append(r)
print(f"synthetic Llama layers (hidden {c['hidden_size']}, {c['num_attention_heads']}/{c['num_key_value_heads']} heads, "
      f"ffn {c['intermediate_size']}, vocab {c['vocab_size']}, {c['num_hidden_layers']} layers, bf16), "
      f"{samples} × {seqlen} calibration tokens, 4-bit g128; GPU: {gpu}\n")
print("| method | implementation | device | s / layer | peak GPU MiB | peak host MiB | ours / reference |")
print("|---|---|---|---|---|---|---|")
fmt = lambda v, f="%.1f": "—" if v is None else f % v
for m, label in (("gptq", "GPTQ act-order"), ("gptq-fp32", "GPTQ act-order, IEEE float32"), ("awq", "AWQ"),
                 ("awq-tf32", "AWQ, float32 grid"), ("awq-fp32", "AWQ, IEEE float32")):
    base = m.split("-")[0]
    o = ours.get(m, {})
    rs = ref.get(base, [])
    rsec = sum(r["seconds"] for r in rs) / len(rs) if rs else None
    if o.get("skipped"):
        print(f"| {label} | quantfleet | {o.get('device')} | skipped: {o['skipped']} | | | |")
    elif o.get("error"):
        print(f"| {label} | quantfleet | {o.get('device')} | error: {o['error'][:120]} | | | |")
    elif o:
        ratio = o["seconds_per_layer"] / rsec if (rsec and o.get("seconds_per_layer")) else None
        verdict = "" if ratio is None else (" PASS (≤ 0.5)" if ratio <= 0.5 else " FAIL (goal ≤ 0.5)")
        dev = o.get("device", "") + (f" ({o['gpu']})" if o.get("gpu") else "")
        print(f"| {label} | quantfleet | {dev} | {fmt(o.get('seconds_per_layer'), '%.2f')} | {fmt(o.get('peak_gpu_mib'), '%d')} | {fmt(o.get('peak_host_mib'), '%d')} | {fmt(ratio, '%.2f')}{verdict} |")
    if rs and m == base:
        print(f"| {label} | reference ({len(rs)} layers, tokens: {rs[0]['tokens']}) | cuda | {rsec:.2f} | {max(r['peak_gpu_mib'] for r in rs)} | {max(r['peak_host_mib'] for r in rs)} | 1 |")
    elif m in ref_err and m == base:
        print(f"| {label} | reference | cuda | error: {ref_err[m][:120]} | | | |")
print()
for m, o in ours.items():
    if o.get("layer_seconds"):
        print(f"quantfleet {m}: per layer {o['layer_seconds']} s, wall {o['wall_seconds']:.0f} s (calibration inputs, checkpoint writing and validation included)")
for m, rs in ref.items():
    print(f"reference {m}: per layer {[r['seconds'] for r in rs]} s")
EOF
echo "results: $OUT/bench.md, $RESULTS, logs in $LOGS"
