# fleet-bench-lib.sh — what bench-scale.sh and bench-multigpu.sh share; sourced, not run.
#
# The sourcing script sets ROOT (the repository root) and may set FB_NAME (its name in error lines).
# Provides: fb_die, fb_bins (the prebuilt binaries), fb_model (the generated model), now, elapsed,
# fb_port, fb_servers (NATS + S3 of a one-machine fleet), fb_http_get, fb_manifest.
# Needs bash, awk, coreutils and a Linux /proc; curl is used when present (else bash's /dev/tcp).

FB_NAME=${FB_NAME:-$(basename "$0")}

# fb_die MESSAGE: one line on stderr, exit 2 (bad input).
fb_die() {
  echo "$FB_NAME: $*" >&2
  exit 2
}

# fb_bins: QF, DISPATCHER, WORKER, ASSEMBLER, GENMODEL — as named in the environment, else
# BIN_DIR/<name> (BIN_DIR default ROOT/bin, what `make build` writes). A named one that is not
# there is one line and exit 2; only when one under BIN_DIR is missing is `make build` run, which
# needs Go (without Go: one line, exit 2).
fb_bins() {
  local v b missing=()
  for v in QF DISPATCHER WORKER ASSEMBLER GENMODEL; do # named ones must be there
    [ -n "${!v:-}" ] && [ ! -x "${!v}" ] && fb_die "$v=${!v} is not an executable file"
  done
  BIN_DIR=${BIN_DIR:-$ROOT/bin}
  QF=${QF:-$BIN_DIR/quantfleet}
  DISPATCHER=${DISPATCHER:-$BIN_DIR/dispatcher}
  WORKER=${WORKER:-$BIN_DIR/worker}
  ASSEMBLER=${ASSEMBLER:-$BIN_DIR/assembler}
  GENMODEL=${GENMODEL:-$BIN_DIR/genmodel}
  for b in "$QF" "$DISPATCHER" "$WORKER" "$ASSEMBLER" "$GENMODEL"; do [ -x "$b" ] || missing+=("$b"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v go >/dev/null ||
    fb_die "missing binaries (${missing[*]}) and no Go toolchain to build them: set QF, DISPATCHER, WORKER, ASSEMBLER, GENMODEL or BIN_DIR"
  echo "== building the binaries (make build; missing: ${missing[*]})"
  make -C "$ROOT" build >/dev/null || fb_die "make build failed (missing: ${missing[*]})"
  for b in "${missing[@]}"; do [ -x "$b" ] || fb_die "$b still missing after make build (it writes $ROOT/bin)"; done
}

# fb_model WORK "GEN_ARGS" TOKENIZER_DIR: sets MODEL to a generated checkpoint of that shape under
# WORK (generated once per shape, reused), unless MODEL is already set.
fb_model() {
  [ -n "${MODEL:-}" ] && return 0
  MODEL=$1/model-$(echo "$2" | cksum | awk '{print $1}')
  if [ ! -f "$MODEL/config.json" ]; then
    echo "== generating the synthetic model ($2) in $MODEL"
    # shellcheck disable=SC2086 # the shape is a list of flags
    "$GENMODEL" --out "$MODEL" --tokenizer "$3" $2
  fi
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# fb_port VAR: sets VAR to a port nothing listens on (bash's /dev/tcp connects only where one
# does), that this shell has not handed out before, and below the kernel's ephemeral range (where
# outgoing connections take their local ports, which a listener then could not bind).
FB_PORTS=" "
FB_PORT_TOP=$(awk '{ print ($1 > 12000 ? $1 : 32768) }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
fb_port() {
  local p
  while :; do
    p=$((10000 + RANDOM % (FB_PORT_TOP - 10000)))
    case "$FB_PORTS" in *" $p "*) continue ;; esac
    (: <"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
    FB_PORTS="$FB_PORTS$p "
    printf -v "$1" '%s' "$p"
    return
  done
}

# fb_servers DATA_DIR LOG [monitor]: starts `quantfleet dev-servers` (NATS with JetStream + S3) on
# free ports with DATA_DIR as its store and waits until it serves; exports the fleet's connection
# environment (NATS_URL, S3_*, AWS_* with a fresh secret, LOG_LEVEL=warn) and sets FB_SERVERS_PID;
# with "monitor" also the NATS monitoring endpoint, FB_NATS_MONITOR (its base URL, /varz beneath).
# Returns non-zero (one line on stderr) if it does not serve within 30 s; the caller stops it.
fb_servers() {
  local dir=$1 log=$2 nats s3 mon="" extra=()
  fb_port nats
  fb_port s3
  FB_NATS_MONITOR=
  if [ "${3:-}" = monitor ]; then
    fb_port mon
    extra=(--nats-http-addr "127.0.0.1:$mon")
    FB_NATS_MONITOR=http://127.0.0.1:$mon
  fi
  export NATS_URL=nats://127.0.0.1:$nats S3_ENDPOINT=127.0.0.1:$s3 S3_INSECURE=true S3_BUCKET=quantfleet
  export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret-$RANDOM$RANDOM LOG_LEVEL=warn
  "$QF" dev-servers --dir "$dir" --nats-addr "127.0.0.1:$nats" --s3-addr "127.0.0.1:$s3" "${extra[@]}" >"$log" 2>&1 &
  FB_SERVERS_PID=$!
  local _
  for _ in $(seq 300); do
    grep -q s3_endpoint "$log" 2>/dev/null && return 0
    kill -0 "$FB_SERVERS_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "$FB_NAME: dev-servers did not start: $(tail -n 1 "$log")" >&2
  return 1
}

# fb_http_get URL: the body of a plain-HTTP GET on 127.0.0.1 (curl, else bash's /dev/tcp).
fb_http_get() {
  if command -v curl >/dev/null; then
    curl -fsS --max-time 5 "$1" 2>/dev/null
    return
  fi
  local rest=${1#http://} hostport path
  hostport=${rest%%/*}
  path=/${rest#*/}
  [ "$rest" = "$hostport" ] && path=/
  (
    exec 3<>"/dev/tcp/${hostport%:*}/${hostport#*:}" || exit 1
    printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$path" "$hostport" >&3
    sed '1,/^\r\{0,1\}$/d' <&3
  ) 2>/dev/null
}

# fb_manifest DIR: "sha256  ./path" of every file under DIR, sorted by path.
fb_manifest() {
  (cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
}
