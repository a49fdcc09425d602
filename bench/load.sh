#!/usr/bin/env bash
# bench/load.sh: load comparison of stock Caddy (A: reverse_proxy with static
# identity headers) against rebell_auth (B: session lookup + injected headers,
# then the same reverse_proxy), both in front of one shared upstream.
#
#   bench/load.sh                              # ROUNDS=5 DURATION=10s THREADS=2 CONNECTIONS=64
#   ROUNDS=3 DURATION=5s bench/load.sh
#   PROFILE=1 bench/load.sh                    # plus a CPU profile of A and of B afterwards
#
# Everything listens on and talks to 127.0.0.1 only. Every process started
# here is stopped on exit. See bench/README.md for the knobs and the output.
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
SESSIONS=${SESSIONS:-1000}
GW_GOMAXPROCS=${GW_GOMAXPROCS:-$(nproc)}
PROFILE=${PROFILE:-0}
B_MAX_SESSIONS=${B_MAX_SESSIONS:-} # empty: the plugin's default (1000000)
B_STORE=${B_STORE:-}                # "redis": B shares its sessions through a redis-server this script starts
B_IDENTITY=${B_IDENTITY:-}          # "1": B signs an identity assertion (Ed25519); A sends a static header of the same length
PROFILE_SECONDS=${PROFILE_SECONDS:-5}
TARGET_RATIO=${TARGET_RATIO:-0.97}
TARGET_P99=${TARGET_P99:-1.10}

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$BENCH_DIR/.." && pwd)
OUT_DIR=${OUT_DIR:-$BENCH_DIR/out/$(date -u +%Y%m%dT%H%M%SZ)}

