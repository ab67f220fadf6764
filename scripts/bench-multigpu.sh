#!/usr/bin/env bash
# bench-multigpu.sh — one GPTQ/AWQ job on 1 GPU worker, then on one worker per GPU (issue 12).
#
# Usage: scripts/bench-multigpu.sh          (from anywhere; a 4-GPU machine, after `make build`)
#
# For each format (FORMATS) and worker count (WORKER_COUNTS, default "1 $GPUS") it starts a fresh
# one-machine fleet: `quantfleet dev-servers` (NATS with JetStream + S3, its own data directory,
# free ports, NATS monitoring on), the dispatcher, the assembler and N `worker --device $DEVICE`
# processes, worker i with CUDA_VISIBLE_DEVICES=i (CUDA_DEVICE_ORDER=PCI_BUS_ID, nvidia-smi's
# numbering) and `--pool gpu` (DEVICE=cuda; `--pool cpu` otherwise); uploads the model, then times
# `quantfleet submit` + `quantfleet watch` from submit to COMPLETED and downloads the checkpoint.
# The job: the synthetic Llama-3-8B-shaped model of bench-gpu.sh (bin/genmodel: hidden 4096, 32/8
# heads, ffn 14336, vocab 32000, LAYERS layers, bf16), GPTQ 4-bit g128 act-order asymmetric
# (bench-gpu.sh's flags) and AWQ 4-bit g128, SAMPLES × SEQLEN tokens of CALIB, SHARD_SAMPLES per shard.
#
# Per run it reports: wall time and seconds per layer (wall / layers: planning, assembly and the
# checkpoint's read-back included), speed-up over the 1-worker run of the same format, peak GPU
# memory per worker (nvidia-smi --query-compute-apps=pid,used_memory every 0.2 s, mapped by PID;
# where the PIDs are not visible, e.g. inside a container, the worker's GPU's memory.used minus
# its use before the run, marked "*"; "n/a" without nvidia-smi), peak RSS per worker (/proc VmHWM,
# sampled every 0.2 s: a killed worker's peak is kept), object-storage traffic per layer (the
# workers' /metrics summed: written = quantfleet_worker_written_bytes_total, read = the source's
# tensor ranges quantfleet_worker_read_bytes_total + the job's objects the tasks read,
# quantfleet_worker_task_read_bytes_total; scraped every second, so a killed worker loses at most
# its last second; the dispatcher's layer-0 inputs and the assembler's reads are not counted),
# NATS traffic per layer (the embedded server's /varz in_bytes + out_bytes from submit to
# COMPLETED: every client's messages, KV included), and whether the checkpoint directory is
# byte-identical (SHA-256 of every file) to the 1-worker run's. Then extrapolations: s/layer × 32
# (a 32-layer 8B) and × 80 (an 80-layer 70B; plus the same scaled by the 70B layer's parameters
# over the benchmarked layer's, since a 70B layer is ~4.3× an 8B one).
#
# KILL=1 adds, per format, a run of the largest worker count in which one worker (KILL_WORKER,
# default the last) is killed with SIGKILL mid-task once KILL_AT % of the job's tasks are done, and
# restarted on the same GPU after KILL_RESTART seconds; the job must complete with the same
# checkpoint. Its task comes back after the dispatcher's AckWait (ACK_WAIT).
#
# Writes under OUT: results.jsonl (one JSON line per run), results.tsv, bench.md (the table) and
# logs/<run>/ (servers, dispatcher, assembler, workers, samplers, metrics). Rows accumulate across
# invocations with the same OUT and BENCH_DIR, and the table covers all of them with this
# invocation's model, calibration and device (the latest run of each format/workers/kill): a
# bench longer than one command can be split, e.g.
#   FORMATS=gptq WORKER_COUNTS=1 scripts/bench-multigpu.sh; FORMATS=gptq WORKER_COUNTS=4 KILL=1 scripts/bench-multigpu.sh
# with the same BENCH_DIR/OUT (the 1-worker checkpoint's manifest stays in BENCH_DIR for the
# comparison).
# A dry run without GPUs (each "GPU" is just a worker process):
#   DEVICE=cpu GPUS=2 GEN_ARGS="--hidden 128 --intermediate 256 --layers 2 --heads 4 --kv-heads 2 --vocab 32000" \
#     SAMPLES=8 SEQLEN=32 SHARD_SAMPLES=2 WORKER_GOMAXPROCS=1 scripts/bench-multigpu.sh
#
# Runs from prebuilt binaries, without a Go toolchain (copy bin/, scripts/ and the two files
# below); only if a binary is missing is `make build` run. Needs bash, awk, coreutils, a Linux
# /proc, nvidia-smi for GPU memory and curl (else bash's /dev/tcp) for the metrics. Disk: the dev
# S3 server keeps a job's intermediates until it completes (an 8-layer 8B GPTQ job: tens of GB of
# activations and float64 Hessian partials), under BENCH_DIR.
#
# Environment (bad values: one line, exit 2):
#   GPUS               GPUs to use (default: nvidia-smi's count, else 4)
#   DEVICE             workers' --device: cuda (default) or cpu (a dry run without GPUs)
#   POOL               the workers' and the job's pool (default gpu with DEVICE=cuda, else cpu)
#   FORMATS            comma-separated, gptq and/or awq (default gptq,awq)
#   WORKER_COUNTS      worker counts, one run each (default "1 $GPUS"; with DEVICE=cuda at most GPUS);
#                      the 1-worker run is the reference for speed-up and identity
#   LAYERS             layers of the generated model (default 8; ignored if GEN_ARGS has --layers;
#                      the per-layer numbers use the model's config.json either way)
#   SAMPLES            calibration samples (default 128); SEQLEN tokens per sample (default 2048)
#   SHARD_SAMPLES      samples per shard (default min(32, SAMPLES / largest worker count), so that
#                      there are at least as many shards as workers)
#   GEN_ARGS           genmodel's shape flags (default "--hidden 4096 --intermediate 14336 --heads 32
#                      --kv-heads 8 --vocab 32000", plus --layers LAYERS)
#   MODEL              an existing checkpoint directory instead of a generated one
#   KILL               1: the SIGKILL run above (default 0); KILL_AT (% of tasks done, default 30),
#                      KILL_WORKER (index, default the last), KILL_RESTART (seconds, default 2)
#   ACK_WAIT           the dispatcher's --ack-wait (a Go duration; default its own, 1m)
#   WORKER_GOMAXPROCS  GOMAXPROCS of each worker (default unset: all cores)
#   WORKER_STARTUP     seconds to wait for a worker to start (device selected, pulling; default 180)
#   BENCH_DIR          work directory: the generated model (reused across runs of the same shape),
#                      each run's checkpoint ckpt-<format>-<workers>[-kill] (default: a new
#                      temporary directory, kept)
#   OUT                results directory (default BENCH_DIR/results)
#   BIN_DIR            where the binaries are (default <repo>/bin); QF DISPATCHER WORKER ASSEMBLER
#                      GENMODEL name them one by one
#   SHARED             the shared data directory (default <repo>/../shared); TOKENIZER_DIR (default
#                      SHARED/models/tiny-llama), CALIB (default SHARED/data/calib.txt)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
FB_NAME=bench-multigpu.sh
# shellcheck source=scripts/fleet-bench-lib.sh
. "$ROOT/scripts/fleet-bench-lib.sh"
[ $# -eq 0 ] || fb_die "takes no arguments (options are environment variables; see its header)"

posint() { [[ $2 =~ ^[1-9][0-9]*$ ]] || fb_die "$1 must be a positive integer, not '$2'"; }

HAVE_SMI=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then HAVE_SMI=1; fi
if [ -z "${GPUS:-}" ]; then
  GPUS=4
  [ $HAVE_SMI = 1 ] && GPUS=$(nvidia-smi -L | grep -c '^GPU ')
fi
posint GPUS "$GPUS"
DEVICE=${DEVICE:-cuda}
case "$DEVICE" in cuda) POOL=${POOL:-gpu} ;; cpu) POOL=${POOL:-cpu} ;; *) fb_die "DEVICE must be cuda or cpu, not '$DEVICE'" ;; esac
[[ $POOL =~ ^[a-z0-9][a-z0-9_-]*$ ]] || fb_die "POOL must be a pool name such as gpu, not '$POOL'"
FORMATS=${FORMATS:-gptq,awq}
FORMAT_LIST=()
IFS=, read -r -a _fmts <<<"$FORMATS"
for f in "${_fmts[@]}"; do
  case "$f" in gptq | awq) FORMAT_LIST+=("$f") ;; *) fb_die "FORMATS must list gptq and/or awq, not '$f'" ;; esac
