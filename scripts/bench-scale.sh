#!/usr/bin/env bash
# bench-scale.sh — how the fleet scales: the same job on 1, 2 and 4 worker processes.
#
# Usage: scripts/bench-scale.sh [--format gguf|gptq|awq]
#
# gguf (default) times a GGUF job. gptq and awq time a calibrated job (the sharded pipeline:
# per-layer tasks split by calibration shard), on a smaller generated model (hidden 1024, MLP
# 2816, 8 layers) with CALIB_SAMPLES × SEQLEN calibration tokens of ../shared/data/calib.txt,
# SHARD_SAMPLES samples per shard, and report each worker's peak RSS (VmHWM) as well: with
# MEM_SAMPLES set (e.g. "128 512"), the 1-worker run is repeated at each sample count to show that
# a worker's peak memory is bounded by the shard size, not the sample count.
#
# Builds the binaries, generates a Llama-shaped synthetic bf16 model (>= 1 GB; once, reused), starts
# `quantfleet dev-servers` (NATS + S3 in one process), a dispatcher and an assembler, uploads the
# model once, then for each worker count starts that many worker processes, submits the job, waits
# for it and prints the wall time and throughput. A local `quantfleet quantize` run is the baseline.
#
# Environment:
#   BENCH_DIR          work directory (default: a new temporary one; kept, the model is reused)
#   LEVEL              quantization level (default Q4_K_M)
#   WORKER_COUNTS      worker counts to try (default "1 2 4")
#   WORKER_GOMAXPROCS  GOMAXPROCS of each worker (default: unset, all cores per worker)
#   GEN_ARGS           extra genmodel flags (default: hidden 2048, 16 layers, 755 M parameters;
#                      gptq/awq: hidden 1024, MLP 2816, 8 layers)
#   CALIB_SAMPLES      gptq/awq calibration samples (default 128)
#   SEQLEN             gptq/awq tokens per sample (default 512)
#   SHARD_SAMPLES      gptq/awq samples per shard (default 32)
#   MEM_SAMPLES        gptq/awq sample counts of the 1-worker peak-memory runs (default: none)
set -euo pipefail

FORMAT=gguf
while [ $# -gt 0 ]; do
  case "$1" in
    --format) FORMAT=$2; shift 2 ;;
    --format=*) FORMAT=${1#--format=}; shift ;;
    *) echo "usage: $0 [--format gguf|gptq|awq]" >&2; exit 2 ;;
  esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED:-$ROOT/../shared}
WORK=${BENCH_DIR:-$(mktemp -d /tmp/quantfleet-bench.XXXXXX)}
CALIB=${CALIB:-$SHARED/data/calib.txt}
CALIB_SAMPLES=${CALIB_SAMPLES:-128}
SEQLEN=${SEQLEN:-512}
SHARD_SAMPLES=${SHARD_SAMPLES:-32}
MEM_SAMPLES=${MEM_SAMPLES:-}
if [ "$FORMAT" = gguf ]; then
  LEVEL=${LEVEL:-Q4_K_M}
  EXT=.gguf
  MODEL_NAME=model
  JOB_FLAGS=()
else
  LEVEL=${LEVEL:-4bit}
  EXT=
  MODEL_NAME=model-small
  GEN_ARGS=${GEN_ARGS:---hidden 1024 --intermediate 2816 --layers 8 --heads 16 --kv-heads 4}
fi
job_flags() { # the calibrated job's flags for $1 samples
  JOB_FLAGS=(--format "$FORMAT" --calibration-data "$CALIB" --calibration-samples "$1" --seqlen "$SEQLEN" --shard-samples "$SHARD_SAMPLES")
  [ "$FORMAT" = gptq ] && JOB_FLAGS+=(--act-order)
  return 0
}
[ "$FORMAT" != gguf ] && job_flags "$CALIB_SAMPLES"
WORKER_COUNTS=${WORKER_COUNTS:-"1 2 4"}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
BIN=$WORK/bin
MODEL=$WORK/${MODEL_NAME:-model}
LOGS=$WORK/logs
mkdir -p "$BIN" "$LOGS"

