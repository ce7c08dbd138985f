#!/usr/bin/env bash
# compare.sh: chatroom's server side by side with two IRC servers, InspIRCd and
# ngIRCd, on loopback, under the same load from examples/loadgen.rs.
#
#   examples/compare.sh            # the full comparison (about 15-20 minutes)
#   examples/compare.sh --quick    # shorter steps, 2,000 idle clients (about 6 minutes)
#
# Options:
#   --quick               short steps (3 s), fewer bisections, 2,000 idle clients
#   --only LIST           servers to run, comma-separated: chatroom,inspircd,ngircd
#   --scenarios LIST      scenarios to run: s100,s1000x10,s1000x100,half,idle,
#                         tls100,tls1000x100,tlsidle,ws1000,wsidle,cluster100
#                         (and wss1000, not run unless named)
#   --idle-clients N      clients of the idle scenario (default 10000)
#   --ws-rounds N         rounds of ws1000/wss1000, line and WebSocket clients
#                         alternating (default 3, with --quick 1)
#   --server-bin PATH     a prebuilt chatroom server (default: build this checkout)
#   --loadgen-bin PATH    a prebuilt load generator (default: build this checkout)
#   --bench-dir DIR       the peers' configs (default: ../shared/bench from the repo root)
#   --out DIR             where logs and results.jsonl go (default: a new temp dir)
#
# What it does: installs inspircd and ngircd (Debian packages) if missing,
# builds the release server and load generator, then for each scenario starts
# each server fresh (chatroom with a new data directory and flood control off:
# --rate 0 --max-per-ip 0 --max-clients 20000), runs the load generator
# against it, stops it, and prints a table. Scenarios (issue 6):
#   s100       100 clients, 10 senders: highest sustained rate (under 0.1 %
#              missing, p99 under 100 ms), found by doubling then bisecting
#   s1000x10   1,000 clients, 10 senders: the same
#   s1000x100  1,000 clients, 100 senders: the same
#   half       latency of each of those at one rate for all three servers: half
#              the best peer's highest sustained rate
#   idle       N idle clients in one room: all connected, one message sent after
#              the last joined reaches all, server RSS and threads per client
#   tls100     (issue 12) 100 clients, 10 senders over TLS: the highest sustained
#              rate of chatroom-tls, inspircd-tls (its GnuTLS module) and
#              ngircd-tls (built with GnuTLS), with chatroom's plain TCP run
#              again in the same scenario as the baseline
#   tls1000x100  the same with 1,000 clients, 100 senders
#              (both TLS scenarios run the generator with --threads 2, for
#              every server alike: one thread decrypting every delivery was
#              the bottleneck, not the servers)
#   tlsidle    N idle clients over TLS against chatroom-tls, and over plain TCP
#              against chatroom as the baseline
#   cluster100 (issue 16) 100 clients, 10 senders spread round-robin over a
#              cluster of three chatroom nodes and one redis-server (AOF,
#              appendfsync always) on this machine: the highest sustained
#              rate, beside a single chatroom node run again in the same
#              scenario; then the latency at half the single node's rate.
#              Redis's and the nodes' CPU shares are recorded.
#   ws1000     (issue 14) 1,000 clients, 100 senders: the highest sustained rate
#              of chatroom-ws (WebSocket clients on --web-port, JSON events, one
#              text frame each) and of chatroom (line clients) as the baseline,
#              and of chatroom-json (line clients in JSON mode: the same events
#              as the WebSocket's, to tell the transport's cost from JSON's),
#              one after the other against the same server binary, alternating
#              for --ws-rounds rounds; each kind's best round is compared
#   wsidle     N idle WebSocket clients against chatroom-ws, and N idle line
#              clients against chatroom as the baseline; a client's cost is
#              the server's RSS above its start divided by the clients
#   wss1000    the same as ws1000 over TLS: chatroom-wss (WSS) against
#              chatroom-tls (lines over TLS); only when named in --scenarios
# The TLS certificate is made by `server tls-init --name localhost` in the work
# directory; the peers use ../shared/bench/inspircd-tls.conf and ngircd-tls.conf.
# Targets for chatroom: a rate at least the best peer's; p99 at half rate no
# worse than the best peer's; idle: all connected and reached, RSS at most
# 12 KiB per client, at most 1.1 threads per client; TLS: a rate at least the
# best TLS peer's and at least 0.6x chatroom's own plain rate; idle TLS at
# most 2x an idle plain client's memory, still one thread each; WebSocket: a
# rate at least 0.8x the line clients' in the same run, an idle WebSocket
# client at most 2x an idle line client's memory, still one thread each;
# cluster: a rate at least 0.5x a single node's, p99 under 100 ms at half
# that rate.
#
# The peers are single-threaded (one epoll loop each); chatroom uses as many
# threads as it likes. All share the machine's cores with the load generator.
# The handshake caps differ per server because the servers differ: ngIRCd
# listens with a backlog of 10 (more connects in flight only get SYNs dropped
# and retried a second later), and InspIRCd completes a registration about a
# second after NICK/USER, so it needs many in flight.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