done
[ ${#FORMAT_LIST[@]} -gt 0 ] || fb_die "FORMATS is empty"
LAYERS=${LAYERS:-8}
posint LAYERS "$LAYERS"
SAMPLES=${SAMPLES:-128}
posint SAMPLES "$SAMPLES"
SEQLEN=${SEQLEN:-2048}
posint SEQLEN "$SEQLEN"
WORKER_COUNTS=${WORKER_COUNTS:-"1 $GPUS"}
MAXN=0
for n in $WORKER_COUNTS; do
  posint "WORKER_COUNTS entry" "$n"
  [ "$DEVICE" = cuda ] && [ "$n" -gt "$GPUS" ] && fb_die "WORKER_COUNTS entry $n exceeds GPUS=$GPUS (one worker per GPU)"
  [ "$n" -gt "$MAXN" ] && MAXN=$n
done
[ "$MAXN" -gt 0 ] || fb_die "WORKER_COUNTS is empty"
if [ -z "${SHARD_SAMPLES:-}" ]; then
  SHARD_SAMPLES=$((SAMPLES / MAXN))
  [ "$SHARD_SAMPLES" -gt 32 ] && SHARD_SAMPLES=32
  [ "$SHARD_SAMPLES" -lt 1 ] && SHARD_SAMPLES=1
fi
posint SHARD_SAMPLES "$SHARD_SAMPLES"
KILL=${KILL:-0}
case "$KILL" in 0 | 1) ;; *) fb_die "KILL must be 0 or 1, not '$KILL'" ;; esac
KILL_AT=${KILL_AT:-30}
[[ $KILL_AT =~ ^[0-9]+$ ]] && [ "$KILL_AT" -le 99 ] || fb_die "KILL_AT must be a percentage 0-99, not '$KILL_AT'"
KILL_WORKER=${KILL_WORKER:-$((MAXN - 1))}
[[ $KILL_WORKER =~ ^[0-9]+$ ]] && [ "$KILL_WORKER" -lt "$MAXN" ] || fb_die "KILL_WORKER must be a worker index below $MAXN, not '$KILL_WORKER'"
KILL_RESTART=${KILL_RESTART:-2}
[[ $KILL_RESTART =~ ^[0-9]+(\.[0-9]+)?$ ]] || fb_die "KILL_RESTART must be seconds, not '$KILL_RESTART'"
ACK_WAIT=${ACK_WAIT:-}
[ -z "$ACK_WAIT" ] || [[ $ACK_WAIT =~ ^[0-9]+(\.[0-9]+)?(ms|s|m|h)$ ]] || fb_die "ACK_WAIT must be a Go duration such as 20s, not '$ACK_WAIT'"
WORKER_GOMAXPROCS=${WORKER_GOMAXPROCS:-}
[ -z "$WORKER_GOMAXPROCS" ] || posint WORKER_GOMAXPROCS "$WORKER_GOMAXPROCS"
WORKER_STARTUP=${WORKER_STARTUP:-180}
posint WORKER_STARTUP "$WORKER_STARTUP"
GEN_ARGS=${GEN_ARGS:-"--hidden 4096 --intermediate 14336 --heads 32 --kv-heads 8 --vocab 32000"}
[[ " $GEN_ARGS " == *" --layers "* || " $GEN_ARGS " == *" --layers="* ]] || GEN_ARGS="$GEN_ARGS --layers $LAYERS"
SHARED=${SHARED:-$ROOT/../shared}
TOKENIZER_DIR=${TOKENIZER_DIR:-$SHARED/models/tiny-llama}
CALIB=${CALIB:-$SHARED/data/calib.txt}

