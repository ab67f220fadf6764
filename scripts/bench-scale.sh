#!/usr/bin/env bash
# bench-scale.sh — how the fleet scales: the same job on 1, 2, … worker processes, against a local
# `quantfleet quantize` of the same job, and how much memory a worker needs.
#
# Usage: scripts/bench-scale.sh [--format gguf|gptq|awq]
#
#   --format gguf   (default) a GGUF job (LEVEL, default Q4_K_M) on a generated model of hidden 2048,
#                   16 layers (755 M parameters); workers 1, 2 and 4.
#   --format gptq   a calibrated GPTQ 4-bit act-order job (the sharded pipeline: Hessian partials per
#   --format awq    calibration shard, solves, forwards; AWQ: statistics, scale losses, clip
#                   statistics per shard, a finish per layer) on a generated model of hidden 1024,
#                   MLP 2816, 8 layers (107 M parameters), CALIB_SAMPLES × SEQLEN tokens (default
#                   128 × 512) of calib.txt, SHARD_SAMPLES per shard; workers 1 and 2 at
#                   WORKER_GOMAXPROCS=1; then one worker again at each of MEM_SAMPLES samples
#                   (default 512), so that the report shows a worker's peak RSS at 128 and at 512
#                   samples (bounded by the shard, not the samples).
#
# It prints, per run: wall time (submit to COMPLETED), throughput, speed-up over 1 worker and the peak
# RSS (VmHWM) of every worker; then whether every fleet output is byte-identical to quantize's.
#
# Runs from prebuilt binaries, without a Go toolchain (another Linux machine: copy bin/, scripts/
# (it sources scripts/fleet-bench-lib.sh) and the files below): QF, DISPATCHER, WORKER, ASSEMBLER
# and GENMODEL name the binaries (default BIN_DIR/<name>, BIN_DIR default <repo>/bin); only if one
# under BIN_DIR is missing is `make build` run, which needs Go. Besides the binaries it needs bash,
# awk, coreutils and a Linux /proc, and two files: a tokenizer directory for the generated model
# (TOKENIZER_DIR) and the calibration text (CALIB), by default from ../shared. MODEL uses an
# existing checkpoint instead of generating one.
#
# Environment:
#   BIN_DIR            where the binaries are (default <repo>/bin, what `make build` writes)
#   QF DISPATCHER WORKER ASSEMBLER GENMODEL
#                      the binaries themselves (default BIN_DIR/quantfleet, …/dispatcher, …)
#   BENCH_DIR          work directory (default: a new temporary one; kept; generated models are
#                      reused across runs of the same shape)
#   SHARED             the shared data directory (default <repo>/../shared)
#   TOKENIZER_DIR      tokenizer files for the generated model (default SHARED/models/tiny-llama)
#   CALIB              calibration text (default SHARED/data/calib.txt)
#   MODEL              an existing checkpoint directory to quantize instead of a generated one
#   GEN_ARGS, MODEL_ARGS
#                      genmodel flags: the generated model's shape (either name; default gguf:
#                      "--hidden 2048 --layers 16", gptq/awq: "--hidden 1024 --intermediate 2816
#                      --layers 8 --heads 16 --kv-heads 4"); flags: --hidden --intermediate --layers
#                      --heads --kv-heads --vocab --shard-mb
#   LEVEL              quantization level (default Q4_K_M; gptq/awq 4bit)
#   WORKER_COUNTS      worker counts to try (default "1 2 4"; gptq/awq "1 2")
#   WORKER_GOMAXPROCS  GOMAXPROCS of each worker (default: unset, all cores; gptq/awq 1)
#   CALIB_SAMPLES      gptq/awq calibration samples (default 128)
#   SEQLEN             gptq/awq tokens per sample (default 512)
#   SHARD_SAMPLES      gptq/awq samples per shard (default 32)
#   MEM_SAMPLES        gptq/awq sample counts of the extra 1-worker peak-memory runs (default 512;
#                      "" for none)
set -euo pipefail

FORMAT=gguf
while [ $# -gt 0 ]; do
  case "$1" in
    --format) FORMAT=${2:-}; shift 2 ;;
    --format=*) FORMAT=${1#--format=}; shift ;;
    *) echo "usage: $0 [--format gguf|gptq|awq]" >&2; exit 2 ;;
  esac
