#!/usr/bin/env bash
# bench-scale.sh — how the fleet scales: the same job on 1, 2 and 4 worker processes.
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
#   GEN_ARGS           extra genmodel flags (default: hidden 2048, 16 layers, 755 M parameters)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED:-$ROOT/../shared}
WORK=${BENCH_DIR:-$(mktemp -d /tmp/quantfleet-bench.XXXXXX)}
LEVEL=${LEVEL:-Q4_K_M}
WORKER_COUNTS=${WORKER_COUNTS:-"1 2 4"}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
BIN=$WORK/bin
MODEL=$WORK/model
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
"$BIN/quantfleet" quantize --model "$MODEL" --level "$LEVEL" --output-dir "$WORK/local" --output-name local.gguf --verbosity quiet >/dev/null
t1=$(date +%s.%N)
LOCAL_WALL=$(echo "$t1 - $t0" | bc)

results=()
for n in $WORKER_COUNTS; do
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
  "$BIN/quantfleet" submit --model "$URL" --model-name "$(basename "$MODEL")" --level "$LEVEL" --output-name "w$n.gguf" --wait --verbosity quiet >"$LOGS/submit-$n.log"
  t1=$(date +%s.%N)
  wall=$(echo "$t1 - $t0" | bc)
  results+=("$n $wall")
  for p in "${WORKER_PIDS[@]}"; do kill -TERM "$p"; done
  for p in "${WORKER_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  WORKER_PIDS=()
done

echo "== checking the fleet's file against the local one"
JOB=$(awk '{print $1; exit}' "$LOGS/submit-${WORKER_COUNTS%% *}.log")
"$BIN/quantfleet" get "$JOB" --output-dir "$WORK/fleet" --verbosity quiet >/dev/null
if cmp -s "$WORK/fleet/w${WORKER_COUNTS%% *}.gguf" "$WORK/local/local.gguf"; then IDENTICAL=yes; else IDENTICAL=NO; fi

echo
echo "model: $(basename "$MODEL"), ~$PARAMS parameters (bf16 bytes / 2), $(echo "scale=2; $SRC_BYTES/1000000000" | bc) GB bf16; level $LEVEL; $(nproc) cores"
printf '%-22s %10s %14s %12s %9s\n' "run" "wall (s)" "Mparams/s" "MB/s (bf16)" "speedup"
printf '%-22s %10.1f %14.1f %12.1f %9s\n' "quantize (local)" "$LOCAL_WALL" "$(echo "$PARAMS/$LOCAL_WALL/1000000" | bc -l)" "$(echo "$SRC_BYTES/$LOCAL_WALL/1000000" | bc -l)" "-"
base=""
for r in "${results[@]}"; do
  set -- $r
  [ -z "$base" ] && base=$2
  printf '%-22s %10.1f %14.1f %12.1f %8.2fx\n' "fleet, $1 worker(s)" "$2" "$(echo "$PARAMS/$2/1000000" | bc -l)" "$(echo "$SRC_BYTES/$2/1000000" | bc -l)" "$(echo "$base/$2" | bc -l)"
done
echo "fleet file byte-identical to quantize's: $IDENTICAL"
echo "(fleet wall time = submit to COMPLETED: planning, tasks, assembly with server-side copies, validation read-back)"