echo "== building binaries into $BIN"
(cd "$ROOT/services" && CGO_ENABLED=0 go build -o "$BIN/" ./quantfleet ./dispatcher ./worker ./assembler ./internal/genmodel)

if [ ! -f "$MODEL/config.json" ]; then
  echo "== generating the synthetic model in $MODEL"
  "$BIN/genmodel" --out "$MODEL" --tokenizer "$SHARED/models/tiny-llama" ${GEN_ARGS:-}
fi
SRC_BYTES=$(cat "$MODEL"/*.safetensors | wc -c)
PARAMS=$((SRC_BYTES / 2))

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
NATS_PORT=$(free_port); S3_PORT=$(free_port)
export NATS_URL=nats://127.0.0.1:$NATS_PORT S3_ENDPOINT=127.0.0.1:$S3_PORT S3_INSECURE=true S3_BUCKET=quantfleet
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret-$RANDOM$RANDOM LOG_LEVEL=warn

PIDS=()
WORKER_PIDS=()
cleanup() {
  for p in "${WORKER_PIDS[@]}" "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${WORKER_PIDS[@]}" "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK/servers"
}
trap cleanup EXIT

"$BIN/quantfleet" dev-servers --dir "$WORK/servers" --nats-addr 127.0.0.1:$NATS_PORT --s3-addr 127.0.0.1:$S3_PORT >"$LOGS/servers.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do grep -q s3_endpoint "$LOGS/servers.log" 2>/dev/null && break; sleep 0.1; done
"$BIN/dispatcher" --http-addr "" >"$LOGS/dispatcher.log" 2>&1 & PIDS+=($!)
"$BIN/assembler" --http-addr "" >"$LOGS/assembler.log" 2>&1 & PIDS+=($!)

echo "== uploading the model once"
t0=$(date +%s.%N)
URL=$("$BIN/quantfleet" upload --model "$MODEL" --verbosity quiet)
t1=$(date +%s.%N)
printf 'upload: %.1f s (%s)\n' "$(echo "$t1 - $t0" | bc)" "$URL"

echo "== baseline: quantfleet quantize (one process, no fleet)"
t0=$(date +%s.%N)
"$BIN/quantfleet" quantize --model "$MODEL" --level "$LEVEL" "${JOB_FLAGS[@]}" --output-dir "$WORK/local" --output-name "local$EXT" --overwrite --verbosity quiet >/dev/null
t1=$(date +%s.%N)
LOCAL_WALL=$(echo "$t1 - $t0" | bc)

# run_job N SAMPLES TAG: N workers, one job; appends "N wall peak-RSS-MB..." to results.
results=()
mem_results=()
run_job() {
  local n=$1 tag=$3
  [ "$FORMAT" != gguf ] && job_flags "$2"
  WORKER_PIDS=()
  for i in $(seq "$n"); do
    if [ -n "${WORKER_GOMAXPROCS:-}" ]; then
      GOMAXPROCS=$WORKER_GOMAXPROCS "$BIN/worker" --http-addr "" --name "w$i" >"$LOGS/worker-$n-$i.log" 2>&1 &
    else
      "$BIN/worker" --http-addr "" --name "w$i" >"$LOGS/worker-$n-$i.log" 2>&1 &
    fi
    WORKER_PIDS+=($!)
  done
  sleep 1
  echo "== $n worker(s)"
  t0=$(date +%s.%N)
  "$BIN/quantfleet" submit --model "$URL" --model-name "$(basename "$MODEL")" --level "$LEVEL" "${JOB_FLAGS[@]}" --output-name "w$tag$EXT" --wait --verbosity quiet >"$LOGS/submit-$tag.log"
  t1=$(date +%s.%N)
  wall=$(echo "$t1 - $t0" | bc)
  local rss=""
  for p in "${WORKER_PIDS[@]}"; do
    rss="$rss $(awk '/VmHWM/ {printf "%.0f", $2/1024}' /proc/$p/status 2>/dev/null || echo '?')"
  done
  LAST="$n $wall$rss"
  for p in "${WORKER_PIDS[@]}"; do kill -TERM "$p"; done
  for p in "${WORKER_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  WORKER_PIDS=()
}
for n in $WORKER_COUNTS; do
  run_job "$n" "$CALIB_SAMPLES" "$n"
  results+=("$LAST")
done
if [ "$FORMAT" != gguf ]; then
  for s in $MEM_SAMPLES; do
    echo "== peak memory: 1 worker, $s calibration samples"
    run_job 1 "$s" "mem$s"
    mem_results+=("$s $LAST")
  done
  job_flags "$CALIB_SAMPLES"
fi

echo "== checking the fleet's file against the local one"
JOB=$(awk '{print $1; exit}' "$LOGS/submit-${WORKER_COUNTS%% *}.log")
rm -rf "$WORK/fleet"
"$BIN/quantfleet" get "$JOB" --output-dir "$WORK/fleet" --verbosity quiet >/dev/null
if [ "$FORMAT" = gguf ]; then
  if cmp -s "$WORK/fleet/w${WORKER_COUNTS%% *}.gguf" "$WORK/local/local.gguf"; then IDENTICAL=yes; else IDENTICAL=NO; fi
else
  # every job of the run (all worker counts) against the local directory
  IDENTICAL=yes
  for n in $WORKER_COUNTS; do
    J=$(awk '{print $1; exit}' "$LOGS/submit-$n.log")
    rm -rf "$WORK/fleet-$n"
    "$BIN/quantfleet" get "$J" --output-dir "$WORK/fleet-$n" --verbosity quiet >/dev/null
    diff -r "$WORK/fleet-$n/w$n" "$WORK/local/local" >/dev/null || IDENTICAL=NO
  done
fi

echo
echo "model: $(basename "$MODEL"), ~$PARAMS parameters (bf16 bytes / 2), $(echo "scale=2; $SRC_BYTES/1000000000" | bc) GB bf16; format $FORMAT, level $LEVEL; $(nproc) cores; WORKER_GOMAXPROCS=${WORKER_GOMAXPROCS:-unset}"
[ "$FORMAT" != gguf ] && echo "calibration: $CALIB_SAMPLES samples × $SEQLEN tokens, $SHARD_SAMPLES samples per shard"
printf '%-22s %10s %14s %12s %9s  %s\n' "run" "wall (s)" "Mparams/s" "MB/s (bf16)" "speedup" "peak RSS per worker (MB)"
printf '%-22s %10.1f %14.1f %12.1f %9s\n' "quantize (local)" "$LOCAL_WALL" "$(echo "$PARAMS/$LOCAL_WALL/1000000" | bc -l)" "$(echo "$SRC_BYTES/$LOCAL_WALL/1000000" | bc -l)" "-"
base=""
for r in "${results[@]}"; do
  set -- $r
  [ -z "$base" ] && base=$2
  n=$1 w=$2; shift 2
  printf '%-22s %10.1f %14.1f %12.1f %8.2fx  %s\n' "fleet, $n worker(s)" "$w" "$(echo "$PARAMS/$w/1000000" | bc -l)" "$(echo "$SRC_BYTES/$w/1000000" | bc -l)" "$(echo "$base/$w" | bc -l)" "$*"
done
for r in "${mem_results[@]}"; do
  set -- $r
  s=$1 w=$3; shift 3
  printf '%-22s %10.1f %14s %12s %9s  %s\n' "1 worker, $s samples" "$w" "" "" "" "$*"
done
echo "fleet file byte-identical to quantize's: $IDENTICAL"
echo "(fleet wall time = submit to COMPLETED: planning, tasks, assembly with server-side copies, validation read-back)"