done
case "$FORMAT" in gguf|gptq|awq) ;; *) echo "$0: --format must be gguf, gptq or awq, not '$FORMAT'" >&2; exit 2 ;; esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/fleet-bench-lib.sh
. "$ROOT/scripts/fleet-bench-lib.sh"
SHARED=${SHARED:-$ROOT/../shared}
TOKENIZER_DIR=${TOKENIZER_DIR:-$SHARED/models/tiny-llama}
CALIB=${CALIB:-$SHARED/data/calib.txt}
GEN_ARGS=${GEN_ARGS:-${MODEL_ARGS:-}}
if [ "$FORMAT" = gguf ]; then
  LEVEL=${LEVEL:-Q4_K_M}
  EXT=.gguf
  GEN_ARGS=${GEN_ARGS:---hidden 2048 --layers 16}
  WORKER_COUNTS=${WORKER_COUNTS:-"1 2 4"}
  WORKER_GOMAXPROCS=${WORKER_GOMAXPROCS:-}
  MEM_SAMPLES=
else
  LEVEL=${LEVEL:-4bit}
  EXT=
  GEN_ARGS=${GEN_ARGS:---hidden 1024 --intermediate 2816 --layers 8 --heads 16 --kv-heads 4}
  WORKER_COUNTS=${WORKER_COUNTS:-"1 2"}
  WORKER_GOMAXPROCS=${WORKER_GOMAXPROCS-1}
  MEM_SAMPLES=${MEM_SAMPLES-512}
fi
CALIB_SAMPLES=${CALIB_SAMPLES:-128}
SEQLEN=${SEQLEN:-512}
SHARD_SAMPLES=${SHARD_SAMPLES:-32}

# The binaries: prebuilt where named or present, else built once with `make build`.
fb_bins
for f in "$CALIB" "$TOKENIZER_DIR"; do
  [ "$FORMAT" = gguf ] && [ "$f" = "$CALIB" ] && continue
  [ -n "${MODEL:-}" ] && [ "$f" = "$TOKENIZER_DIR" ] && continue
  [ -e "$f" ] || { echo "$0: $f not found (set CALIB / TOKENIZER_DIR / SHARED)" >&2; exit 2; }
done

WORK=${BENCH_DIR:-$(mktemp -d /tmp/quantfleet-bench.XXXXXX)}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
LOGS=$WORK/logs
mkdir -p "$LOGS"