fb_bins
[ -f "$CALIB" ] || fb_die "calibration text $CALIB not found (set CALIB or SHARED)"
if [ -n "${MODEL:-}" ]; then
  [ -f "$MODEL/config.json" ] || fb_die "MODEL=$MODEL has no config.json"
else
  [ -d "$TOKENIZER_DIR" ] || fb_die "tokenizer directory $TOKENIZER_DIR not found (set TOKENIZER_DIR or SHARED)"
fi
[ "$DEVICE" = cuda ] && [ $HAVE_SMI = 0 ] && echo "warning: DEVICE=cuda but no working nvidia-smi: GPU memory is not measured" >&2

WORK=${BENCH_DIR:-$(mktemp -d /tmp/quantfleet-multigpu.XXXXXX)}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
OUT=${OUT:-$WORK/results}
mkdir -p "$OUT/logs"
OUT=$(cd "$OUT" && pwd)

fb_model "$WORK" "$GEN_ARGS" "$TOKENIZER_DIR"
MODEL=$(cd "$MODEL" && pwd)
# cfg KEY: an integer field of the model's config.json.
cfg() { tr -d ' \n\t' <"$MODEL/config.json" | grep -o "\"$1\":[0-9]*" | head -n 1 | cut -d: -f2; }
NL=$(cfg num_hidden_layers)
HID=$(cfg hidden_size)
FFN=$(cfg intermediate_size)
NH=$(cfg num_attention_heads)
NKV=$(cfg num_key_value_heads)
NKV=${NKV:-$NH}
# The linear weights of one layer (q, k, v, o, gate, up, down): to scale seconds per layer to a 70B
# layer (hidden 8192, 64/8 heads, ffn 28672: 855.6 M).
LAYER_PARAMS=$(awk -v h="$HID" -v f="$FFN" -v nh="$NH" -v nkv="$NKV" 'BEGIN { printf "%.0f", h*h*2 + 2*h*(h/nh*nkv) + 3*h*f }')
P70=$(awk 'BEGIN { printf "%.0f", 8192*8192*2 + 2*8192*1024 + 3*8192*28672 }')

