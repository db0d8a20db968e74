#!/usr/bin/env bash
# Load benchmark of chatgate's proxy against a bare hyper pass-through and nginx, on loopback only.
#
#   bench/load/run.sh
#   CHATGATE_PROXY_ARGS="--config bench/load/chatgate.toml" bench/load/run.sh   # with chatgate's proxy
#
# Targets, all in front of one mock OpenAI upstream (examples/mock_upstream.rs):
#   direct       the mock itself (no proxy)
#   passthrough  examples/passthrough.rs, the smallest correct hyper reverse proxy: the baseline
#   chatgate     target/release/examples/proxy (or $CHATGATE_PROXY_BIN) with $CHATGATE_PROXY_ARGS;
#                included when both exist. This script writes bench/load/chatgate.toml first (listen
#                port, model "mock" routed to the mock), so the proxy is started with that config; in
#                the arguments, @PORT@ and @UPSTREAM_PORT@ stand for the proxy's and the mock's ports.
#   chatgate_base  a second chatgate proxy binary ($CHATGATE_BASE_BIN, e.g. the previous commit's), with
#                the same configuration on its own port: before/after comparisons in one run.
#                CHATGATE_EXTRA_TOML / CHATGATE_BASE_EXTRA_TOML name files appended to the
#                chatgate / chatgate_base configuration: one binary with a feature on and off, e.g.
#                the usage comparison (bench/load/usage-on.toml against bench/load/usage-off.toml)
#   nginx        Debian's nginx as a plain reverse proxy (bench/load/nginx.conf), 1 worker process
# Scenarios: non-streamed completions, and streamed ones of 50 chunks (+ usage chunk + [DONE]).
# For each scenario and target, interleaved in rounds (direct, passthrough, chatgate, nginx, direct…):
#   saturation  oha at fixed concurrency for a fixed duration: req/s (HTTP 200 only), and the CPU time
#               (utime+stime from /proc/PID/stat, all threads, nginx master+worker) per request;
#   fixed rate  oha -q at one rate for every target (by default a quarter of the slowest target's saturation
#               throughput), with latency correction: p50 and p99 latency (whole response, body included),
#               and CPU time per request at that load.
# Rust proxies run with TOKIO_WORKER_THREADS=$PROXY_THREADS (default 1), nginx with 1 worker: one
# thread of execution for requests each. The mock and oha get the machine's default.
#
# Output: a Markdown table on stdout and in $RESULTS_DIR/results.md (raw oha JSON and logs beside it).
# With the defaults the measuring takes about 5 minutes with four targets; building is extra (and the
# first run may install oha into target/bench-tools and nginx with apt-get).
#
# Knobs (environment): ROUNDS (3), DURATION (6, seconds per saturation run), LAT_DURATION (6),
# WARMUP (2), CONCURRENCY (64), LAT_CONCURRENCY (32), RATE_NONSTREAM / RATE_STREAM (auto or req/s),
# RATE_FRACTION (0.25), PROXY_THREADS (1), TARGETS (direct,passthrough,chatgate,nginx),
# CHATGATE_PROXY_ARGS, CHATGATE_PROXY_BIN, CHATGATE_BASE_BIN, CHATGATE_EXTRA_TOML,
# CHATGATE_BASE_EXTRA_TOML, CHATGATE_PATH (/v1/chat/completions), RESULTS_DIR,
# SKIP_BUILD (0).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
source bench/lib.sh

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-6}
LAT_DURATION=${LAT_DURATION:-6}
WARMUP=${WARMUP:-2}
CONCURRENCY=${CONCURRENCY:-64}
LAT_CONCURRENCY=${LAT_CONCURRENCY:-32}
RATE_NONSTREAM=${RATE_NONSTREAM:-auto}
RATE_STREAM=${RATE_STREAM:-auto}
RATE_FRACTION=${RATE_FRACTION:-0.25}
PROXY_THREADS=${PROXY_THREADS:-1}
CHATGATE_BASE_BIN=${CHATGATE_BASE_BIN:-}
if [[ -n $CHATGATE_BASE_BIN ]]; then
    TARGETS=${TARGETS:-direct,passthrough,chatgate_base,chatgate,nginx}
