#!/usr/bin/env bash
# Instructions per request of the proxy with usage accounting off and on, counted by callgrind:
# deterministic where the load bench is noisy (up to a few hundred instructions: where the
# usage writer cuts its batches depends on timing). See BENCHMARKS.md, "Usage".
#
#   cargo build --release --example proxy --example mock_upstream
#   bench/callgrind/usage.sh [nonstream|stream] [REQUESTS]
#
# Each proxy runs under `valgrind --tool=callgrind` in front of the mock upstream, one request
# at a time on one keep-alive connection; the count is zeroed after a warm-up and dumped after
# REQUESTS requests (default 2000; 500 for streams of 50 chunks; STREAM_USAGE=0: streams that
# do not ask for usage). Needs valgrind (with
# callgrind_control) and python3. Writes its files under $OUT (default: a temporary directory).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

SCENARIO=${1:-nonstream}
case $SCENARIO in
nonstream) N=${2:-2000} ;;
stream) N=${2:-500} ;;
*)
    echo "usage: $0 [nonstream|stream] [REQUESTS]" >&2
    exit 2
    ;;
esac
WARMUP=300
BIN=${CHATGATE_PROXY_BIN:-target/release/examples/proxy}
MOCK=target/release/examples/mock_upstream
for tool in valgrind callgrind_control callgrind_annotate python3; do
    command -v "$tool" >/dev/null || { echo "$tool not found" >&2; exit 1; }
done
[[ -x $BIN && -x $MOCK ]] || { echo "build first: cargo build --release --example proxy --example mock_upstream" >&2; exit 1; }

OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
read -r MOCK_PORT OFF_PORT ON_PORT < <(free_ports 3)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT

# Under valgrind a proxy takes a while to listen: up to 2 minutes.
listening() {
    wait_port "$1" "" 1200 || { echo "nothing listens on port $1" >&2; return 1; }
}

"$MOCK" --listen "127.0.0.1:$MOCK_PORT" >"$OUT/mock.log" 2>&1 &
PIDS+=($!)
listening "$MOCK_PORT"

MESSAGES='[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write a haiku about load balancers."}]'
if [[ $SCENARIO == stream ]]; then
    # STREAM_USAGE=0: the client does not ask for usage (the meter asks the upstream for it and
    # removes the usage chunk from the stream).
    if [[ ${STREAM_USAGE:-1} == 0 ]]; then OPTIONS=; else OPTIONS=',"stream_options":{"include_usage":true}'; fi
    printf '{"model":"mock","messages":%s,"max_tokens":128,"stream":true%s,"mock_chunks":50}' "$MESSAGES" "$OPTIONS" >"$OUT/body.json"
else
    printf '{"model":"mock","messages":%s,"max_tokens":128}' "$MESSAGES" >"$OUT/body.json"
fi
cat >"$OUT/client.py" <<'PY'
import http.client, sys
port, body, n = int(sys.argv[1]), open(sys.argv[2], "rb").read(), int(sys.argv[3])
c = http.client.HTTPConnection("127.0.0.1", port)
for _ in range(n):
    c.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
    r = c.getresponse()
    data = r.read()
    assert r.status == 200, (r.status, data[:200])
PY

# Prints the instructions per request of the proxy started with `config` on `port`.
count() {
    local name=$1 port=$2 config=$3
    valgrind --tool=callgrind --callgrind-out-file="$OUT/$name.out" "$BIN" --config "$config" \
        >"$OUT/$name.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    listening "$port"
    python3 "$OUT/client.py" "$port" "$OUT/body.json" "$WARMUP"
    callgrind_control -z "$pid" >/dev/null 2>&1
    python3 "$OUT/client.py" "$port" "$OUT/body.json" "$N"
    sleep 0.5 # the usage writer's last batch
    callgrind_control -d "$pid" >/dev/null 2>&1
    kill -INT "$pid"
    wait "$pid" || true
    local total
    total=$(callgrind_annotate "$OUT/$name.out.1" 2>/dev/null |
        awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')
    echo $((total / N))
}

for side in off on; do
    port=$OFF_PORT
    [[ $side == on ]] && port=$ON_PORT
    mock_config "$port" "$MOCK_PORT" >"$OUT/$side.toml"
done
cat bench/load/usage-off.toml >>"$OUT/off.toml"
sed "s|/tmp/chatgate-loadbench-usage.jsonl|$OUT/usage.jsonl|" bench/load/usage-on.toml >>"$OUT/on.toml"

off=$(count off "$OFF_PORT" "$OUT/off.toml")
on=$(count on "$ON_PORT" "$OUT/on.toml")
python3 -c "
off, on = $off, $on
print(f'$SCENARIO: instructions per request, usage off {off:,}, on {on:,} (+{on - off:,}): on / off = {on / off:.3f}')
"
echo "files: $OUT"