log() { printf '[load.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
ERR_MSG=
die() { ERR_MSG=$*; printf '[load.sh] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- arguments
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
# to_seconds 10s|2m|15 -> seconds; wrk accepts the same forms.
to_seconds() {
	local v=$1
	[[ $v =~ ^([0-9]+)([sm]?)$ ]] || die "bad duration '$v' (use e.g. 10s or 1m)"
	local n=${BASH_REMATCH[1]}
	[[ ${BASH_REMATCH[2]} == m ]] && n=$((n * 60))
	((n >= 1 && n <= 600)) || die "duration '$v' must be between 1s and 10m"
	echo "$n"
}
is_uint "$ROUNDS" && ((ROUNDS >= 1 && ROUNDS <= 50)) || die "ROUNDS must be 1..50 (got '$ROUNDS')"
is_uint "$THREADS" && ((THREADS >= 1)) || die "THREADS must be a positive integer (got '$THREADS')"
is_uint "$CONNECTIONS" && ((CONNECTIONS >= THREADS)) || die "CONNECTIONS must be an integer >= THREADS (got '$CONNECTIONS')"
is_uint "$SESSIONS" && ((SESSIONS >= 1 && SESSIONS <= 100000)) || die "SESSIONS must be 1..100000 (got '$SESSIONS')"
is_uint "$GW_GOMAXPROCS" && ((GW_GOMAXPROCS >= 1)) || die "GW_GOMAXPROCS must be a positive integer"
[[ -z $B_STORE || $B_STORE == redis ]] || die "B_STORE must be empty or redis"
[[ $B_STORE != redis ]] || command -v redis-server >/dev/null || die "B_STORE=redis needs redis-server on the PATH"
[[ $B_STORE != redis ]] || command -v redis-cli >/dev/null || die "B_STORE=redis needs redis-cli on the PATH"
[[ -z $B_MAX_SESSIONS ]] || { is_uint "$B_MAX_SESSIONS" && ((B_MAX_SESSIONS >= SESSIONS)); } || die "B_MAX_SESSIONS must be an integer >= SESSIONS"
is_uint "$PROFILE_SECONDS" && ((PROFILE_SECONDS >= 1 && PROFILE_SECONDS <= 60)) || die "PROFILE_SECONDS must be 1..60"
DURATION_S=$(to_seconds "$DURATION")
WARMUP_S=$(to_seconds "$WARMUP")

# ---------------------------------------------------------------- tools
command -v go >/dev/null || die "go is not on the PATH"
command -v python3 >/dev/null || die "python3 is not on the PATH"
command -v openssl >/dev/null || die "openssl is not on the PATH (needed for the throwaway keys)"
command -v curl >/dev/null || die "curl is not on the PATH"
if ! command -v wrk >/dev/null; then
	if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
		log "wrk not found: installing it with apt-get"
		if ! DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null 2>&1; then
			DEBIAN_FRONTEND=noninteractive apt-get update >/dev/null 2>&1 || true
			DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null 2>&1 || die "apt-get install -y wrk failed"
		fi
		command -v wrk >/dev/null || die "wrk still not found after apt-get install"
	else
		die "wrk is not installed: install it (e.g. 'sudo apt-get install -y wrk') or run this script as root to let it install wrk"
	fi
fi
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------- cleanup
TMP=$(mktemp -d "${TMPDIR:-/tmp}/rebell-bench.XXXXXX")
PIDS=()      # long-running processes we started (Caddies)
BG_PIDS=()   # short-lived background helpers (profile fetches)
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	local pid
	for pid in "${BG_PIDS[@]}" "${PIDS[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${BG_PIDS[@]}" "${PIDS[@]}"; do
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
		wait "$pid" 2>/dev/null || true
	done
	if ((rc != 0)) && [[ -d $TMP && -d ${OUT_DIR:-} ]] && compgen -G "$TMP/*.log" >/dev/null; then
		mkdir -p "$OUT_DIR/logs" && cp "$TMP"/*.log "$OUT_DIR/logs/" 2>/dev/null &&
			printf '[load.sh] process logs kept in %s/logs\n' "$OUT_DIR" >&2
	fi
	rm -rf "$TMP"
	if ((rc == 130 || rc == 143)); then
		printf '[load.sh] interrupted; every process it started is stopped\n' >&2
	elif ((rc != 0)); then
		printf '[load.sh] FAILED (exit %d)%s\n' "$rc" "${ERR_MSG:+: $ERR_MSG}" >&2
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$OUT_DIR"
log "output directory: $OUT_DIR"

# ---------------------------------------------------------------- build
log "building Caddy from ./cmd/caddy"
(cd "$REPO_ROOT" && go build -o "$TMP/caddy" ./cmd/caddy) || die "go build ./cmd/caddy failed"
CADDY=$TMP/caddy

# ---------------------------------------------------------------- keys (throwaway, in $TMP only)
mkdir -m 700 "$TMP/keys"
openssl genrsa -out "$TMP/keys/merchant-private.pem" 2048 2>/dev/null
openssl rsa -in "$TMP/keys/merchant-private.pem" -pubout -out "$TMP/keys/merchant-public.pem" 2>/dev/null
openssl genrsa -out "$TMP/keys/sandbox-private.pem" 2048 2>/dev/null
openssl rsa -in "$TMP/keys/sandbox-private.pem" -pubout -out "$TMP/keys/sandbox-public.pem" 2>/dev/null
[[ -z $B_IDENTITY ]] || openssl genpkey -algorithm ed25519 -out "$TMP/keys/identity.pem" 2>/dev/null

# ---------------------------------------------------------------- ports
read -r P_UP P_SB P_A P_B ADM_UP ADM_SB ADM_A ADM_B P_REDIS < <(python3 - <<'EOF'
import socket
socks = []
for _ in range(9):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
)

# ---------------------------------------------------------------- configs
CLIENT_ID=BENCH_CLIENT
# A's static access token has the length of a sandbox token (SBXAT + 40), so
# the upstream receives the same number of bytes from A and from B.
STATIC_TOKEN=static-token-value-padded-to-45-chars-xxxxxxx
# With B_IDENTITY, A sends a static assertion as long as B's (368 characters
# for an Ed25519 assertion with aud 127.0.0.1 and a 16-digit sub).
STATIC_IDENTITY=$(printf 'x%.0s' $(seq 368))
STATIC_CUSTOMER=2188000000000001
((${#STATIC_TOKEN} == 45)) || die "internal: static token must be 45 chars"

global_opts() { # admin port
	cat <<EOF
{
	admin 127.0.0.1:$1
	persist_config off
	auto_https off
	grace_period 1s
}
EOF
}

# Keep-alive settings shared by A and B (Caddy keeps 32 idle conns per host by default).
TRANSPORT='		transport http {
			keepalive 90s
			keepalive_idle_conns 512
			keepalive_idle_conns_per_host 512
		}'

{
	global_opts "$ADM_UP"
	cat <<EOF

http://127.0.0.1:$P_UP {
	# Used once before the runs to check what a gateway forwards (lengths only).
	handle /__bench/echo {
		respond "customer={http.request.header.X-Rebell-Customer-Id} token={http.request.header.X-Rebell-Access-Token} authorization={http.request.header.Authorization}" 200
	}
	respond "ok" 200
}
EOF
} >"$TMP/upstream.Caddyfile"

{
	global_opts "$ADM_SB"
	cat <<EOF

http://127.0.0.1:$P_SB {
	rebell_sandbox {
		client_id $CLIENT_ID
		merchant_public_key_file $TMP/keys/merchant-public.pem
		private_key_file $TMP/keys/sandbox-private.pem
		access_token_ttl 24h
		refresh_token_ttl 720h
		auth_code_ttl 10m
	}
}
EOF
} >"$TMP/sandbox.Caddyfile"

{
	global_opts "$ADM_A"
	cat <<EOF

http://127.0.0.1:$P_A {
	reverse_proxy 127.0.0.1:$P_UP {
		# B removes the session credential before proxying; A drops the same header.
		header_up -Authorization
		header_up X-Rebell-Access-Token $STATIC_TOKEN
		header_up X-Rebell-Customer-Id $STATIC_CUSTOMER${B_IDENTITY:+
		header_up X-Rebell-Identity $STATIC_IDENTITY}
$TRANSPORT
	}
}
EOF
} >"$TMP/a.Caddyfile"

STORE_BLOCK=
if [[ $B_STORE == redis ]]; then
	STORE_BLOCK="
		store redis {
			address 127.0.0.1:$P_REDIS
			key_prefix bench:
			encryption_key $(openssl rand -base64 32)
		}"
fi
# A block, not a ${B_IDENTITY:+...} expansion: bash ends that at the first
# closing brace inside it.
IDENTITY_BLOCK=
if [[ -n ${B_IDENTITY:-} ]]; then
	IDENTITY_BLOCK="
		identity_assertion {
			signing_key_file $TMP/keys/identity.pem
		}"
fi
{
	global_opts "$ADM_B"
	cat <<EOF

http://127.0.0.1:$P_B {
	rebell_auth {
		endpoint http://127.0.0.1:$P_SB
		client_id $CLIENT_ID
		private_key_file $TMP/keys/merchant-private.pem
		rebell_public_key_file $TMP/keys/sandbox-public.pem
		# Every login of the load comes from 127.0.0.1: no per-address
		# limit, and no cap of login calls that the load would reach.
		login_rate off
		login_calls_per_second 100000${B_MAX_SESSIONS:+
		max_sessions $B_MAX_SESSIONS}$STORE_BLOCK$IDENTITY_BLOCK
	}
	reverse_proxy 127.0.0.1:$P_UP {
$TRANSPORT
	}
}
EOF
} >"$TMP/b.Caddyfile"

# ---------------------------------------------------------------- processes
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_caddy NAME GOMAXPROCS PORT... ; sets PID_<NAME>
start_caddy() {
	local name=$1 procs=$2
	shift 2
	mkdir -p "$TMP/home-$name"
	env GOMAXPROCS="$procs" HOME="$TMP/home-$name" \
		XDG_DATA_HOME="$TMP/home-$name/data" XDG_CONFIG_HOME="$TMP/home-$name/config" \
		"$CADDY" run --config "$TMP/$name.Caddyfile" --adapter caddyfile >"$TMP/$name.log" 2>&1 &
	local pid=$!
	PIDS+=("$pid")
	printf -v "PID_${name^^}" '%s' "$pid"
	local port
	for port in "$@"; do
		local i
		for i in $(seq 300); do # at most 30 s per port
			if ! kill -0 "$pid" 2>/dev/null; then
				tail -n 5 "$TMP/$name.log" >&2
				die "caddy '$name' exited during start-up (its log: above)"
			fi
			port_open "$port" && break
			((i == 300)) && die "caddy '$name' did not listen on 127.0.0.1:$port within 30 s"
			sleep 0.1
		done
	done
	log "caddy '$name' running (pid $pid, GOMAXPROCS=$procs, ports $*)"
}

if [[ $B_STORE == redis ]]; then
	redis-server --port "$P_REDIS" --bind 127.0.0.1 --save "" --appendonly no --dir "$TMP" >"$TMP/redis.log" 2>&1 &
	PIDS+=("$!")
	for i in $(seq 100); do
		redis-cli -p "$P_REDIS" ping >/dev/null 2>&1 && break
		((i == 100)) && die "redis-server did not answer on 127.0.0.1:$P_REDIS"
		sleep 0.1
	done
	log "redis-server running on 127.0.0.1:$P_REDIS for B's shared store"
fi
redis_scripts() { # script runs (EVAL, EVALSHA) so far; 0 without a store
	[[ $B_STORE == redis ]] || { echo 0; return; }
	redis-cli -p "$P_REDIS" info commandstats |
		awk -F'[:=,]' '$1 == "cmdstat_evalsha" || $1 == "cmdstat_eval" { n += $3 } END { print n + 0 }'
}
redis_calls() { # Redis commands so far, not counting INFO and PING; 0 without a store
	[[ $B_STORE == redis ]] || { echo 0; return; }
	redis-cli -p "$P_REDIS" info commandstats |
		awk -F'[:=,]' '/^cmdstat_/ && $1 != "cmdstat_info" && $1 != "cmdstat_ping" { n += $3 } END { print n + 0 }'
}
start_caddy upstream "$(nproc)" "$ADM_UP" "$P_UP"
start_caddy sandbox "$(nproc)" "$ADM_SB" "$P_SB"
start_caddy a "$GW_GOMAXPROCS" "$ADM_A" "$P_A"
start_caddy b "$GW_GOMAXPROCS" "$ADM_B" "$P_B"

# ---------------------------------------------------------------- sessions
log "creating $SESSIONS sessions in B (sandbox authcode + /rebell/login)"
cat >"$TMP/login.py" <<'EOF'
import json, sys, time, urllib.request, urllib.error
from concurrent.futures import ThreadPoolExecutor

sandbox, gateway, n, out_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, e.read()[:300]

def one(i):
    cust = "2188%012d" % (i + 1)
    st, body = post(sandbox + "/sandbox/authcode", {"customerId": cust, "scopes": ["auth_user"]})
    if st != 200 or not body.get("authCode"):
        raise RuntimeError("authcode #%d: HTTP %d %r" % (i, st, body))
    st, body = post(gateway + "/rebell/login", {"authCode": body["authCode"]})
    if st != 200 or len(body.get("sessionId", "")) != 43 or body.get("customerId") != cust:
        raise RuntimeError("login #%d: HTTP %d %r" % (i, st, body))
    return body["sessionId"]

t0 = time.monotonic()
with ThreadPoolExecutor(max_workers=16) as ex:
    ids = list(ex.map(one, range(n)))
if len(set(ids)) != n:
    raise SystemExit("duplicate session ids")
with open(out_path, "w") as f:
    f.write("\n".join(ids) + "\n")
print("%d sessions in %.1f s" % (n, time.monotonic() - t0))
EOF
timeout 120 python3 "$TMP/login.py" "http://127.0.0.1:$P_SB" "http://127.0.0.1:$P_B" "$SESSIONS" "$TMP/sessions.txt" >"$TMP/login.out" 2>"$TMP/login.err" ||
	die "session creation failed: $(tail -n 3 "$TMP/login.err")"
log "$(cat "$TMP/login.out")"
# A gets the same number of same-length fake ids (43 base64url chars), so the
# client sends the same bytes and wrk does the same work for both.
python3 - "$SESSIONS" "$TMP/fake.txt" <<'EOF'
import base64, os, sys
n, path = int(sys.argv[1]), sys.argv[2]
with open(path, "w") as f:
    for _ in range(n):
        f.write(base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=") + "\n")
EOF

# ---------------------------------------------------------------- sanity checks
SID1=$(head -n 1 "$TMP/sessions.txt")
FAKE1=$(head -n 1 "$TMP/fake.txt")
check_echo() { # name url auth expected_customer
	local body
	body=$(curl -sS --max-time 5 -H "Authorization: Bearer $3" "$2/__bench/echo") || die "$1: request to $2 failed"
	python3 - "$1" "$4" "$body" <<'EOF' || die "$1 forwards the wrong headers (see above)"
import re, sys
name, want_cust, body = sys.argv[1], sys.argv[2], sys.argv[3]
m = re.fullmatch(r"customer=(\S*) token=(\S*) authorization=(.*)", body)
ok = bool(m) and m.group(1) == want_cust and len(m.group(2)) == 45 and m.group(3) == ""
if not ok:
    # Lengths only: never print a token.
    print("%s: upstream saw customer=%r token_len=%d authorization_len=%d" % (
        name, m and m.group(1), len(m.group(2)) if m else -1, len(m.group(3)) if m else -1), file=sys.stderr)
    sys.exit(1)
EOF
}
check_echo A "http://127.0.0.1:$P_A" "$FAKE1" "$STATIC_CUSTOMER"
check_echo B "http://127.0.0.1:$P_B" "$SID1" "2188000000000001"
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H "Authorization: Bearer $FAKE1" "http://127.0.0.1:$P_B/api/bench")
[[ $code == 401 ]] || die "B answered $code (want 401) to an unknown session: rebell_auth is not enforcing"
sessions_in_b=$(curl -sS --max-time 5 "http://127.0.0.1:$ADM_B/rebell/sessions")
log "sanity checks passed (B admin: $sessions_in_b)"

# ---------------------------------------------------------------- wrk script
cat >"$TMP/rotate.lua" <<'EOF'
-- Rotates "Authorization: Bearer <id>" through the ids in args[1] (one a
-- line). Requests are formatted once in init(), so request() costs nothing.
local nthreads = 0
function setup(thread)
  thread:set("tid", nthreads)
  nthreads = nthreads + 1
end

local reqs, n, i = {}, 0, 0
function init(args)
  local f = assert(io.open(args[1], "r"))
  for line in f:lines() do
    if #line > 0 then
      n = n + 1
      reqs[n] = wrk.format(nil, nil, { ["Authorization"] = "Bearer " .. line })
    end
  end
  f:close()
  assert(n > 0, "no ids in " .. args[1])
  i = ((tid or 0) * 7919) % n -- threads start at different ids
end

function request()
  i = i % n + 1
  return reqs[i]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"err_connect":%d,"err_read":%d,' ..
    '"err_write":%d,"err_status":%d,"err_timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"p999_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.mean, latency.max))
end
EOF

# ---------------------------------------------------------------- runs
cpu_ticks() { # utime+stime of a pid, in clock ticks
	local stat rest
	stat=$(<"/proc/$1/stat")
	rest=${stat##*) }
	# shellcheck disable=SC2086
	set -- $rest
	echo $((${12} + ${13}))
}
child_ticks() { # cutime+cstime of this shell: CPU of the children it has waited for (wrk)
	local stat rest
	stat=$(<"/proc/$$/stat")
	rest=${stat##*) }
	# shellcheck disable=SC2086
	set -- $rest
	echo $((${14} + ${15}))
}
go_vars() { # NumGC HeapAlloc(bytes) of a Caddy, from its admin expvar endpoint
	curl -sS --max-time 5 "http://127.0.0.1:$1/debug/vars" |
		python3 -c 'import json,sys; m=json.load(sys.stdin)["memstats"]; print(m["NumGC"], m["HeapAlloc"])' ||
		die "reading /debug/vars from admin port $1 failed"
}
machine_ticks() { # busy idle, all CPUs, from /proc/stat
	local _cpu user nice system idle iowait irq softirq steal _rest
	read -r _cpu user nice system idle iowait irq softirq steal _rest </proc/stat
	echo "$((user + nice + system + irq + softirq + steal)) $((idle + iowait))"
}

RUNS=$OUT_DIR/runs.jsonl
: >"$RUNS"

# run_wrk TARGET(A|B) KIND(warmup|run|profile) ROUND ORDER SECONDS
run_wrk() {
	local target=$1 kind=$2 round=$3 order=$4 secs=$5
	local port ids gw_pid adm v0 v1
	if [[ $target == A ]]; then port=$P_A ids=$TMP/fake.txt gw_pid=$PID_A adm=$ADM_A; else port=$P_B ids=$TMP/sessions.txt gw_pid=$PID_B adm=$ADM_B; fi
	local raw=$OUT_DIR/wrk-$kind-r$round-$target.txt
	local g0 u0 w0 m0 g1 u1 w1 m1 o0 o1 other_pid
	if [[ $target == A ]]; then other_pid=$PID_B; else other_pid=$PID_A; fi
	kill -0 "$gw_pid" 2>/dev/null || die "gateway $target (pid $gw_pid) is not running"
	v0=$(go_vars "$adm") # outside the CPU window
	g0=$(cpu_ticks "$gw_pid") u0=$(cpu_ticks "$PID_UPSTREAM") o0=$(cpu_ticks "$other_pid") w0=$(child_ticks) m0=$(machine_ticks)
	# In the background + wait, so INT/TERM reach the trap at once, not after wrk ends.
	timeout $((secs + 30)) wrk -t"$THREADS" -c"$CONNECTIONS" -d"${secs}s" --timeout 5s --latency \
		-s "$TMP/rotate.lua" "http://127.0.0.1:$port/api/bench" -- "$ids" >"$raw" 2>&1 &
	BG_PIDS+=("$!")
	wait "${BG_PIDS[-1]}" || die "wrk failed against $target (see $raw)"
	unset "BG_PIDS[-1]"
	m1=$(machine_ticks) w1=$(child_ticks) g1=$(cpu_ticks "$gw_pid") u1=$(cpu_ticks "$PID_UPSTREAM") o1=$(cpu_ticks "$other_pid")
	v1=$(go_vars "$adm")
	python3 - "$raw" "$RUNS" "$target" "$kind" "$round" "$order" "$((g1 - g0))" "$((u1 - u0))" "$((w1 - w0 + o1 - o0))" "$m0" "$m1" "$CLK_TCK" "$v0" "$v1" <<'EOF'
import json, re, sys
raw, runs, target, kind, rnd, order, gt, ut, wt, m0, m1, tck, v0, v1 = sys.argv[1:]
text = open(raw).read()
m = re.search(r"^BENCH_JSON (\{.*\})$", text, re.M)
if not m:
    sys.exit("no BENCH_JSON line in %s" % raw)
r = json.loads(m.group(1))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
r["non2xx"] = int(non2xx.group(1)) if non2xx else 0
errs = {k: v for k, v in r.items() if (k.startswith("err_") or k == "non2xx") and v}
if errs or r["requests"] == 0:
    sys.exit("target %s (%s, round %s): wrk reported errors %s over %d requests; see %s"
             % (target, kind, rnd, errs, r["requests"], raw))
tck = int(tck)
mb0, mi0 = map(int, m0.split()); mb1, mi1 = map(int, m1.split())
r.update(target=target, kind=kind, round=int(rnd), order=order,
         rps=r["requests"] / (r["duration_us"] / 1e6),
         gw_cpu_s=int(gt) / tck, up_cpu_s=int(ut) / tck,
         gw_cpu_us_per_req=int(gt) / tck * 1e6 / r["requests"],
         up_cpu_us_per_req=int(ut) / tck * 1e6 / r["requests"],
         wrk_cpu_s=int(wt) / tck,
         gc_per_1k_req=(int(v1.split()[0]) - int(v0.split()[0])) * 1000 / r["requests"],
         heap_mb=int(v1.split()[1]) / 2**20,
         machine_busy=(mb1 - mb0) / max(1, (mb1 - mb0) + (mi1 - mi0)),
         # CPU (in cores) used by anything but wrk, the gateways and the upstream during the run
         other_cores=max(0, (mb1 - mb0) - int(gt) - int(ut) - int(wt)) / tck / (r["duration_us"] / 1e6))
with open(runs, "a") as f:
    f.write(json.dumps(r) + "\n")
print("%-7s r%-2s %s: %9.0f req/s  p50 %6d us  p99 %6d us  gateway %.1f us/req  machine busy %.0f%%  other load %.2f cores"
      % (kind, rnd, target, r["rps"], r["p50_us"], r["p99_us"], r["gw_cpu_us_per_req"], 100 * r["machine_busy"], r["other_cores"]))
EOF
}

log "warm-up: ${WARMUP_S}s each"
run_wrk A warmup 0 - "$WARMUP_S" >&2
run_wrk B warmup 0 - "$WARMUP_S" >&2

log "$ROUNDS rounds of ${DURATION_S}s per target, wrk -t$THREADS -c$CONNECTIONS (alternating order)"
REDIS_CALLS0=$(redis_calls) REDIS_SCRIPTS0=$(redis_scripts)
for ((r = 1; r <= ROUNDS; r++)); do
	if ((r % 2 == 1)); then order=(A B) ord=AB; else order=(B A) ord=BA; fi
	for t in "${order[@]}"; do
		sleep 1
		run_wrk "$t" run "$r" "$ord" "$DURATION_S" >&2
	done
done
REDIS_CALLS1=$(redis_calls) REDIS_SCRIPTS1=$(redis_scripts)

# ---------------------------------------------------------------- optional profile
if [[ $PROFILE == 1 ]]; then
	for t in A B; do
		if [[ $t == A ]]; then adm=$ADM_A; else adm=$ADM_B; fi
		prof=$OUT_DIR/cpu-$t.pprof
		(sleep 1 && curl -sS --max-time $((PROFILE_SECONDS + 15)) -o "$prof" \
			"http://127.0.0.1:$adm/debug/pprof/profile?seconds=$PROFILE_SECONDS") &
		BG_PIDS+=("$!")
		log "profiling $t for ${PROFILE_SECONDS}s during an extra run (not counted)"
		run_wrk "$t" profile 0 - $((PROFILE_SECONDS + 3)) >&2
		wait "${BG_PIDS[-1]}" || die "fetching the CPU profile of $t failed"
		unset "BG_PIDS[-1]"
		go tool pprof -top -nodecount=30 "$CADDY" "$prof" >"$OUT_DIR/pprof-top-$t.txt" 2>&1 || true
		go tool pprof -top -cum -nodecount=40 "$CADDY" "$prof" >"$OUT_DIR/pprof-topcum-$t.txt" 2>&1 || true
		if [[ $t == B ]]; then
			# rebell_auth's own work: samples under the plugin, minus what it calls next (reverse_proxy).
			go tool pprof -top -nodecount=20 -focus 'caddy-rebell' -ignore 'reverseproxy' "$CADDY" "$prof" \
				>"$OUT_DIR/pprof-rebell-B.txt" 2>&1 || true
		fi
	done
fi

# ---------------------------------------------------------------- summary
{
	echo "rebell-bench $(date -u +%FT%TZ)  commit $(git --no-optional-locks -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git --no-optional-locks -C "$REPO_ROOT" diff --quiet HEAD -- . ':!bench' 2>/dev/null || echo ' (+ uncommitted changes)')"
	echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), shared by wrk, A, B and the upstream (nothing pinned)"
	echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION_S}s x $ROUNDS rounds, warm-up ${WARMUP_S}s; gateways GOMAXPROCS=$GW_GOMAXPROCS; $SESSIONS sessions rotated in B; B max_sessions ${B_MAX_SESSIONS:-default}${B_STORE:+; B store $B_STORE}${B_IDENTITY:+; B identity_assertion (Ed25519)}"
	echo "gateway RSS after the runs: A $(awk '/VmRSS/{print $2, $3}' "/proc/$PID_A/status"), B $(awk '/VmRSS/{print $2, $3}' "/proc/$PID_B/status")"
	if [[ $B_STORE == redis ]]; then
		echo "B store redis: $((REDIS_CALLS1 - REDIS_CALLS0)) Redis commands (INFO commandstats: also those run inside Lua scripts; not INFO, PING) during B's $(python3 -c 'import json,sys; print(sum(r["requests"] for r in map(json.loads, open(sys.argv[1])) if r["target"] == "B" and r["kind"] == "run"))' "$RUNS") measured requests, from $((REDIS_SCRIPTS1 - REDIS_SCRIPTS0)) script runs (each session's copy is compared with Redis once a minute: one script run, 3 commands)"
	fi
} >"$OUT_DIR/summary.txt"
python3 - "$RUNS" "$TARGET_RATIO" "$TARGET_P99" >>"$OUT_DIR/summary.txt" <<'EOF'
import json, statistics as st, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
target_ratio, target_p99 = float(sys.argv[2]), float(sys.argv[3])
rounds = sorted({r["round"] for r in runs if r["kind"] == "run"})
by = {(r["round"], r["target"]): r for r in runs if r["kind"] == "run"}
hdr = ("round", "order", "A req/s", "B req/s", "B/A", "A p50", "A p99", "B p50", "B p99", "p99 B/A", "A cpu/req", "B cpu/req", "other")
fmt = "%-6s %-5s %9s %9s %6s %7s %7s %7s %7s %7s %9s %9s %5s"
print()
print("latencies in us; cpu/req = CPU us of the gateway process per request;")
print("other = cores used by processes other than wrk, the gateways and the upstream (noise; ~0 is clean)")
print(fmt % hdr)
rows = []
for n in rounds:
    a, b = by[(n, "A")], by[(n, "B")]
    row = dict(ra=a["rps"], rb=b["rps"], ratio=b["rps"] / a["rps"], a50=a["p50_us"], a99=a["p99_us"],
               b50=b["p50_us"], b99=b["p99_us"], p99r=b["p99_us"] / a["p99_us"],
               ca=a["gw_cpu_us_per_req"], cb=b["gw_cpu_us_per_req"], other=max(a["other_cores"], b["other_cores"]))
    rows.append(row)
    print(fmt % (n, a["order"], "%.0f" % row["ra"], "%.0f" % row["rb"], "%.3f" % row["ratio"], row["a50"], row["a99"],
                 row["b50"], row["b99"], "%.3f" % row["p99r"], "%.1f" % row["ca"], "%.1f" % row["cb"], "%.2f" % row["other"]))
med = {k: st.median(r[k] for r in rows) for k in rows[0]}
print(fmt % ("median", "", "%.0f" % med["ra"], "%.0f" % med["rb"], "%.3f" % med["ratio"], "%.0f" % med["a50"], "%.0f" % med["a99"],
             "%.0f" % med["b50"], "%.0f" % med["b99"], "%.3f" % med["p99r"], "%.1f" % med["ca"], "%.1f" % med["cb"], "%.2f" % med["other"]))
up = st.median(r["up_cpu_us_per_req"] for r in runs if r["kind"] == "run")
print()
print("ratios are medians of the per-round (paired) ratios; ratio of median throughputs = %.3f" % (med["rb"] / med["ra"]))
dcpu = st.median(r["cb"] - r["ca"] for r in rows)
print("gateway CPU per request: A %.1f us, B %.1f us; B - A per round (median) %+.1f us; upstream %.1f us/req"
      % (med["ca"], med["cb"], dcpu, up))
gc = {t: st.median(r["gc_per_1k_req"] for r in runs if r["kind"] == "run" and r["target"] == t) for t in "AB"}
hp = {t: st.median(r["heap_mb"] for r in runs if r["kind"] == "run" and r["target"] == t) for t in "AB"}
print("Go GC: A %.2f cycles per 1000 requests (heap %.0f MiB), B %.2f (heap %.0f MiB)" % (gc["A"], hp["A"], gc["B"], hp["B"]))
if gc["A"] > 2 * gc["B"]:
    print("  note: B collects much less often because its heap is bigger (its sessions, and with")
    print("  B_STORE=redis the store client's buffers); this makes B's CPU per request look cheaper.")
ok_t = med["ratio"] >= target_ratio
ok_p = med["p99r"] <= target_p99
print("throughput B/A %.3f  (target >= %.2f): %s" % (med["ratio"], target_ratio, "PASS" if ok_t else "FAIL"))
print("p99 B/A        %.3f  (target <= %.2f): %s" % (med["p99r"], target_p99, "PASS" if ok_p else "FAIL"))
lo, hi = min(r["ratio"] for r in rows), max(r["ratio"] for r in rows)
print("overall: %s  (a miss does not change the exit code)" % ("PASS" if ok_t and ok_p else "FAIL"))
print("noise: per-round throughput B/A ranged %.3f..%.3f; a verdict inside that band is not a finding" % (lo, hi))
EOF
echo
cat "$OUT_DIR/summary.txt"
if [[ $PROFILE == 1 ]]; then
	for t in A B; do
		echo
		echo "=== CPU profile of $t (${PROFILE_SECONDS}s, top 30 flat; cumulative in $OUT_DIR/pprof-topcum-$t.txt) ==="
		sed -n '1,40p' "$OUT_DIR/pprof-top-$t.txt"
	done
	echo
	echo "=== rebell_auth's own share of B's CPU (focus=caddy-rebell, ignore=reverseproxy) ==="
	sed -n '/^Showing nodes accounting/,$p' "$OUT_DIR/pprof-rebell-B.txt" | head -n 18
fi
echo
echo "raw wrk output, runs.jsonl and summary.txt: $OUT_DIR"