# Disk: the dev S3 server keeps a job's intermediates until it completes: per layer and shard the
# activations (float32) and, for GPTQ, the float64 Hessian partials of q/k/v, o, gate/up (hidden²)
# and down (ffn²); AWQ's statistics are not counted (an underestimate).
SHARDS=$(((SAMPLES + SHARD_SAMPLES - 1) / SHARD_SAMPLES))
NEED_GB=0
for f in "${FORMAT_LIST[@]}"; do
  NEED_GB=$(awk -v l="$NL" -v s="$SHARDS" -v t=$((SHARD_SAMPLES * SEQLEN)) -v h="$HID" -v ff="$FFN" -v gptq=$([ "$f" = gptq ] && echo 1 || echo 0) \
    -v prev="$NEED_GB" 'BEGIN { g = l * s * (t * h * 4 + gptq * 8 * (3 * h * h + ff * ff)) / 1e9; printf "%.1f", (g > prev ? g : prev) }')
done
FREE_GB=$(df -P -k "$WORK" | awk 'NR == 2 { printf "%.0f", $4 / 1e6 }')
if awk -v n="$NEED_GB" -v f="$FREE_GB" 'BEGIN { exit !(f < n) }'; then
  echo "warning: a job's intermediates need about $NEED_GB GB under $WORK, only $FREE_GB GB free (set BENCH_DIR elsewhere)" >&2
fi

if [ "$DEVICE" = cuda ] && [ $HAVE_SMI = 1 ]; then
  CARD=$(nvidia-smi --query-gpu=name --format=csv,noheader -i 0 | head -n 1)
else
  CARD="cpu ($(nproc) cores)"
fi

JOB_COMMON=(--level 4bit --group-size 128 --calibration-data "$CALIB" --calibration-samples "$SAMPLES" --seqlen "$SEQLEN"
  --shard-samples "$SHARD_SAMPLES" --pool "$POOL" --model-name "$(basename "$MODEL")")
job_flags() { # FORMAT: the job's format flags
  case "$1" in
    gptq) JOB_FLAGS=(--format gptq --act-order --sym=false) ;;
    awq) JOB_FLAGS=(--format awq) ;;
  esac
}

# The table shows only rows of this model, calibration and device (earlier runs under OUT may differ).
SIG="$MODEL|$SAMPLES|$SEQLEN|$SHARD_SAMPLES|$DEVICE|$CARD"
SIGSUM=$(echo "$SIG" | cksum | awk '{ print $1 }') # names the 1-worker run's manifest in BENCH_DIR

# --- one run ---------------------------------------------------------------------------------
PIDS=()     # servers, dispatcher, assembler, samplers of the current run
WORKERS=()  # "index pid port" of the current run's live workers
SLOTS=""    # $RUN_LOGS/slots: every worker process the run started, "index pid port"
stop_all() {
  local w p
  for w in "${WORKERS[@]}"; do
    # shellcheck disable=SC2086
    set -- $w
    kill -TERM "$2" 2>/dev/null || true
  done
  for w in "${WORKERS[@]}"; do
    # shellcheck disable=SC2086
    set -- $w
    wait "$2" 2>/dev/null || true
  done
  WORKERS=()
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}
trap stop_all EXIT