# The model: MODEL as given, or generated once per shape (GEN_ARGS) and reused.
fb_model "$WORK" "$GEN_ARGS" "$TOKENIZER_DIR"
SRC_BYTES=$(cat "$MODEL"/*.safetensors | wc -c)
PARAMS=$((SRC_BYTES / 2))

job_flags() { # the job's flags for $1 calibration samples
  JOB_FLAGS=()
  [ "$FORMAT" = gguf ] && return 0
  JOB_FLAGS=(--format "$FORMAT" --calibration-data "$CALIB" --calibration-samples "$1" --seqlen "$SEQLEN" --shard-samples "$SHARD_SAMPLES")
  [ "$FORMAT" = gptq ] && JOB_FLAGS+=(--act-order)
  return 0
}
job_flags "$CALIB_SAMPLES"

PIDS=()
WORKER_PIDS=()
cleanup() {
  for p in "${WORKER_PIDS[@]}" "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${WORKER_PIDS[@]}" "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK/servers"
}
trap cleanup EXIT

fb_servers "$WORK/servers" "$LOGS/servers.log" || { kill "$FB_SERVERS_PID" 2>/dev/null; exit 1; }
PIDS+=("$FB_SERVERS_PID")
"$DISPATCHER" --http-addr "" >"$LOGS/dispatcher.log" 2>&1 & PIDS+=($!)
"$ASSEMBLER" --http-addr "" >"$LOGS/assembler.log" 2>&1 & PIDS+=($!)

echo "== uploading the model once"
t0=$(now)
URL=$("$QF" upload --model "$MODEL" --verbosity quiet)
echo "upload: $(elapsed "$t0" "$(now)") s ($URL)"

echo "== baseline: quantfleet quantize (one process, no fleet)"
t0=$(now)
"$QF" quantize --model "$MODEL" --level "$LEVEL" "${JOB_FLAGS[@]}" --output-dir "$WORK/local" --output-name "local$EXT" --overwrite --verbosity quiet >/dev/null
LOCAL_WALL=$(elapsed "$t0" "$(now)")

# run_job N SAMPLES TAG: one job on N fresh workers; sets LAST to "N wall peak-RSS-MB…".
run_job() {
  local n=$1 tag=$3 i p rss=""
  job_flags "$2"
  WORKER_PIDS=()
  for i in $(seq "$n"); do
    if [ -n "$WORKER_GOMAXPROCS" ]; then
      GOMAXPROCS=$WORKER_GOMAXPROCS "$WORKER" --http-addr "" --name "w$i" >"$LOGS/worker-$tag-$i.log" 2>&1 &
    else
      "$WORKER" --http-addr "" --name "w$i" >"$LOGS/worker-$tag-$i.log" 2>&1 &
    fi
    WORKER_PIDS+=($!)
  done
  sleep 1
  echo "== $n worker(s), $2 samples"
  t0=$(now)
  "$QF" submit --model "$URL" --model-name "$(basename "$MODEL")" --level "$LEVEL" "${JOB_FLAGS[@]}" --output-name "w$tag$EXT" --wait --verbosity quiet >"$LOGS/submit-$tag.log"
  local wall
  wall=$(elapsed "$t0" "$(now)")
  for p in "${WORKER_PIDS[@]}"; do
    rss="$rss $(awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$p/status" 2>/dev/null || echo '?')"
  done
  LAST="$n $wall$rss"
  for p in "${WORKER_PIDS[@]}"; do kill -TERM "$p"; done
  for p in "${WORKER_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  WORKER_PIDS=()
}
results=()
mem_results=()
for n in $WORKER_COUNTS; do
  run_job "$n" "$CALIB_SAMPLES" "$n"
  results+=("$LAST")
done
for s in $MEM_SAMPLES; do
  run_job 1 "$s" "mem$s"
  mem_results+=("$s $LAST")
done

echo "== checking the fleet's outputs against the local one"
IDENTICAL=yes
for n in $WORKER_COUNTS; do
  J=$(awk '{print $1; exit}' "$LOGS/submit-$n.log")
  rm -rf "$WORK/fleet-$n"
  "$QF" get "$J" --output-dir "$WORK/fleet-$n" --verbosity quiet >/dev/null
  if [ "$FORMAT" = gguf ]; then
    cmp -s "$WORK/fleet-$n/w$n.gguf" "$WORK/local/local.gguf" || IDENTICAL=NO
  else
    diff -r "$WORK/fleet-$n/w$n" "$WORK/local/local" >/dev/null || IDENTICAL=NO
  fi
done

rate() { awk -v a="$1" -v w="$2" 'BEGIN { printf "%.1f", a / w / 1e6 }'; }
echo
echo "model: $(basename "$MODEL") (${GEN_ARGS:-given}), ~$PARAMS parameters (bf16 bytes / 2), $(awk -v b="$SRC_BYTES" 'BEGIN { printf "%.2f", b / 1e9 }') GB bf16; format $FORMAT, level $LEVEL; $(nproc) cores; WORKER_GOMAXPROCS=${WORKER_GOMAXPROCS:-unset}"
[ "$FORMAT" != gguf ] && echo "calibration: $CALIB_SAMPLES samples × $SEQLEN tokens, $SHARD_SAMPLES samples per shard"
printf '%-24s %10s %12s %12s %9s  %s\n' "run" "wall (s)" "Mparams/s" "MB/s (bf16)" "speed-up" "peak RSS per worker (MB)"
printf '%-24s %10.1f %12s %12s %9s\n' "quantize (local)" "$LOCAL_WALL" "$(rate "$PARAMS" "$LOCAL_WALL")" "$(rate "$SRC_BYTES" "$LOCAL_WALL")" "-"
base=""
for r in "${results[@]}"; do
  # shellcheck disable=SC2086 # split the result's fields
  set -- $r
  [ -z "$base" ] && base=$2
  n=$1 w=$2; shift 2
  printf '%-24s %10.1f %12s %12s %8sx  %s\n' "fleet, $n worker(s)" "$w" "$(rate "$PARAMS" "$w")" "$(rate "$SRC_BYTES" "$w")" \
    "$(awk -v b="$base" -v w="$w" 'BEGIN { printf "%.2f", b / w }')" "$*"
done
if [ ${#mem_results[@]} -gt 0 ]; then
  echo "peak RSS of one worker by calibration samples ($SHARD_SAMPLES per shard):"
  # shellcheck disable=SC2086
  set -- ${results[0]}
  [ "$1" = 1 ] && printf '  %5s samples: %s MB (%s s)\n' "$CALIB_SAMPLES" "$3" "$2"
  for r in "${mem_results[@]}"; do
    # shellcheck disable=SC2086
    set -- $r
    printf '  %5s samples: %s MB (%s s)\n' "$1" "$4" "$3"
  done
fi
echo "fleet outputs byte-identical to quantize's: $IDENTICAL"
echo "(fleet wall time = submit to COMPLETED: planning, tasks, assembly, validation read-back)"
