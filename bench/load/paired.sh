#!/usr/bin/env bash
# Paired load benchmark: two chatgate proxies loaded at the same time, at the same fixed rate,
# and the CPU time per request of each measured over the same seconds. For an A/B of one binary
# with a feature on and off (by default usage accounting: bench/load/usage-on.toml against
# bench/load/usage-off.toml) on a shared, noisy machine.
#
#   cargo build --release --example proxy --example mock_upstream
#   bench/load/paired.sh [nonstream|stream|both]
#
# Why paired: bench/load/run.sh measures its targets one after the other; on a machine whose speed
# drifts by tens of percent from one few-second window to the next (seen here: the same binary and
# configuration at 19.7 and 28.4 µs per request a round apart), a 10% difference between two
# targets is lost in it. Here both proxies see the same disturbances, so their ratio, round by
# round, is steady (the same configuration on both sides reads 0.99–1.00).
#
# Each round runs two oha clients at once for DURATION seconds, one per proxy, each at RATE
# requests per second with LAT_CONCURRENCY connections; the CPU time of each proxy (all threads,
# also those that ended) is divided by its count of HTTP 200 answers. Printed: each round's CPU
# per request and the ratio B / A, then the median and range of the ratios.
#
# The CPU time is read from a cgroup of each proxy's own when the script may make one (cgroup v1
# `cpuacct.usage` or v2 `cpu.stat`, to the nanosecond or microsecond: run as root); otherwise from
# utime+stime in /proc/PID/stat, in clock ticks of 10 ms, which at 500 streams a second for 8 s
# is one part in about fifty of a round's figure. The header line says which.
# The proxies run with TOKIO_WORKER_THREADS=$PROXY_THREADS (default 1), as in run.sh.
#
# Knobs (environment): ROUNDS (7), DURATION (8), WARMUP (2), RATE_NONSTREAM (5000),
# RATE_STREAM (500; 50 chunks each), STREAM_USAGE (1: the streams ask for usage with
# stream_options.include_usage; 0: they do not), STREAM_USAGE_A / STREAM_USAGE_B (STREAM_USAGE,
# for one side's clients only: e.g. the same proxy with streams that ask for usage and streams
# that do not), LAT_CONCURRENCY (32), PROXY_THREADS (1),
# BIN_A / BIN_B (target/release/examples/proxy), TOML_A (bench/load/usage-off.toml),
# TOML_B (bench/load/usage-on.toml), LABEL_A (off), LABEL_B (on), RESULTS_DIR.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
source bench/lib.sh

SCENARIOS=${1:-both}
case $SCENARIOS in
nonstream | stream) ;;
both) SCENARIOS="nonstream stream" ;;
*)
    echo "usage: $0 [nonstream|stream|both]" >&2
    exit 2
    ;;
esac
ROUNDS=${ROUNDS:-7}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
RATE_NONSTREAM=${RATE_NONSTREAM:-5000}
RATE_STREAM=${RATE_STREAM:-500}
LAT_CONCURRENCY=${LAT_CONCURRENCY:-32}
PROXY_THREADS=${PROXY_THREADS:-1}
EXAMPLES="$ROOT/target/release/examples"
BIN_A=${BIN_A:-$EXAMPLES/proxy}
BIN_B=${BIN_B:-$EXAMPLES/proxy}
TOML_A=${TOML_A:-bench/load/usage-off.toml}
TOML_B=${TOML_B:-bench/load/usage-on.toml}
LABEL_A=${LABEL_A:-off}
LABEL_B=${LABEL_B:-on}
RESULTS_DIR=${RESULTS_DIR:-target/loadbench/paired-$(date +%Y%m%d-%H%M%S)}
STREAM_USAGE=${STREAM_USAGE:-1}
STREAM_USAGE_A=${STREAM_USAGE_A:-$STREAM_USAGE}
STREAM_USAGE_B=${STREAM_USAGE_B:-$STREAM_USAGE}
CHUNKS=50

