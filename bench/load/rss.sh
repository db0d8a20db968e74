#!/usr/bin/env bash
# Resident memory of the proxy under a steady load: does it stay flat? (A long-running gateway
# whose memory grows with the requests it has served runs out of it.)
#
#   cargo build --release --example proxy --example mock_upstream
#   bench/load/rss.sh [nonstream|stream]
#
# Starts the mock upstream and one proxy (TOML's tables appended to its configuration; default
# bench/load/usage-on.toml: usage accounting on, with a JSONL file), loads it with oha at RATE
# requests a second for SECONDS, and reads the proxy's VmRSS every STEP seconds. Prints each
# reading, then the growth from the first reading to the last in KiB and in bytes per request.
# Knobs (environment): RATE (5000; streams: 500), DURATION (24), STEP (4), PROXY_THREADS (1),
# BIN (target/release/examples/proxy), TOML, STREAM_USAGE (1).
# Seen (BENCHMARKS.md, "Usage", twenty-third pass): flat (within ~1 MiB) with mimalloc 2 and 3,
# accounting on, non-streamed and streamed; a test build that leaked each record grew by ~500
# bytes a request.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
source bench/lib.sh

SCENARIO=${1:-nonstream}
case $SCENARIO in
nonstream) RATE=${RATE:-5000} ;;
stream) RATE=${RATE:-500} ;;
*)
    echo "usage: $0 [nonstream|stream]" >&2
    exit 2
    ;;
esac
DURATION=${DURATION:-24}
STEP=${STEP:-4}
PROXY_THREADS=${PROXY_THREADS:-1}
BIN=${BIN:-target/release/examples/proxy}
TOML=${TOML:-bench/load/usage-on.toml}
STREAM_USAGE=${STREAM_USAGE:-1}
MOCK=target/release/examples/mock_upstream

OHA=$(find_oha "$ROOT")
[[ -n $OHA ]] || { echo "oha not found: cargo install oha --locked --root target/bench-tools" >&2; exit 1; }
[[ -x $BIN && -x $MOCK ]] || { echo "build first: cargo build --release --example proxy --example mock_upstream" >&2; exit 1; }

DIR=$(mktemp -d)
PIDS=()
trap 'stop_pids; rm -rf "$DIR"' EXIT
read -r MOCK_PORT PORT < <(free_ports 2)
"$MOCK" --listen "127.0.0.1:$MOCK_PORT" >"$DIR/mock.log" 2>&1 &
PIDS+=($!)
wait_port "$MOCK_PORT" "$!" || { echo "the mock upstream did not start" >&2; exit 1; }
mock_config "$PORT" "$MOCK_PORT" >"$DIR/proxy.toml"
sed "s|/tmp/chatgate-loadbench-usage.jsonl|$DIR/usage.jsonl|" "$TOML" >>"$DIR/proxy.toml"
RUST_LOG=${RUST_LOG:-warn} TOKIO_WORKER_THREADS=$PROXY_THREADS "$BIN" --config "$DIR/proxy.toml" >"$DIR/proxy.log" 2>&1 &
PROXY=$!
PIDS+=("$PROXY")
wait_port "$PORT" "$PROXY" || { cat "$DIR/proxy.log" >&2; exit 1; }

MESSAGES='[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write a haiku about load balancers."}]'
if [[ $SCENARIO == stream ]]; then
    if [[ $STREAM_USAGE == 0 ]]; then OPTIONS=; else OPTIONS=',"stream_options":{"include_usage":true}'; fi
    printf '{"model":"mock","messages":%s,"max_tokens":128,"stream":true%s,"mock_chunks":50}' "$MESSAGES" "$OPTIONS" >"$DIR/body.json"
else
    printf '{"model":"mock","messages":%s,"max_tokens":128}' "$MESSAGES" >"$DIR/body.json"
fi

rss() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$PROXY/status"; }
"$OHA" -z "${DURATION}s" -c 32 -q "$RATE" --no-tui --output-format json -m POST \
    -H 'content-type: application/json' -D "$DIR/body.json" \
    "http://127.0.0.1:$PORT/v1/chat/completions" >"$DIR/oha.json" 2>/dev/null &
LOAD=$!
sleep 1
FIRST=$(rss)
FIRST_AT=$SECONDS
echo "rss_kib at +1 s: $FIRST"
LAST=$FIRST
LAST_AT=$FIRST_AT
while kill -0 "$LOAD" 2>/dev/null; do
    sleep "$STEP"
    kill -0 "$LOAD" 2>/dev/null || break
    LAST=$(rss)
    LAST_AT=$SECONDS
    echo "rss_kib at +$((LAST_AT - FIRST_AT + 1)) s: $LAST"
done
# The requests between the first reading and the last (at RATE).
ELAPSED=$((LAST_AT - FIRST_AT))
wait "$LOAD" || true
python3 - "$FIRST" "$LAST" "$ELAPSED" "$RATE" <<'EOF'
import sys
first, last, elapsed, rate = (float(a) for a in sys.argv[1:])
requests = max(elapsed * rate, 1)
print(f"growth: {last - first:+.0f} KiB over ~{elapsed:.0f} s, {(last - first) * 1024 / requests:+.1f} bytes a request")
EOF
