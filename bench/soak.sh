#!/usr/bin/env bash
# bench/soak.sh: soak test of rebell_auth against real Caddy processes.
#
#   bench/soak.sh                    # DURATION=10m
#   DURATION=60s bench/soak.sh       # what CI runs (test.sh)
#
# Starts the Rebell sandbox (short token lifetimes, so sessions refresh all
# the time), one memory-only gateway, three gateways sharing a redis-server
# (store redis), and drives them with bench/soak (a Go program): logins,
# cached requests, refreshes, logouts and admin revocations, while it
# injects Rebell faults through the sandbox (outage, hang, U, rate limit,
# forged signature) and restarts Redis once. It fails when a response falls
# outside the documented set for the situation, when Rebell ever answered
# USED_REFRESH_TOKEN, or when a gateway's RSS or goroutine count at the end
# exceeds 1.2x its level at the warm-up mark (WARMUP, default min(1m,
# DURATION/3)). Prints a summary table. Everything listens on 127.0.0.1;
# every process started here is stopped on exit. See bench/README.md.
set -euo pipefail

DURATION=${DURATION:-10m}
WARMUP=${WARMUP:-0}
WORKERS=${WORKERS:-6}
ACCESS_TTL=${ACCESS_TTL:-20s}

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$BENCH_DIR/.." && pwd)

