# Helpers shared by the benchmark scripts (sourced, not run).

# free_ports N: prints N free loopback ports, on one line.
free_ports() {
    python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
' "$1"
}

# wait_port PORT [PID] [TRIES]: waits (0.1 s a try, 100 tries by default) until PORT accepts
# connections; gives up early when PID is given and no longer runs.
wait_port() {
    local port=$1 pid=${2:-} tries=${3:-100} i
    for ((i = 0; i < tries; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
        sleep 0.1
    done
    return 1
}

# stop_pids: stops every process in the array PIDS and waits for it.
stop_pids() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}

# mock_config LISTEN_PORT MOCK_PORT: prints a proxy configuration listening on LISTEN_PORT,
# with one model, "mock", routed to the mock upstream on MOCK_PORT.
mock_config() {
    cat <<TOML
listen = "127.0.0.1:$1"

[[models]]
name = "mock"

[[models.upstreams]]
url = "http://127.0.0.1:$2/v1"
TOML
}