QUICK=0
ONLY="chatroom,inspircd,ngircd"
SCENARIOS="s100,s1000x10,s1000x100,half,idle,tls100,tls1000x100,tlsidle,ws1000,wsidle"
IDLE_CLIENTS=""
WS_ROUNDS=""
SERVER_BIN=""
LOADGEN_BIN=""
BENCH_DIR="$ROOT/../shared/bench"
OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --only) ONLY="$2"; shift ;;
        --scenarios) SCENARIOS="$2"; shift ;;
        --idle-clients) IDLE_CLIENTS="$2"; shift ;;
        --ws-rounds) WS_ROUNDS="$2"; shift ;;
        --server-bin) SERVER_BIN="$2"; shift ;;
        --loadgen-bin) LOADGEN_BIN="$2"; shift ;;
        --bench-dir) BENCH_DIR="$2"; shift ;;
        --out) OUT="$2"; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "compare.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

if [ "$QUICK" = 1 ]; then
    STEP=3; WARMUP=1; BISECT=2; HALF_SECS=5; IDLE_HOLD=5; IDLE_CONNECT=60
    IDLE_CLIENTS=${IDLE_CLIENTS:-2000}; WS_ROUNDS=${WS_ROUNDS:-1}
else
    STEP=5; WARMUP=1; BISECT=3; HALF_SECS=10; IDLE_HOLD=10; IDLE_CONNECT=120
    IDLE_CLIENTS=${IDLE_CLIENTS:-10000}; WS_ROUNDS=${WS_ROUNDS:-3}
fi

has() { case ",$1," in *",$2,"*) return 0 ;; *) return 1 ;; esac; }
say() { printf '== %s\n' "$*" >&2; }

# Every client is a descriptor, in the generator and in the server.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# InspIRCd 3.15 with its GnuTLS module was seen to dump core when stopped;
# no core file belongs in the checkout.
ulimit -c 0 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((IDLE_CLIENTS + 100)) ]; then
    say "warning: only $(ulimit -n) descriptors per process; the idle scenario needs $((IDLE_CLIENTS + 100))"
fi

# --- tools -------------------------------------------------------------------
install_missing() {
    local missing=()
    has "$ONLY" inspircd && ! command -v inspircd >/dev/null && missing+=(inspircd)
    has "$ONLY" ngircd && ! command -v ngircd >/dev/null && missing+=(ngircd)
    command -v jq >/dev/null || missing+=(jq)
    command -v ss >/dev/null || missing+=(iproute2)
    has "$SCENARIOS" cluster100 && ! command -v redis-server >/dev/null && missing+=(redis-server)
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing ${missing[*]}"
        local sudo=""
        [ "$(id -u)" = 0 ] || sudo=sudo
        $sudo apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}
install_missing
BUILT_FROM=""
[ -z "$SERVER_BIN" ] && BUILT_FROM="checkout $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo ' with uncommitted changes')"
if [ -z "$SERVER_BIN" ] || [ -z "$LOADGEN_BIN" ]; then
    say "building the release server and load generator"
    cargo build --release --bin server --example loadgen >&2
fi
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps 2>/dev/null | jq -r .target_directory || echo "$ROOT/target")
SERVER_BIN=${SERVER_BIN:-$TARGET_DIR/release/server}
LOADGEN_BIN=${LOADGEN_BIN:-$TARGET_DIR/release/examples/loadgen}

WORK=$(mktemp -d /tmp/compare.XXXXXX)
OUT=${OUT:-$WORK/out}
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: > "$RESULTS"