log() { printf '[paired %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

OHA=$(find_oha "$ROOT")
[[ -n $OHA ]] || die "oha not found: cargo install oha --locked --root target/bench-tools"
command -v python3 >/dev/null || die "python3 is needed"
for bin in "$BIN_A" "$BIN_B" "$EXAMPLES/mock_upstream"; do
    [[ -x $bin ]] || die "$bin missing: cargo build --release --example proxy --example mock_upstream"
done

# Where each proxy's CPU time is read: a cgroup of its own (exact) when one can be made.
CGROUP_KIND=
CGROUP_BASE=
if [[ -w /sys/fs/cgroup/cpuacct ]]; then
    CGROUP_KIND=v1 CGROUP_BASE=/sys/fs/cgroup/cpuacct
elif [[ -f /sys/fs/cgroup/cgroup.controllers && -w /sys/fs/cgroup ]]; then
    CGROUP_KIND=v2 CGROUP_BASE=/sys/fs/cgroup
elif [[ -f /sys/fs/cgroup/unified/cgroup.controllers && -w /sys/fs/cgroup/unified ]]; then
    CGROUP_KIND=v2 CGROUP_BASE=/sys/fs/cgroup/unified
fi
declare -A CGROUP_OF
# in_cgroup SIDE PID: moves the proxy (every thread, and those it starts later) into a cgroup
# of its own; without one, its CPU time is read from /proc.
in_cgroup() {
    [[ -n $CGROUP_KIND ]] || return 0
    local dir="$CGROUP_BASE/chatgate-paired-$$-$1"
    if mkdir "$dir" 2>/dev/null && echo "$2" >"$dir/cgroup.procs" 2>/dev/null; then
        CGROUP_OF[$1]=$dir
    else
        rmdir "$dir" 2>/dev/null || true
    fi
}
remove_cgroups() {
    local dir
    for dir in "${CGROUP_OF[@]}"; do rmdir "$dir" 2>/dev/null || true; done
}
# cpu_ns SIDE: the proxy's CPU time so far, in nanoseconds.
cpu_ns() {
    local dir=${CGROUP_OF[$1]:-}
    [[ -n $CGROUP_KIND ]] || dir=
    if [[ -n $dir && $CGROUP_KIND == v1 ]]; then
        cat "$dir/cpuacct.usage"
    elif [[ -n $dir ]]; then
        # printf: mawk (Debian's default awk) prints large numbers in exponent form.
        awk '$1 == "usage_usec" { printf "%.0f\n", $2 * 1000 }' "$dir/cpu.stat"
    else
        awk -v tick_ns=$((1000000000 / $(getconf CLK_TCK))) '{ printf "%.0f\n", ($14 + $15) * tick_ns }' "/proc/${PID_OF[$1]}/stat"
    fi
}

mkdir -p "$RESULTS_DIR"
RESULTS_DIR=$(cd "$RESULTS_DIR" && pwd)
PIDS=()
trap 'stop_pids; remove_cgroups' EXIT
trap 'exit 130' INT TERM

read -r MOCK_PORT PORT_A PORT_B < <(free_ports 3)

"$EXAMPLES/mock_upstream" --listen "127.0.0.1:$MOCK_PORT" >"$RESULTS_DIR/mock.log" 2>&1 &
PIDS+=($!)
wait_port "$MOCK_PORT" "$!" || die "the mock upstream did not start"

# start SIDE PORT BIN TOML: one proxy in front of the mock, with TOML's tables appended.
declare -A PID_OF
start() {
    local side=$1 port=$2 bin=$3 extra=$4
    mock_config "$port" "$MOCK_PORT" >"$RESULTS_DIR/$side.toml"
    # A JSONL path in the tables is made this run's own.
    sed "s|/tmp/chatgate-loadbench-usage.jsonl|$RESULTS_DIR/$side-usage.jsonl|" "$extra" >>"$RESULTS_DIR/$side.toml"
    TOKIO_WORKER_THREADS=$PROXY_THREADS "$bin" --config "$RESULTS_DIR/$side.toml" >"$RESULTS_DIR/$side.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    wait_port "$port" "$pid" || die "proxy $side did not start (see $RESULTS_DIR/$side.log)"
    PID_OF[$side]=$pid
    in_cgroup "$side" "$pid"
}
start a "$PORT_A" "$BIN_A" "$TOML_A"
start b "$PORT_B" "$BIN_B" "$TOML_B"

MESSAGES='[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write a haiku about load balancers."}]'
for side in a b; do
    printf '{"model":"mock","messages":%s,"max_tokens":128}' "$MESSAGES" >"$RESULTS_DIR/nonstream-$side.json"
    # With STREAM_USAGE=0 the client does not ask for usage: the meter asks the upstream for it
    # and removes the usage chunk from the stream (the common case of the official clients).
    usage=$STREAM_USAGE_A
    [[ $side == b ]] && usage=$STREAM_USAGE_B
    if [[ $usage == 0 ]]; then STREAM_OPTIONS=; else STREAM_OPTIONS=',"stream_options":{"include_usage":true}'; fi
    printf '{"model":"mock","messages":%s,"max_tokens":128,"stream":true%s,"mock_chunks":%d}' \
        "$MESSAGES" "$STREAM_OPTIONS" "$CHUNKS" >"$RESULTS_DIR/stream-$side.json"
done

# load PORT RATE SECONDS BODY OUT: one oha run at a fixed rate.
load() {
    "$OHA" -z "${3}s" -c "$LAT_CONCURRENCY" -q "$2" --no-tui --output-format json -m POST \
        -H 'content-type: application/json' -D "$4" "http://127.0.0.1:$1/v1/chat/completions" >"$5" 2>/dev/null
}

TSV="$RESULTS_DIR/rounds.tsv"
printf 'scenario\tround\tcpu_a_us\tcpu_b_us\tratio\n' >"$TSV"
if [[ -n ${CGROUP_OF[a]:-} && -n ${CGROUP_OF[b]:-} ]]; then
    log "CPU time from cgroup $CGROUP_KIND accounting (exact)"
else
    # Both sides are read the same way.
    CGROUP_KIND=
    log "CPU time from /proc/PID/stat (clock ticks; run as root for exact cgroup accounting)"
fi
for scenario in $SCENARIOS; do
    rate=$RATE_NONSTREAM
    [[ $scenario == stream ]] && rate=$RATE_STREAM
    body_a="$RESULTS_DIR/$scenario-a.json"
    body_b="$RESULTS_DIR/$scenario-b.json"
    log "$scenario: warm-up"
    load "$PORT_A" "$rate" "$WARMUP" "$body_a" /dev/null &
    wa=$!
    load "$PORT_B" "$rate" "$WARMUP" "$body_b" /dev/null &
    wait "$wa" "$!"
    for ((round = 1; round <= ROUNDS; round++)); do
        a0=$(cpu_ns a)
        b0=$(cpu_ns b)
        load "$PORT_A" "$rate" "$DURATION" "$body_a" "$RESULTS_DIR/$scenario-$round-a.json" &
        wa=$!
        load "$PORT_B" "$rate" "$DURATION" "$body_b" "$RESULTS_DIR/$scenario-$round-b.json" &
        wait "$wa" "$!"
        a1=$(cpu_ns a)
        b1=$(cpu_ns b)
        python3 - "$scenario" "$round" "$((a1 - a0))" "$((b1 - b0))" \
            "$RESULTS_DIR/$scenario-$round-a.json" "$RESULTS_DIR/$scenario-$round-b.json" >>"$TSV" <<'PY'
import json, sys
scenario, rnd, ta, tb = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:5])
def ok(path):
    return json.load(open(path))["statusCodeDistribution"].get("200", 0)
