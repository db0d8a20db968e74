# Helpers shared by the benchmark scripts (sourced, not run).

# free_ports N: prints N free loopback ports, on one line, once they are released. They are
# taken below the kernel's range of ephemeral ports where it has one (on Linux,
# net.ipv4.ip_local_port_range), so that no outgoing connection on the machine takes one before
# the server meant for it binds.
free_ports() {
    python3 -c '
import random, socket, sys
n = int(sys.argv[1])
try:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        lo, hi = map(int, f.read().split())
    candidates = list(range(10000, lo)) if lo > 10000 + 10 * n else list(range(hi + 1, 65536))
except (OSError, ValueError):
    candidates = []
random.shuffle(candidates)
socks, ports = [], []
for port in candidates:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        continue
    socks.append(s)
    ports.append(port)
    if len(ports) == n:
        break
while len(ports) < n:  # no such range here: any free port
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
    ports.append(s.getsockname()[1])
# Released before they are printed: the caller reads the line and starts its servers while
# this process may still be exiting, and a socket it still held would make their bind fail.
for s in socks:
    s.close()
print(*ports, flush=True)
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

# find_oha ROOT: prints the path of oha (on PATH, else ROOT/target/bench-tools/bin/oha, where
# `cargo install oha --locked --root target/bench-tools` puts it), or nothing.
find_oha() {
    local oha
    oha=$(command -v oha || true)
    if [[ -z $oha && -x $1/target/bench-tools/bin/oha ]]; then oha=$1/target/bench-tools/bin/oha; fi
    printf '%s\n' "$oha"
}