# The peers' configs, copied so that they may have writable siblings; ngIRCd's
# IncludeDir must exist and is made absolute.
if has "$ONLY" inspircd || has "$ONLY" ngircd; then
    cp "$BENCH_DIR/inspircd.conf" "$BENCH_DIR/ngircd.conf" "$WORK/"
    mkdir -p "$WORK/conf.d"
    chmod u+w "$WORK"/*.conf
    sed -i "s|IncludeDir = .*|IncludeDir = $WORK/conf.d|" "$WORK/ngircd.conf"
fi

# TLS: one certificate for every server, made by chatroom's own tls-init.
# ngIRCd drops to nobody, so the copies it reads are world-readable (a
# throwaway key on loopback).
CERT=""; KEY=""
if has "$SCENARIOS" tls100 || has "$SCENARIOS" tls1000x100 || has "$SCENARIOS" tlsidle ||
    has "$SCENARIOS" wss1000; then
    "$SERVER_BIN" tls-init --name localhost --data-dir "$WORK/certs" >"$OUT/tls-init.txt"
    mkdir -p "$WORK/public"
    cp "$WORK/certs/tls/cert.pem" "$WORK/certs/tls/key.pem" "$WORK/public/"
    chmod 711 "$WORK"; chmod 755 "$WORK/public"; chmod 644 "$WORK/public/"*.pem
    CERT=$WORK/public/cert.pem; KEY=$WORK/public/key.pem
    if has "$ONLY" inspircd || has "$ONLY" ngircd; then
        for conf in inspircd-tls ngircd-tls; do
            sed -e "s|@CERT@|$CERT|; s|@KEY@|$KEY|; s|IncludeDir = .*|IncludeDir = $WORK/conf.d|" \
                "$BENCH_DIR/$conf.conf" >"$WORK/$conf.conf"
        done
    fi
fi

# --- servers -----------------------------------------------------------------
PID=""
ADDR=""
# A cluster's other nodes and its Redis, stopped with the first node.
EXTRA_PIDS=()
ALSO=()
REDIS_PID=""
stop_pid() { # PID
    if [ -n "$1" ] && kill -0 "$1" 2>/dev/null; then
        kill -TERM "$1" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$1" 2>/dev/null || true
        wait "$1" 2>/dev/null || true
    fi
}
stop_server() {
    stop_pid "$PID"
    for p in "${EXTRA_PIDS[@]}"; do stop_pid "$p"; done
    stop_pid "$REDIS_PID"
    PID=""; EXTRA_PIDS=(); ALSO=(); REDIS_PID=""
}
# CPU seconds a process has used so far (user + system).
cpu_secs() { # PID
    awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0
}
# Starts a chatroom node of the cluster at $REDIS_URL; prints its address.
start_node() { # LOG
    local data
    data=$(mktemp -d "$WORK/data.XXXXXX")
    "$SERVER_BIN" --host 127.0.0.1 --port 0 --data-dir "$data" --cluster "$REDIS_URL" \
        --rate 0 --max-per-ip 0 --max-clients 20000 >"$1.out" 2>"$1" &
    NODE_PID=$!
    for _ in $(seq 100); do
        NODE_ADDR=$(sed -n 's/^listening on //p' "$1.out")
        [ -n "$NODE_ADDR" ] && return 0
        kill -0 "$NODE_PID" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
trap 'stop_server; rm -rf "$WORK/data."*' EXIT

wait_listening() { # PORT
    for _ in $(seq 100); do
        ss -ltnH "sport = :$1" 2>/dev/null | grep -q . && return 0
        kill -0 "$PID" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

start_server() { # NAME; sets PID, ADDR, PROTO, HANDSHAKES, TLS, WS
    local name=$1 log="$OUT/$1.$2.log"
    TLS=""; WS=""; JSON=""
    case "$name" in
    chatroom)
        local data
        data=$(mktemp -d "$WORK/data.XXXXXX")
        "$SERVER_BIN" --host 127.0.0.1 --port 0 --data-dir "$data" \
            --rate 0 --max-per-ip 0 --max-clients 20000 >"$log.out" 2>"$log" &
        PID=$!
        for _ in $(seq 100); do
            ADDR=$(sed -n 's/^listening on //p' "$log.out")
            [ -n "$ADDR" ] && break
            sleep 0.1
        done
        PROTO=chatroom; HANDSHAKES=200 ;;
    chatroom-json)
        # Line clients in JSON mode: the WebSocket's events, over lines.
        start_server chatroom "$2" || return 1
        JSON=1 ;;
    chatroom-tls)
        local data
        data=$(mktemp -d "$WORK/data.XXXXXX")
        "$SERVER_BIN" --host 127.0.0.1 --port 0 --tls-port 0 --tls-cert "$CERT" --tls-key "$KEY" \
            --data-dir "$data" --rate 0 --max-per-ip 0 --max-clients 20000 >"$log.out" 2>"$log" &
        PID=$!
        for _ in $(seq 100); do
            ADDR=$(sed -n 's/^listening on \(.*\) (tls)$/\1/p' "$log.out")
            [ -n "$ADDR" ] && break
            sleep 0.1
        done
        PROTO=chatroom; HANDSHAKES=200; TLS=1 ;;
    chatroom-ws|chatroom-wss)
        # The same server with its web port; the clients speak WebSocket there.
        local data tls_args=()
        data=$(mktemp -d "$WORK/data.XXXXXX")
        [ "$name" = chatroom-wss ] && tls_args=(--tls-port 0 --tls-cert "$CERT" --tls-key "$KEY")
        "$SERVER_BIN" --host 127.0.0.1 --port 0 --web-port 0 "${tls_args[@]}" --data-dir "$data" \
            --rate 0 --max-per-ip 0 --max-clients 20000 >"$log.out" 2>"$log" &
        PID=$!
        for _ in $(seq 100); do
            ADDR=$(sed -n 's/^listening on \(.*\) (web)$/\1/p' "$log.out")
            [ -n "$ADDR" ] && break
            sleep 0.1
        done
        PROTO=chatroom; HANDSHAKES=200; WS=1
        [ "$name" = chatroom-wss ] && TLS=1 ;;
    inspircd-tls)
        inspircd --nofork --nopid --runasroot --config="$WORK/inspircd-tls.conf" >"$log" 2>&1 &
        PID=$!
        wait_listening 7402
        ADDR=127.0.0.1:7402; PROTO=irc; HANDSHAKES=2000; TLS=1 ;;
    ngircd-tls)
        ngircd -n -f "$WORK/ngircd-tls.conf" >"$log" 2>&1 &
        PID=$!
        wait_listening 7202
        ADDR=127.0.0.1:7202; PROTO=irc; HANDSHAKES=10; TLS=1 ;;
    inspircd)
        inspircd --nofork --nopid --runasroot --config="$WORK/inspircd.conf" >"$log" 2>&1 &
        PID=$!
        wait_listening 7401
        ADDR=127.0.0.1:7401; PROTO=irc; HANDSHAKES=2000 ;;
    ngircd)
        ngircd -n -f "$WORK/ngircd.conf" >"$log" 2>&1 &
        PID=$!
        wait_listening 7201
        ADDR=127.0.0.1:7201; PROTO=irc; HANDSHAKES=10 ;;
    chatroom-cluster)
        # One redis-server as docs/cluster.md recommends (AOF, appendfsync
        # always), on a unix socket; three nodes, each its own data directory.
        local rdir
        rdir=$(mktemp -d "$WORK/data.redis.XXXXXX")
        redis-server --port 0 --unixsocket "$rdir/redis.sock" --unixsocketperm 700 --dir "$rdir" \
            --save '' --appendonly yes --appendfsync always >"$log.redis" 2>&1 &
        REDIS_PID=$!
        REDIS_URL="redis+unix://$rdir/redis.sock"
        for _ in $(seq 100); do
            redis-cli -s "$rdir/redis.sock" ping >/dev/null 2>&1 && break
            sleep 0.1
        done
        start_node "$log" || { say "a cluster node did not start; see $log"; return 1; }
        PID=$NODE_PID; ADDR=$NODE_ADDR
        for n in 2 3; do
            start_node "$log.node$n" || { say "a cluster node did not start; see $log.node$n"; return 1; }
            EXTRA_PIDS+=("$NODE_PID"); ALSO+=(--also-addr "$NODE_ADDR")
        done
        PROTO=chatroom; HANDSHAKES=200 ;;
    esac
    if [ -z "$ADDR" ] || ! kill -0 "$PID" 2>/dev/null; then
        say "$name did not start; see $log"
        return 1
    fi
}

# One load generator run against a fresh server; its JSON line goes to
# results.jsonl with the scenario and server added.
run() { # NAME SCENARIO LOADGEN-ARGS...
    local name=$1 scenario=$2; shift 2
    start_server "$name" "$scenario" || { stop_server; return 0; }
    say "$scenario: $name ($ADDR ${ALSO[*]}, pid $PID): loadgen $*"
    local json log="$OUT/loadgen.$scenario.$name"
    # CPU of the server's processes over the run (the cluster's Redis apart).
    local pids=("$PID" "${EXTRA_PIDS[@]}") t0 t1 cpu0=0 cpu1=0 rcpu0=0 rcpu1=0 p
    for p in "${pids[@]}"; do cpu0=$(awk -v a="$cpu0" -v b="$(cpu_secs "$p")" 'BEGIN { print a + b }'); done
    [ -n "$REDIS_PID" ] && rcpu0=$(cpu_secs "$REDIS_PID")
    t0=$(date +%s.%N)
    "$LOADGEN_BIN" --proto "$PROTO" --addr "$ADDR" "${ALSO[@]}" --pid "$PID" ${TLS:+--tls} ${WS:+--ws} ${JSON:+--json} \
        --handshakes "$HANDSHAKES" --label "$scenario/$name" "$@" \
        2>"$log.err" | tee "$log.log" >&2 || true
    t1=$(date +%s.%N)
    json=$(tail -n 1 "$log.log")
    for p in "${pids[@]}"; do cpu1=$(awk -v a="$cpu1" -v b="$(cpu_secs "$p")" 'BEGIN { print a + b }'); done
    [ -n "$REDIS_PID" ] && rcpu1=$(cpu_secs "$REDIS_PID")
    local cpu
    cpu=$(jq -n --argjson c0 "$cpu0" --argjson c1 "$cpu1" --argjson r0 "$rcpu0" --argjson r1 "$rcpu1" \
        --argjson t0 "$t0" --argjson t1 "$t1" --arg redis "$REDIS_PID" \
        '{server_cpu_pct: (($c1 - $c0) / ($t1 - $t0) * 1000 | round / 10)}
         + (if $redis != "" then {redis_cpu_pct: (($r1 - $r0) / ($t1 - $t0) * 1000 | round / 10)} else {} end)')
    stop_server
    if jq -e . >/dev/null 2>&1 <<<"$json"; then
        jq -c --arg s "$scenario" --arg n "$name" --argjson cpu "$cpu" \
            '. + {scenario: $s, server: $n} + $cpu' <<<"$json" >>"$RESULTS"
    else
        say "$scenario: $name: no result (see $OUT/loadgen.$scenario.$name.*)"
    fi
}

SERVERS=()
for s in ngircd inspircd chatroom; do has "$ONLY" "$s" && SERVERS+=("$s"); done

TLS_SERVERS=()
for s in ngircd inspircd chatroom; do has "$ONLY" "$s" && TLS_SERVERS+=("$s-tls"); done
has "$ONLY" chatroom && TLS_SERVERS+=(chatroom)

search() { # SCENARIO CLIENTS SENDERS [SERVER...]
    local scenario=$1 clients=$2 senders=$3
    shift 3
    local servers=("$@")
    [ ${#servers[@]} -gt 0 ] || servers=("${SERVERS[@]}")
    # Start at 50,000 deliveries a second; double until a step fails, then bisect.
    local start=$((50000 / clients))
    # Over TLS the generator decrypts every delivery: one thread of it was
    # the limit (its own backlog raised p99), so it gets two, for every
    # server of those scenarios alike, plain TCP's baseline included.
    local gen=()
    case $scenario in tls100|tls1000x100) gen=(--threads 2) ;; esac
    for s in "${servers[@]}"; do
        run "$s" "$scenario" --clients "$clients" --senders "$senders" --search \
            --rate "$start" --duration "$STEP" --warmup "$WARMUP" --bisect "$BISECT" \
            --connect-timeout 300 "${gen[@]}"
    done
}

best_rate() { # SCENARIO SERVER
    jq -r --arg s "$1" --arg n "$2" 'select(.scenario == $s and .server == $n) | .best_rate // empty' "$RESULTS" | tail -n 1
}

has "$SCENARIOS" s100 && search s100 100 10
has "$SCENARIOS" s1000x10 && search s1000x10 1000 10
has "$SCENARIOS" s1000x100 && search s1000x100 1000 100

has "$SCENARIOS" tls100 && search tls100 100 10 "${TLS_SERVERS[@]}"
has "$SCENARIOS" tls1000x100 && search tls1000x100 1000 100 "${TLS_SERVERS[@]}"

# WebSocket (issue 14): line clients, then WebSocket clients, each against a
# fresh server of the same binary, alternating for --ws-rounds rounds: on a
# shared machine one search can be cut short by someone else's compile, and
# alternating gives both kinds the same chances. Each kind's best round counts.
if has "$ONLY" chatroom; then
    for _ in $(seq "$WS_ROUNDS"); do
        has "$SCENARIOS" ws1000 && search ws1000 1000 100 chatroom chatroom-json chatroom-ws
        has "$SCENARIOS" wss1000 && search wss1000 1000 100 chatroom-tls chatroom-wss
    done
fi

if has "$SCENARIOS" half; then
    for pair in s100:100:10 s1000x10:1000:10 s1000x100:1000:100; do
        IFS=: read -r scenario clients senders <<<"$pair"
        has "$SCENARIOS" "$scenario" || continue
        # Half the best peer's rate (chatroom's own if no peer ran).
        rate=""
        for s in inspircd ngircd; do
            r=$(best_rate "$scenario" "$s")
            [ -n "$r" ] && rate=$(jq -n --arg a "${rate:-0}" --arg b "$r" '[($a|tonumber), ($b|tonumber)] | max')
        done
        [ -z "$rate" ] && rate=$(best_rate "$scenario" chatroom)
        [ -z "$rate" ] && continue
        half=$(jq -n --arg r "$rate" '($r|tonumber) / 2 | round | if . < 1 then 1 else . end')
        for s in "${SERVERS[@]}"; do
            run "$s" "half-$scenario" --clients "$clients" --senders "$senders" \
                --rate "$half" --duration "$HALF_SECS" --warmup "$WARMUP"
        done
    done
fi

if has "$SCENARIOS" cluster100 && has "$ONLY" chatroom; then
    # The single node first, in the same scenario, as the baseline.
    search cluster100 100 10 chatroom chatroom-cluster
    rate=$(best_rate cluster100 chatroom)
    if [ -n "$rate" ]; then
        half=$(jq -n --arg r "$rate" '($r|tonumber) / 2 | round | if . < 1 then 1 else . end')
        for s in chatroom chatroom-cluster; do
            run "$s" half-cluster100 --clients 100 --senders 10 \
                --rate "$half" --duration "$HALF_SECS" --warmup "$WARMUP"
        done
    fi
fi

if has "$SCENARIOS" idle; then
    for s in "${SERVERS[@]}"; do
        run "$s" idle --clients "$IDLE_CLIENTS" --idle --duration "$IDLE_HOLD" \
            --connect-timeout "$IDLE_CONNECT" --handshake-timeout 120
    done
fi

if has "$SCENARIOS" tlsidle && has "$ONLY" chatroom; then
    for s in chatroom chatroom-tls; do
        run "$s" tlsidle --clients "$IDLE_CLIENTS" --idle --duration "$IDLE_HOLD" \
            --connect-timeout "$IDLE_CONNECT" --handshake-timeout 120
    done
fi

if has "$SCENARIOS" wsidle && has "$ONLY" chatroom; then
    for s in chatroom chatroom-ws; do
        run "$s" wsidle --clients "$IDLE_CLIENTS" --idle --duration "$IDLE_HOLD" \
            --connect-timeout "$IDLE_CONNECT" --handshake-timeout 120
    done
fi

# --- the table ---------------------------------------------------------------
{
echo
echo "Results ($(date -u +%FT%TZ), $(nproc) cores, steps of ${STEP} s; chatroom server $SERVER_BIN${BUILT_FROM:+, built from $BUILT_FROM})"
echo
echo "| scenario | server | highest sustained rate (msg/s) | deliveries/s | p99 at that rate (ms) | first failing rate | why it failed |"
echo "|---|---|---|---|---|---|---|"
jq -r 'select(.mode == "search") |
    [.scenario, .server,
     (.best_rate // "none" | tostring),
     (if .best then (.best.deliveries_per_s | round | tostring) else "-" end),
     (if .best then (.best.p99_ms | tostring) else "-" end),
     (.first_failing_rate // "none" | tostring),
     ([.steps[] | select(.pass | not) | .why] | first // "-")]
    | "| " + join(" | ") + " |"' "$RESULTS"
echo
echo "| scenario | server | rate (msg/s) | deliveries/s | missing % | p50 (ms) | p99 (ms) | p99.9 (ms) | max (ms) | server CPU % | Redis CPU % |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
jq -r 'select(.mode == "run") | .steps[0] as $s |
    [.scenario, .server, ($s.rate | tostring), ($s.deliveries_per_s | round | tostring),
     ($s.missing_pct | tostring), ($s.p50_ms | tostring), ($s.p99_ms | tostring),
     ($s.p999_ms | tostring), ($s.max_ms | tostring),
     (.server_cpu_pct // "-" | tostring), (.redis_cpu_pct // "-" | tostring)]
    | "| " + join(" | ") + " |"' "$RESULTS"
echo
echo "| scenario | server | connected | connect (s) | probe reached | server RSS (MiB) | KiB per client | threads | threads per client |"
echo "|---|---|---|---|---|---|---|---|---|"
jq -r 'select(.mode == "idle") |
    [.scenario, .server, "\(.connected)/\(.clients)", (.connect_s | tostring),
     "\(.probe.delivered // 0)/\(.probe.expected // 0)",
     (if .idle then (.idle.rss_kib / 1024 * 10 | round / 10 | tostring) else "-" end),
     (if .idle then (.idle.rss_kib_per_client | tostring) else "-" end),
     (if .idle then (.idle.threads | tostring) else "-" end),
     (if .idle then (.idle.threads_per_client | tostring) else "-" end)]
    | "| " + join(" | ") + " |"' "$RESULTS"
echo
echo "Targets for chatroom:"
jq -rs '
    def best($sc; $n): [.[] | select(.scenario == $sc and .server == $n) | .best_rate // 0] | max // 0;
    def p99($sc; $n): [.[] | select(.scenario == $sc and .server == $n) | .steps[0].p99_ms] | first;
    . as $all |
    (["s100", "s1000x10", "s1000x100"][] as $sc |
        select([$all[] | select(.scenario == $sc)] | length > 0) |
        ($all | best($sc; "chatroom")) as $c |
        ([$all | best($sc; "inspircd"), best($sc; "ngircd")] | max) as $p |
        "- \($sc): rate \($c) vs best peer \($p): " + (if $c >= $p then "MET" else "NOT MET" end)),
    (["s100", "s1000x10", "s1000x100"][] as $sc | ("half-" + $sc) as $h |
        select([$all[] | select(.scenario == $h)] | length > 0) |
        ($all | p99($h; "chatroom")) as $c |
        ([$all | p99($h; "inspircd"), p99($h; "ngircd")] | map(select(. != null)) | min) as $p |
        "- \($h): p99 \($c) ms vs best peer \($p) ms: " + (if $p == null or ($c != null and $c <= $p) then "MET" else "NOT MET" end)),
    (["tls100", "tls1000x100"][] as $sc |
        select([$all[] | select(.scenario == $sc)] | length > 0) |
        ($all | best($sc; "chatroom-tls")) as $c |
        ([$all | best($sc; "inspircd-tls"), best($sc; "ngircd-tls")] | max) as $p |
        ($all | best($sc; "chatroom")) as $plain |
        "- \($sc): TLS rate \($c) vs best TLS peer \($p): " + (if $p == 0 then "no TLS peer passed a step (a loaded machine?)" elif $c >= $p then "MET" else "NOT MET" end) +
        "; vs chatroom plain TCP \($plain): \(if $plain > 0 then ($c / $plain * 100 | round) else "?" end) % of it, target 60 %: " +
        (if $plain > 0 and $c >= 0.6 * $plain then "MET" else "NOT MET" end)),
    ([$all[] | select(.scenario == "tlsidle")] as $ti |
        select($ti | length > 0) |
        ([$ti[] | select(.server == "chatroom-tls")] | first) as $t |
        ([$ti[] | select(.server == "chatroom")] | first) as $p |
        "- tlsidle: \($t.connected // 0)/\($t.clients // 0) TLS clients connected, probe reached \($t.probe.delivered // 0)/\($t.probe.expected // 0), \($t.idle.rss_kib_per_client // "?") KiB per TLS client vs \($p.idle.rss_kib_per_client // "?") KiB per plain one, \($t.idle.threads_per_client // "?") threads per client: " +
        (if ($t.all_connected_and_reached // false) and ($t.idle.rss_kib_per_client // 1e9) <= 2 * ($p.idle.rss_kib_per_client // 0) and ($t.idle.threads_per_client // 1e9) <= 1.1 then "MET" else "NOT MET" end)),
    ([$all[] | select(.scenario == "cluster100")] as $cl |
        select($cl | length > 0) |
        ($all | best("cluster100"; "chatroom")) as $one |
        ($all | best("cluster100"; "chatroom-cluster")) as $c |
        ([$cl[] | select(.server == "chatroom-cluster") | .redis_cpu_pct] | first) as $r |
        "- cluster100: three nodes \($c) vs one node \($one): \(if $one > 0 then ($c / $one * 100 | round) else "?" end) % of it, target 50 %: " +
        (if $one > 0 and $c >= 0.5 * $one then "MET" else "NOT MET" end) + " (Redis CPU \($r // "?") % over the search)"),
    (($all | p99("half-cluster100"; "chatroom-cluster")) as $hc |
        select($hc != null) |
        "- half-cluster100: p99 \($hc) ms at half the single node rate, target under 100 ms: " + (if $hc < 100 then "MET" else "NOT MET" end)),
    (["ws1000:chatroom-ws:chatroom", "wss1000:chatroom-wss:chatroom-tls"][] | split(":") as [$sc, $w, $l] |
        select([$all[] | select(.scenario == $sc)] | length > 0) |
        ($all | best($sc; $w)) as $c |
        ($all | best($sc; $l)) as $base |
        ([$all[] | select(.scenario == $sc and .server == $w) | .best_rate // 0]) as $wr |
        ([$all[] | select(.scenario == $sc and .server == $l) | .best_rate // 0]) as $lr |
        "- \($sc): WebSocket rate \($c) (rounds: \($wr | map(tostring) | join(", "))) vs line clients \($base) (\($l), rounds: \($lr | map(tostring) | join(", "))): " +
        (if $base > 0 then "\($c / $base * 100 | round) % of it" else "?" end) + ", target 80 %: " +
        (if $base > 0 and $c >= 0.8 * $base then "MET" else "NOT MET" end) +
        (($all | best($sc; "chatroom-json")) as $json |
            if $sc == "ws1000" and $json > 0 then " (line clients in JSON mode, the events a WebSocket gets: \($json); WebSocket \($c / $json * 100 | round) % of it)" else "" end)),
    ([$all[] | select(.scenario == "wsidle")] as $wi |
        select($wi | length > 0) |
        ([$wi[] | select(.server == "chatroom-ws")] | first) as $w |
        ([$wi[] | select(.server == "chatroom")] | first) as $p |
        ($w.idle.rss_kib_per_client_above_start // 1e9) as $wc |
        ($p.idle.rss_kib_per_client_above_start // 0) as $pc |
        "- wsidle: \($w.connected // 0)/\($w.clients // 0) WebSocket clients connected, probe reached \($w.probe.delivered // 0)/\($w.probe.expected // 0), \($wc) KiB per WebSocket client vs \($pc) KiB per line client above the server'"'"'s start (\(if $pc > 0 then ($wc / $pc * 100 | round) else "?" end) %, target at most 200 %; whole RSS over the clients: \($w.idle.rss_kib_per_client // "?") vs \($p.idle.rss_kib_per_client // "?") KiB), \($w.idle.threads_per_client // "?") threads per client: " +
        (if ($w.all_connected_and_reached // false) and ($p.all_connected_and_reached // false) and $wc <= 2 * $pc and ($w.idle.threads_per_client // 1e9) <= 1.1 then "MET" else "NOT MET" end)),
    ($all[] | select(.scenario == "idle" and .server == "chatroom") |
        "- idle: \(.connected)/\(.clients) connected, probe reached \(.probe.delivered // 0)/\(.probe.expected // 0), \(.idle.rss_kib_per_client // "?") KiB and \(.idle.threads_per_client // "?") threads per client: " +
        (if .all_connected_and_reached and (.idle.rss_kib_per_client // 1e9) <= 12 and (.idle.threads_per_client // 1e9) <= 1.1 then "MET" else "NOT MET" end))
' "$RESULTS"
echo
echo "Raw results: $RESULTS; logs: $OUT"
} | tee "$OUT/table.md"