na, nb = ok(sys.argv[5]), ok(sys.argv[6])
ca, cb = ta / 1000 / max(na, 1), tb / 1000 / max(nb, 1)
print(f"{scenario}\t{rnd}\t{ca:.2f}\t{cb:.2f}\t{cb / ca if ca else 0:.3f}")
PY
        log "$(tail -n 1 "$TSV")"
    done
done

python3 - "$TSV" "$LABEL_A" "$LABEL_B" <<'PY' | tee "$RESULTS_DIR/results.md"
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
a, b = sys.argv[2], sys.argv[3]
print(f"| scenario | rounds | CPU µs/request, {a} (median) | {b} (median) | {b} / {a}, median of rounds | range |")
print("|---|---|---|---|---|---|")
for scenario in dict.fromkeys(r["scenario"] for r in rows):
    rs = [r for r in rows if r["scenario"] == scenario]
    ratios = [float(r["ratio"]) for r in rs]
    ca = statistics.median(float(r["cpu_a_us"]) for r in rs)
    cb = statistics.median(float(r["cpu_b_us"]) for r in rs)
    print(f"| {scenario} | {len(rs)} | {ca:.1f} | {cb:.1f} | **{statistics.median(ratios):.3f}** | {min(ratios):.3f}–{max(ratios):.3f} |")
PY
log "files: $RESULTS_DIR"