else
    TARGETS=${TARGETS:-direct,passthrough,chatgate,nginx}
fi
CHATGATE_PATH=${CHATGATE_PATH:-/v1/chat/completions}
CHUNKS=50
RESULTS_DIR=${RESULTS_DIR:-target/loadbench/$(date +%Y%m%d-%H%M%S)}
TOOLS_ROOT="$ROOT/target/bench-tools"
LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
EXAMPLES="$ROOT/target/release/examples"
CHATGATE_PROXY_BIN=${CHATGATE_PROXY_BIN:-$EXAMPLES/proxy}

log() { printf '[loadbench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}
wants() { [[ ",$TARGETS," == *",$1,"* ]]; }

mkdir -p "$RESULTS_DIR/raw" "$RESULTS_DIR/logs"
RESULTS_DIR=$(cd "$RESULTS_DIR" && pwd)
RUNS="$RESULTS_DIR/runs.tsv"
: >"$RUNS"
TMP=$(mktemp -d /tmp/chatgate-loadbench.XXXXXX)
chmod 755 "$TMP" # nginx's worker runs as nobody and must reach its temp paths
PIDS=()

cleanup() {
    stop_pids
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- tools -----------------------------------------------------------------------------------------
OHA=$(command -v oha || true)
if [[ -z $OHA && -x $TOOLS_ROOT/bin/oha ]]; then OHA=$TOOLS_ROOT/bin/oha; fi
if [[ -z $OHA ]]; then
    log "oha not found: cargo install oha --locked --root $TOOLS_ROOT (once; takes a few minutes)"
    nice -n 10 cargo install oha --locked --root "$TOOLS_ROOT" >"$RESULTS_DIR/logs/oha-install.log" 2>&1 ||
        die "installing oha failed, see $RESULTS_DIR/logs/oha-install.log"
    OHA=$TOOLS_ROOT/bin/oha
fi
"$OHA" --help | grep -q -- '--output-format' || die "$OHA has no --output-format (need oha >= 1.5)"
"$OHA" --help | grep -q -- '--latency-correction' || die "$OHA has no --latency-correction"
if wants nginx && ! command -v nginx >/dev/null; then
    log "nginx not found: apt-get install -y nginx"
    { apt-get install -y nginx || { apt-get update && apt-get install -y nginx; }; } \
        >"$RESULTS_DIR/logs/nginx-install.log" 2>&1 || die "installing nginx failed"
fi
command -v python3 >/dev/null || die "python3 is needed for the report"

# --- build -----------------------------------------------------------------------------------------
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    log "building the mock upstream and the pass-through (release)"
    nice -n 10 cargo build --release --example mock_upstream --example passthrough
    if wants chatgate && [[ -f examples/proxy.rs ]]; then
        log "building chatgate's proxy (release)"
        nice -n 10 cargo build --release --example proxy || log "warning: the proxy did not build; skipping it"
    fi
fi
[[ -x $EXAMPLES/mock_upstream && -x $EXAMPLES/passthrough ]] || die "release examples missing in $EXAMPLES"

# --- ports, configs, request bodies ----------------------------------------------------------------
read -r MOCK_PORT PT_PORT CG_PORT NGINX_PORT CGB_PORT < <(free_ports 5)

{
    echo "# Written by bench/load/run.sh for this run: chatgate's proxy in front of the mock upstream."
    mock_config "$CG_PORT" "$MOCK_PORT"
} >bench/load/chatgate.toml

sed -e "s|127.0.0.1:$CG_PORT|127.0.0.1:$CGB_PORT|" bench/load/chatgate.toml >"$TMP/chatgate_base.toml"
# Tables appended to one target's configuration: the same binary with and without a feature.
if [[ -n ${CHATGATE_BASE_EXTRA_TOML:-} ]]; then cat "$CHATGATE_BASE_EXTRA_TOML" >>"$TMP/chatgate_base.toml"; fi
if [[ -n ${CHATGATE_EXTRA_TOML:-} ]]; then cat "$CHATGATE_EXTRA_TOML" >>bench/load/chatgate.toml; fi

sed -e "s|@PREFIX@|$TMP|g" -e "s|@UPSTREAM_PORT@|$MOCK_PORT|g" -e "s|@LISTEN_PORT@|$NGINX_PORT|g" \
    bench/load/nginx.conf >"$TMP/nginx.conf"

MESSAGES='[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write a haiku about load balancers."}]'
printf '{"model":"mock","messages":%s,"max_tokens":128}' "$MESSAGES" >"$RESULTS_DIR/nonstream.json"
printf '{"model":"mock","messages":%s,"max_tokens":128,"stream":true,"stream_options":{"include_usage":true},"mock_chunks":%d}' \
    "$MESSAGES" "$CHUNKS" >"$RESULTS_DIR/stream.json"

# --- processes -------------------------------------------------------------------------------------
declare -A URL CPU_PIDS
MOCK_PID=

# start NAME PORT PATH COMMAND...: starts a target in the background and waits for its port.
start() {
    local name=$1 port=$2 path=$3
    shift 3
    "$@" >"$RESULTS_DIR/logs/$name.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    if ! wait_port "$port" "$pid"; then
        log "warning: $name did not come up on port $port (see $RESULTS_DIR/logs/$name.log); skipping it"
        return 1
    fi
    URL[$name]="http://127.0.0.1:$port$path"
    CPU_PIDS[$name]=$pid
    log "$name listening on ${URL[$name]} (pid $pid)"
}

start direct "$MOCK_PORT" /v1/chat/completions "$EXAMPLES/mock_upstream" --listen "127.0.0.1:$MOCK_PORT" ||
    die "the mock upstream did not start"
MOCK_PID=${CPU_PIDS[direct]}
ACTIVE=()
wants direct && ACTIVE+=(direct)
if wants passthrough; then
    TOKIO_WORKER_THREADS=$PROXY_THREADS start passthrough "$PT_PORT" /v1/chat/completions \
        "$EXAMPLES/passthrough" --listen "127.0.0.1:$PT_PORT" --upstream "http://127.0.0.1:$MOCK_PORT" &&
        ACTIVE+=(passthrough)
fi
if wants chatgate; then
    if [[ -x $CHATGATE_PROXY_BIN && -n ${CHATGATE_PROXY_ARGS:-} ]]; then
        args=${CHATGATE_PROXY_ARGS//@UPSTREAM_PORT@/$MOCK_PORT}
        args=${args//@PORT@/$CG_PORT}
        cp bench/load/chatgate.toml "$RESULTS_DIR/chatgate.toml"
        # Word splitting of the arguments is intended.
        # shellcheck disable=SC2086
        TOKIO_WORKER_THREADS=$PROXY_THREADS start chatgate "$CG_PORT" "$CHATGATE_PATH" \
            "$CHATGATE_PROXY_BIN" $args && ACTIVE+=(chatgate)
    else
        log "chatgate skipped: needs $CHATGATE_PROXY_BIN and CHATGATE_PROXY_ARGS (e.g. --config bench/load/chatgate.toml)"
    fi
fi
if wants chatgate_base; then
    if [[ -x $CHATGATE_BASE_BIN ]]; then
        TOKIO_WORKER_THREADS=$PROXY_THREADS start chatgate_base "$CGB_PORT" "$CHATGATE_PATH" \
            "$CHATGATE_BASE_BIN" --config "$TMP/chatgate_base.toml" && ACTIVE+=(chatgate_base)
    else
        log "chatgate_base skipped: CHATGATE_BASE_BIN ($CHATGATE_BASE_BIN) is not an executable"
    fi
fi
if wants nginx; then
    if start nginx "$NGINX_PORT" /v1/chat/completions nginx -p "$TMP" -c "$TMP/nginx.conf" -e "$TMP/error.log"; then
        ACTIVE+=(nginx)
        sleep 0.2 # let the worker fork
    fi
fi

# The PIDs whose CPU time counts for a target: the process and its children (nginx's worker).
pids_of() {
    local pid=${CPU_PIDS[$1]}
    # Word splitting of pgrep's lines is intended.
    # shellcheck disable=SC2046
    echo "$pid" $(pgrep -P "$pid" || true)
}

# cpu_ticks PID...: utime+stime of all threads of these processes, in clock ticks.
cpu_ticks() {
    local total=0 pid t
    for pid in "$@"; do
        # Fields 14 and 15, counted after the parenthesised command name (which may hold spaces).
        t=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat" 2>/dev/null || echo 0)
        total=$((total + t))
    done
    echo "$total"
}

# --- sanity: every target answers both scenarios correctly -----------------------------------------
CHECKED=()
for t in "${ACTIVE[@]}"; do
    ok=1
    code=$(curl -sS -o "$TMP/check.json" -w '%{http_code}' --max-time 10 -H 'content-type: application/json' \
        -H 'authorization: Bearer sk-loadbench' --data-binary "@$RESULTS_DIR/nonstream.json" "${URL[$t]}") || ok=0
    if [[ $ok == 1 && $code == 200 ]] && python3 -c '
import json, sys
body = json.load(open(sys.argv[1]))
assert body["object"] == "chat.completion" and body["usage"]["total_tokens"] > 0' "$TMP/check.json"; then :; else
        ok=0
    fi
    code=$(curl -sS -N -o "$TMP/check.sse" -w '%{http_code}' --max-time 10 -H 'content-type: application/json' \
        -H 'authorization: Bearer sk-loadbench' --data-binary "@$RESULTS_DIR/stream.json" "${URL[$t]}") || ok=0
    chunks=$(grep -c '"object":"chat.completion.chunk"' "$TMP/check.sse" || true)
    if [[ $code != 200 || $chunks -lt $CHUNKS ]] || ! grep -q '^data: \[DONE\]' "$TMP/check.sse"; then ok=0; fi
    if [[ $ok == 1 ]]; then
        CHECKED+=("$t")
    else
        log "warning: $t failed the sanity check (HTTP $code; responses in $RESULTS_DIR/logs); skipping it"
        cp "$TMP/check.json" "$RESULTS_DIR/logs/$t-check.json" 2>/dev/null || true
        cp "$TMP/check.sse" "$RESULTS_DIR/logs/$t-check.sse" 2>/dev/null || true
    fi
done
ACTIVE=("${CHECKED[@]}")
((${#ACTIVE[@]} > 0)) || die "no target passed the sanity check"

n=${#ACTIVE[@]}
estimate=$((2 * n * (WARMUP + ROUNDS * (DURATION + LAT_DURATION + 2))))
log "targets: ${ACTIVE[*]}; about ${estimate}s of load from now"
((estimate <= 900)) || log "warning: that is more than 15 minutes; lower ROUNDS or DURATION"

# run_oha PHASE SCENARIO TARGET ROUND SECONDS OHA-ARGS...: one measured run, appended to runs.tsv.
run_oha() {
    local phase=$1 scenario=$2 target=$3 round=$4 seconds=$5
    shift 5
    local out="$RESULTS_DIR/raw/$phase-$scenario-$target-$round.json"
    local pids proxy_before mock_before proxy_after mock_after
    pids=$(pids_of "$target")
    # shellcheck disable=SC2086
    proxy_before=$(cpu_ticks $pids)
    mock_before=$(cpu_ticks "$MOCK_PID")
    if ! timeout $((seconds + 30)) "$OHA" --no-tui --output-format json -o "$out" -z "${seconds}s" \
        -m POST -T application/json -H 'authorization: Bearer sk-loadbench' \
        -D "$RESULTS_DIR/$scenario.json" "$@" "${URL[$target]}" >>"$RESULTS_DIR/logs/oha.log" 2>&1; then
        log "warning: oha failed for $phase $scenario $target round $round"
        return 0
    fi
    # shellcheck disable=SC2086
    proxy_after=$(cpu_ticks $pids)
    mock_after=$(cpu_ticks "$MOCK_PID")
    if [[ $target == direct ]]; then proxy_before=0 proxy_after=0; fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$phase" "$scenario" "$target" "$round" "$out" \
        $((proxy_after - proxy_before)) $((mock_after - mock_before)) >>"$RUNS"
}

SCENARIOS=(nonstream stream)

log "warm-up"
for scenario in "${SCENARIOS[@]}"; do
    for t in "${ACTIVE[@]}"; do
        timeout $((WARMUP + 30)) "$OHA" --no-tui --output-format quiet -z "${WARMUP}s" -c "$CONCURRENCY" \
            -m POST -T application/json -D "$RESULTS_DIR/$scenario.json" "${URL[$t]}" >/dev/null 2>&1 || true
    done
done

for ((round = 1; round <= ROUNDS; round++)); do
    for scenario in "${SCENARIOS[@]}"; do
        for t in "${ACTIVE[@]}"; do
            log "saturation round $round/$ROUNDS: $scenario → $t (-c $CONCURRENCY, ${DURATION}s)"
            run_oha sat "$scenario" "$t" "$round" "$DURATION" -c "$CONCURRENCY"
        done
    done
done

declare -A RATE
for scenario in "${SCENARIOS[@]}"; do
    if [[ $scenario == stream ]]; then rate=$RATE_STREAM; else rate=$RATE_NONSTREAM; fi
    if [[ $rate == auto ]]; then
        rate=$(python3 "$ROOT/bench/load/report.py" rate "$RUNS" "$scenario" "$RATE_FRACTION")
    fi
    RATE[$scenario]=$rate
    log "fixed rate for $scenario: $rate req/s"
done

for ((round = 1; round <= ROUNDS; round++)); do
    for scenario in "${SCENARIOS[@]}"; do
        for t in "${ACTIVE[@]}"; do
            log "fixed-rate round $round/$ROUNDS: $scenario → $t (-q ${RATE[$scenario]}, ${LAT_DURATION}s)"
            run_oha lat "$scenario" "$t" "$round" "$LAT_DURATION" -c "$LAT_CONCURRENCY" \
                -q "${RATE[$scenario]}" --latency-correction
        done
    done
done

python3 "$ROOT/bench/load/report.py" table "$RUNS" \
    --clk-tck "$(getconf CLK_TCK)" \
    --setting "rounds=$ROUNDS" --setting "saturation=${DURATION}s at -c $CONCURRENCY" \
    --setting "fixed rate=${LAT_DURATION}s at -c $LAT_CONCURRENCY, nonstream ${RATE[nonstream]} req/s, stream ${RATE[stream]} req/s" \
    --setting "proxy threads=$PROXY_THREADS (TOKIO_WORKER_THREADS; nginx worker_processes 1)" \
    --setting "stream=$CHUNKS chunks + usage + [DONE]" \
    --setting "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    --setting "machine=$(nproc) cores, load average at start: $LOADAVG_START" \
    --setting "tools: $("$OHA" --version | head -1); $(nginx -v 2>&1 | head -1 || true)" \
    >"$RESULTS_DIR/results.md"
cat "$RESULTS_DIR/results.md"
log "results: $RESULTS_DIR/results.md"