# start_worker INDEX: worker INDEX on GPU INDEX; appends to WORKERS and the slots file once it
# has started (a port taken meanwhile: tried again on another).
start_worker() {
  local i=$1 port log pid t try
  for try in 1 2 3; do
    fb_port port
    log=$RUN_LOGS/worker-$i.log
    [ -e "$log" ] && log=$RUN_LOGS/worker-$i-$(date +%s)-$try.log
    (
      [ -n "$WORKER_GOMAXPROCS" ] && export GOMAXPROCS=$WORKER_GOMAXPROCS
      export CUDA_VISIBLE_DEVICES=$i CUDA_DEVICE_ORDER=PCI_BUS_ID LOG_LEVEL=info
      exec "$WORKER" --http-addr "127.0.0.1:$port" --name "gpu$i" --pool "$POOL" --device "$DEVICE"
    ) >"$log" 2>&1 &
    pid=$!
    echo "$i $pid $port" >>"$SLOTS"
    t=0
    until grep -q '"worker started"' "$log" 2>/dev/null; do
      if ! kill -0 "$pid" 2>/dev/null; then
        wait "$pid" 2>/dev/null || true
        grep -q "address already in use" "$log" && continue 2
        echo "$FB_NAME: worker $i (GPU $i) exited at start: $(grep -v '^\s*$' "$log" | tail -n 1)" >&2
        return 1
      fi
      t=$((t + 1))
      if [ $t -gt $((WORKER_STARTUP * 10)) ]; then
        WORKERS+=("$i $pid $port")
        echo "$FB_NAME: worker $i did not start within ${WORKER_STARTUP}s (see $log)" >&2
        return 1
      fi
      sleep 0.1
    done
    WORKERS+=("$i $pid $port")
    grep -o '"gpu":"[^"]*"' "$log" | head -n 1 | sed "s/^/   worker $i: /" || true
    return 0
  done
  echo "$FB_NAME: worker $i: no free port for its /metrics after 3 tries (see $log)" >&2
  return 1
}

# sampler: every 0.2 s each worker's VmHWM (KiB) → rss.txt "index pid kib"; every second its
# /metrics → metrics/<pid>.prom (the last scrape kept).
sampler() {
  set +e
  local k=0 line i pid port key val hwm
  while :; do
    while read -r i pid port; do
      [ -r "/proc/$pid/status" ] || continue
      hwm=
      while read -r key val _; do [ "$key" = VmHWM: ] && hwm=$val && break; done <"/proc/$pid/status"
      [ -n "$hwm" ] && echo "$i $pid $hwm"
      if [ $((k % 5)) = 0 ]; then
        fb_http_get "http://127.0.0.1:$port/metrics" >"$RUN_LOGS/metrics/$pid.tmp" && [ -s "$RUN_LOGS/metrics/$pid.tmp" ] &&
          mv "$RUN_LOGS/metrics/$pid.tmp" "$RUN_LOGS/metrics/$pid.prom"
      fi
    done <"$SLOTS"
    k=$((k + 1))
    sleep 0.2
  done >>"$RUN_LOGS/rss.txt"
}

# metric FILE NAME: the value of an unlabelled counter or the sum of a labelled one.
metric() { awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $2 } END { printf "%.0f", s }' "$2" 2>/dev/null || echo 0; }
varz_bytes() { fb_http_get "$FB_NATS_MONITOR/varz" | tr -d ' \n' | grep -o '"\(in\|out\)_bytes":[0-9]*' | cut -d: -f2 | awk '{ s += $1 } END { printf "%.0f", s }'; }