log() { printf '[soak.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
ERR_MSG=
die() { ERR_MSG=$*; printf '[soak.sh] ERROR: %s\n' "$*" >&2; exit 1; }

for tool in go openssl redis-server redis-cli; do
	command -v "$tool" >/dev/null || die "$tool is not on the PATH"
done
[[ $DURATION =~ ^[0-9]+[sm]$ ]] || die "DURATION must look like 60s or 10m (got '$DURATION')"
[[ $WORKERS =~ ^[0-9]+$ ]] && ((WORKERS >= 1 && WORKERS <= 64)) || die "WORKERS must be 1..64"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/rebell-soak.XXXXXX")
PIDS=()
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	local pid
	[[ -f $TMP/redis.pid ]] && PIDS+=("$(cat "$TMP/redis.pid")")
	for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	if ((rc != 0)) && compgen -G "$TMP/*.log" >/dev/null; then
		mkdir -p "$BENCH_DIR/out/soak-logs" && cp "$TMP"/*.log "$BENCH_DIR/out/soak-logs/" 2>/dev/null &&
			printf '[soak.sh] process logs kept in %s/out/soak-logs\n' "$BENCH_DIR" >&2
	fi
	rm -rf "$TMP"
	((rc == 0)) || printf '[soak.sh] FAILED (exit %d)%s\n' "$rc" "${ERR_MSG:+: $ERR_MSG}" >&2
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "building Caddy and the driver"
(cd "$REPO_ROOT" && go build -o "$TMP/caddy" ./cmd/caddy && go build -o "$TMP/soak" ./bench/soak) || die "go build failed"

mkdir -m 700 "$TMP/keys"
openssl genrsa -out "$TMP/keys/merchant.pem" 2048 2>/dev/null
openssl rsa -in "$TMP/keys/merchant.pem" -pubout -out "$TMP/keys/merchant.pub" 2>/dev/null
openssl genrsa -out "$TMP/keys/sandbox.pem" 2048 2>/dev/null
openssl rsa -in "$TMP/keys/sandbox.pem" -pubout -out "$TMP/keys/sandbox.pub" 2>/dev/null
STORE_KEY=$(openssl rand -base64 32)

read -r P_SB A_SB P_M A_M P_R1 A_R1 P_R2 A_R2 P_R3 A_R3 P_REDIS < <("$TMP/soak" -free-ports 11)

global_opts() {
	printf '{\n\tadmin 127.0.0.1:%s\n\tpersist_config off\n\tauto_https off\n\tgrace_period 1s\n}\n' "$1"
}

{
	global_opts "$A_SB"
	cat <<EOF
http://127.0.0.1:$P_SB {
	rebell_sandbox {
		client_id SOAK_CLIENT
		merchant_public_key_file $TMP/keys/merchant.pub
		private_key_file $TMP/keys/sandbox.pem
		access_token_ttl $ACCESS_TTL
		refresh_token_ttl 720h
	}
}
EOF
} >"$TMP/sandbox.Caddyfile"

gateway() { # name port admin store-block
	{
		global_opts "$3"
		cat <<EOF
http://127.0.0.1:$2 {
	rebell_auth {
		endpoint http://127.0.0.1:$P_SB
		client_id SOAK_CLIENT
		private_key_file $TMP/keys/merchant.pem
		rebell_public_key_file $TMP/keys/sandbox.pub
		timeout 2s
		retries 1
		refresh_ahead 5s
		max_concurrent_calls 16
		# Every login of the soak comes from 127.0.0.1.
		login_rate off
		login_calls_per_second 100000$4
	}
	respond "ok" 200
}
EOF
	} >"$TMP/$1.Caddyfile"
}
STORE="
		store redis {
			address 127.0.0.1:$P_REDIS
			key_prefix soak:
			encryption_key $STORE_KEY
		}"
gateway memory "$P_M" "$A_M" ""
gateway redis1 "$P_R1" "$A_R1" "$STORE"
gateway redis2 "$P_R2" "$A_R2" "$STORE"
gateway redis3 "$P_R3" "$A_R3" "$STORE"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_caddy NAME PORT...; sets PID_<NAME>
start_caddy() {
	local name=$1
	shift
	mkdir -p "$TMP/home-$name"
	env HOME="$TMP/home-$name" XDG_DATA_HOME="$TMP/home-$name/data" XDG_CONFIG_HOME="$TMP/home-$name/config" \
		"$TMP/caddy" run --config "$TMP/$name.Caddyfile" --adapter caddyfile >"$TMP/$name.log" 2>&1 &
	local pid=$!
	PIDS+=("$pid")
	printf -v "PID_${name^^}" '%s' "$pid"
	local port i
	for port in "$@"; do
		for i in $(seq 300); do
			kill -0 "$pid" 2>/dev/null || { tail -n 5 "$TMP/$name.log" >&2; die "caddy '$name' exited during start-up"; }
			port_open "$port" && break
			((i == 300)) && die "caddy '$name' did not listen on 127.0.0.1:$port within 30 s"
			sleep 0.1
		done
	done
}

# Redis with an append-only file, so the restart keeps the sessions (a
# restart, not a wipe). The restart command is run by the driver.
cat >"$TMP/redis-start.sh" <<EOF
#!/usr/bin/env bash
redis-server --port $P_REDIS --bind 127.0.0.1 --save "" --appendonly yes --appendfsync everysec --dir "$TMP" >>"$TMP/redis.log" 2>&1 &
echo \$! >"$TMP/redis.pid"
for i in \$(seq 100); do redis-cli -p $P_REDIS ping >/dev/null 2>&1 && exit 0; sleep 0.1; done
echo "redis-server did not answer on 127.0.0.1:$P_REDIS" >&2
exit 1
EOF
cat >"$TMP/redis-restart.sh" <<EOF
#!/usr/bin/env bash
pid=\$(cat "$TMP/redis.pid")
kill -TERM "\$pid"
for i in \$(seq 100); do kill -0 "\$pid" 2>/dev/null || break; sleep 0.1; done
sleep 2
exec bash "$TMP/redis-start.sh"
EOF
bash "$TMP/redis-start.sh" || die "redis-server did not start"

start_caddy sandbox "$A_SB" "$P_SB"
start_caddy memory "$A_M" "$P_M"
start_caddy redis1 "$A_R1" "$P_R1"
start_caddy redis2 "$A_R2" "$P_R2"
start_caddy redis3 "$A_R3" "$P_R3"
log "sandbox, 1 memory-only gateway, 3 store redis gateways and redis-server running; soaking for $DURATION"

warmup_flag=()
[[ $WARMUP == 0 ]] || warmup_flag=(-warmup "$WARMUP")
"$TMP/soak" -duration "$DURATION" "${warmup_flag[@]}" -workers "$WORKERS" \
	-sandbox "http://127.0.0.1:$P_SB" \
	-memory "http://127.0.0.1:$P_M,127.0.0.1:$A_M,$PID_MEMORY" \
	-redis "http://127.0.0.1:$P_R1,127.0.0.1:$A_R1,$PID_REDIS1;http://127.0.0.1:$P_R2,127.0.0.1:$A_R2,$PID_REDIS2;http://127.0.0.1:$P_R3,127.0.0.1:$A_R3,$PID_REDIS3" \
	-redis-restart "bash $TMP/redis-restart.sh" || die "the soak checks failed (table above)"