# kill_one JOB: SIGKILL worker KILL_WORKER once KILL_AT % of the tasks are done, while it runs a
# task, then restart it; sets KILL_NOTE.
kill_one() {
  local job=$1 pct w pid port t
  KILL_NOTE="job ended before the kill"
  while kill -0 "$SUBMIT_PID" 2>/dev/null; do
    pct=$("$QF" status "$job" --json 2>/dev/null | tr -d ' \n' | grep -o '"progress_percentage":[0-9.]*' | head -n 1 | cut -d: -f2)
    [ -n "$pct" ] && awk -v p="$pct" -v a="$KILL_AT" 'BEGIN { exit !(p >= a) }' && break
    sleep 0.5
  done
  kill -0 "$SUBMIT_PID" 2>/dev/null || return 0
  for w in "${WORKERS[@]}"; do
    # shellcheck disable=SC2086
    set -- $w
    [ "$1" = "$KILL_WORKER" ] && pid=$2 && port=$3
  done
  local busy=no
  for t in $(seq 300); do # up to 30 s for it to hold a task
    [ "$(fb_http_get "http://127.0.0.1:$port/metrics" | awk '$1 ~ /^quantfleet_worker_tasks_in_flight/ { s += $2 } END { print s + 0 }')" -gt 0 ] &&
      busy=yes && break
    kill -0 "$SUBMIT_PID" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid"
  wait "$pid" 2>/dev/null || true
  local keep=()
  for w in "${WORKERS[@]}"; do
    # shellcheck disable=SC2086
    set -- $w
    [ "$2" = "$pid" ] || keep+=("$w")
  done
  WORKERS=("${keep[@]}")
  KILL_NOTE="worker $KILL_WORKER SIGKILLed at $(printf '%.0f' "$pct")% of tasks ($([ $busy = yes ] && echo "holding a task" || echo "idle: no task seen in 30 s")), restarted after ${KILL_RESTART}s"
  echo "   $KILL_NOTE"
  sleep "$KILL_RESTART"
  start_worker "$KILL_WORKER" || KILL_NOTE="$KILL_NOTE; the restart FAILED"
}

# run_one FORMAT N KILLED(0|1): one job on a fresh fleet; appends to results.tsv and results.jsonl.
run_one() {
  local fmt=$1 n=$2 killed=$3 tag i
  tag=$fmt-$n$([ "$killed" = 1 ] && echo -kill || true)
  RUN_LOGS=$OUT/logs/$tag
  rm -rf "$RUN_LOGS"
  mkdir -p "$RUN_LOGS/metrics"
  SLOTS=$RUN_LOGS/slots
  : >"$SLOTS"
  local data=$WORK/servers-$tag ck=$WORK/ckpt-$tag
  rm -rf "$data"
  echo "== $fmt, $n worker(s)$([ "$killed" = 1 ] && echo ", one SIGKILLed mid-job" || true)"
  fb_servers "$data" "$RUN_LOGS/servers.log" monitor || { kill "$FB_SERVERS_PID" 2>/dev/null; exit 1; }
  PIDS+=("$FB_SERVERS_PID")
  local dflags=(--http-addr "")
  [ -n "$ACK_WAIT" ] && dflags+=(--ack-wait "$ACK_WAIT")
  "$DISPATCHER" "${dflags[@]}" >"$RUN_LOGS/dispatcher.log" 2>&1 &
  PIDS+=($!)
  "$ASSEMBLER" --http-addr "" >"$RUN_LOGS/assembler.log" 2>&1 &
  PIDS+=($!)
  local t0 url
  t0=$(now)
  url=$("$QF" upload --model "$MODEL" --verbosity quiet)
  echo "   upload $(elapsed "$t0" "$(now)") s"

  # GPU memory in use before the workers (per GPU), then the samplers.
  local smi=()
  if [ $HAVE_SMI = 1 ]; then
    nvidia-smi --query-gpu=index,memory.used --format=csv,noheader,nounits >"$RUN_LOGS/gpu-before.csv" 2>/dev/null || true
  fi
  for i in $(seq 0 $((n - 1))); do start_worker "$i" || exit 1; done
  if [ $HAVE_SMI = 1 ]; then
    nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits -lms 200 >"$RUN_LOGS/gpu-apps.csv" 2>/dev/null &
    smi+=($!)
    nvidia-smi --query-gpu=index,memory.used --format=csv,noheader,nounits -lms 200 >"$RUN_LOGS/gpu-used.csv" 2>/dev/null &
    smi+=($!)
  fi
  sampler &
  local samp=$!
  PIDS+=("${smi[@]}" "$samp")

  job_flags "$fmt"
  local nats0 rc=0 job="" wall
  KILL_NOTE=""
  nats0=$(varz_bytes)
  t0=$(now)
  # submit, then watch: the job id is known while it runs (submit --wait prints it at the end).
  if "$QF" submit --model "$url" "${JOB_COMMON[@]}" "${JOB_FLAGS[@]}" --output-name ckpt --verbosity quiet \
    >"$RUN_LOGS/submit.out" 2>"$RUN_LOGS/submit.err"; then
    job=$(awk '{ print $1; exit }' "$RUN_LOGS/submit.out")
    "$QF" watch "$job" --verbosity quiet >"$RUN_LOGS/watch.out" 2>"$RUN_LOGS/watch.err" &
    SUBMIT_PID=$!
    KILL_NOTE=""
    [ "$killed" = 1 ] && kill_one "$job"
    wait "$SUBMIT_PID" || rc=$?
  else
    rc=$?
  fi
  wall=$(elapsed "$t0" "$(now)")
  local nats1 w pid port
  nats1=$(varz_bytes)
  for w in "${WORKERS[@]}"; do # the last scrape, before the workers stop
    # shellcheck disable=SC2086
    set -- $w
    fb_http_get "http://127.0.0.1:$3/metrics" >"$RUN_LOGS/metrics/$2.tmp" && [ -s "$RUN_LOGS/metrics/$2.tmp" ] &&
      mv "$RUN_LOGS/metrics/$2.tmp" "$RUN_LOGS/metrics/$2.prom"
  done
  sleep 0.3 # one more RSS sample

  local ident="ref" err=""
  if [ $rc = 0 ]; then
    rm -rf "$ck" "$ck.d"
    if "$QF" get "$job" --output-dir "$ck.d" --verbosity quiet >/dev/null 2>"$RUN_LOGS/get.err"; then
      mv "$ck.d/ckpt" "$ck"
      rm -rf "$ck.d"
      fb_manifest "$ck" >"$RUN_LOGS/manifest.sha256"
      if [ "$n" != 1 ] || [ "$killed" = 1 ]; then
        if [ -f "$WORK/ref-$fmt-$SIGSUM.sha256" ]; then
          if cmp -s "$RUN_LOGS/manifest.sha256" "$WORK/ref-$fmt-$SIGSUM.sha256"; then ident=yes; else ident=NO; fi
        else
          ident="no 1-worker run"
        fi
      else
        cp "$RUN_LOGS/manifest.sha256" "$WORK/ref-$fmt-$SIGSUM.sha256"
      fi
    else
      err="get: $(tail -n 1 "$RUN_LOGS/get.err")"
    fi
  else
    err="job did not complete (exit $rc): $(cat "$RUN_LOGS/submit.err" "$RUN_LOGS/watch.err" 2>/dev/null | grep -v '^\s*$' | tail -n 1)"
  fi
  stop_all
  rm -rf "$data"
  if [ "$killed" = 1 ] && [ -n "$KILL_NOTE" ]; then # the killed task(s), done again by a later delivery
    KILL_NOTE="$KILL_NOTE; $(cat "$RUN_LOGS"/worker-*.log | grep '"msg":"task done"' | grep -c '"delivery":[2-9]' || true) task(s) finished on a redelivery"
  fi
  [ -n "$err" ] && echo "   ERROR: $err" && ident=-

  # Per worker index: peak RSS (max over its processes), peak GPU memory.
  local rss="" gpu="" gmark="" mw=0 mtr=0 mr=0 f v
  for i in $(seq 0 $((n - 1))); do
    v=$(awk -v i="$i" '$1 == i && $3 > m { m = $3 } END { printf "%.0f", m / 1024 }' "$RUN_LOGS/rss.txt")
    rss="$rss${rss:+/}$v"
    if [ $HAVE_SMI = 1 ]; then
      v=$(awk -F', *' -v i="$i" 'NR == FNR { if ($1 == i) p[$2] = 1; next } ($1 in p) && $2 + 0 > m { m = $2 + 0 } END { print m + 0 }' \
        <(awk '{ print $1 ", " $2 }' "$SLOTS") "$RUN_LOGS/gpu-apps.csv")
      if [ "$v" = 0 ]; then # PIDs not visible: the GPU's memory.used above its use before the run
        v=$(awk -F', *' -v i="$i" 'NR == FNR { if ($1 == i) b = $2; next } $1 == i && $2 + 0 > m { m = $2 + 0 } END { print (m > b ? m - b : 0) }' \
          "$RUN_LOGS/gpu-before.csv" "$RUN_LOGS/gpu-used.csv")
        gmark="*"
      fi
      gpu="$gpu${gpu:+/}$v"
    fi
  done
  [ -z "$gpu" ] && gpu=n/a || gpu="$gpu$gmark"
  for f in "$RUN_LOGS"/metrics/*.prom; do
    [ -f "$f" ] || continue
    mw=$((mw + $(metric quantfleet_worker_written_bytes_total "$f")))
    mr=$((mr + $(metric quantfleet_worker_read_bytes_total "$f")))
    mtr=$((mtr + $(metric quantfleet_worker_task_read_bytes_total "$f")))
  done
  local natsb=$((nats1 - nats0))
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$fmt" "$n" "$killed" "$wall" "$NL" "$gpu" "$rss" \
    "$mw" "$mr" "$mtr" "$natsb" "$ident" "${err:-$KILL_NOTE}" "$CARD" "$SIG" >>"$OUT/results.tsv"
  printf '{"card":"%s","device":"%s","format":"%s","workers":%s,"killed":%s,"wall_s":%s,"layers":%s,"seconds_per_layer":%s,"peak_gpu_mib":"%s","peak_rss_mib":"%s","s3_written_bytes":%s,"s3_read_model_bytes":%s,"s3_read_job_bytes":%s,"nats_bytes":%s,"identical":"%s","samples":%s,"seqlen":%s,"shard_samples":%s,"gen_args":"%s","note":"%s","time":"%s"}\n' \
    "$CARD" "$DEVICE" "$fmt" "$n" "$([ "$killed" = 1 ] && echo true || echo false)" "$wall" "$NL" "$(awk -v w="$wall" -v l="$NL" 'BEGIN { printf "%.3f", w / l }')" \
    "$gpu" "$rss" "$mw" "$mr" "$mtr" "$natsb" "$ident" "$SAMPLES" "$SEQLEN" "$SHARD_SAMPLES" "$GEN_ARGS" "${err:-$KILL_NOTE}" "$(date -u +%FT%TZ)" >>"$OUT/results.jsonl"
  echo "   wall $wall s, identical to 1 worker: $ident"
}

echo "card: $CARD; model $MODEL ($NL layers, hidden $HID, ffn $FFN, $NH/$NKV heads); $SAMPLES × $SEQLEN tokens, $SHARD_SAMPLES per shard ($SHARDS shards); intermediates ~$NEED_GB GB, $FREE_GB GB free"
for fmt in "${FORMAT_LIST[@]}"; do
  for n in $WORKER_COUNTS; do run_one "$fmt" "$n" 0; done
  [ "$KILL" = 1 ] && run_one "$fmt" "$MAXN" 1
done

# --- the table, from every run recorded under OUT (the latest of each format/workers/kill) ------
awk -F'\t' -v sig="$SIG" -v samples="$SAMPLES" -v seqlen="$SEQLEN" -v shard="$SHARD_SAMPLES" -v lp="$LAYER_PARAMS" -v p70="$P70" \
  -v shape="hidden $HID, ffn $FFN, $NH/$NKV heads, $NL layers" '
function mb(b) { return sprintf("%.1f", b / 1e6) }
$15 != sig { next }
{ k = $1 SUBSEP $2 SUBSEP $3; if (!(k in row)) order[++nk] = k; row[k] = $0 }
END {
  printf "model: synthetic Llama (%s, bf16), %s × %s calibration tokens, %s samples per shard; GPTQ 4-bit g128 act-order asym, AWQ 4-bit g128\n\n", shape, samples, seqlen, shard
  print "| card | format | workers | wall s | s / layer | speed-up | peak GPU MiB per worker | peak RSS MiB per worker | S3 written / read per layer (MB) | NATS MB per layer | identical to 1 worker |"
  print "|---|---|---|---|---|---|---|---|---|---|---|"
  for (j = 1; j <= nk; j++) {
    split(row[order[j]], f, "\t")
    if (f[2] == 1 && f[3] == 0) base[f[1]] = f[4] / f[5]
  }
  for (j = 1; j <= nk; j++) {
    split(row[order[j]], f, "\t")
    spl = f[4] / f[5]
    su = (f[1] in base) ? sprintf("%.2fx", base[f[1]] / spl) : "-"
    w = f[2] (f[3] == 1 ? " (1 SIGKILLed)" : "")
    printf "| %s | %s | %s | %.1f | %.2f | %s | %s | %s | %s / %s | %s | %s |\n", f[14], f[1], w, f[4], spl, su, f[6], f[7], \
      mb(f[8] / f[5]), mb((f[9] + f[10]) / f[5]), mb(f[11] / f[5]), f[12]
    if (f[3] == 0 && (!(f[1] in best) || f[2] > bestn[f[1]])) { best[f[1]] = spl; bestn[f[1]] = f[2] }
    if (f[13] != "") notes = notes sprintf("- %s, %s workers%s: %s\n", f[1], f[2], f[3] == 1 ? " (kill run)" : "", f[13])
  }
  print ""
  for (fm in best) {
    s = best[fm]
    printf "extrapolation, %s on %s worker(s), %.2f s/layer: 32-layer 8B %.1f min; 80-layer 70B %.1f min (s/layer × 80), %.1f min scaled to a 70B layer (× %.2f its linear weights)\n", \
      fm, bestn[fm], s, s * 32 / 60, s * 80 / 60, s * 80 * p70 / lp / 60, p70 / lp
    if (fm in base && bestn[fm] > 1) printf "  1 worker: %.2f s/layer → 32-layer 8B %.1f min, 80-layer 70B %.1f min (× %.2f: %.1f min)\n", \
      base[fm], base[fm] * 32 / 60, base[fm] * 80 / 60, p70 / lp, base[fm] * 80 * p70 / lp / 60
  }
  if (notes != "") printf "\n%s", notes
  print "\nwall = submit to COMPLETED (planning, layer-0 inputs, tasks, assembly, read-back); s / layer = wall / layers; GPU MiB: nvidia-smi by PID (* = the GPU'"'"'s memory.used above its use before the run); S3 = the workers'"'"' /metrics (written; read = source tensors + job objects); NATS = the server'"'"'s in+out bytes"
}' "$OUT/results.tsv" | tee "$OUT/bench.md"
echo "results: $OUT/bench.md, $OUT/results.jsonl, logs in $OUT/logs; checkpoints in $WORK"
