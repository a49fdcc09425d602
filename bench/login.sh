#!/usr/bin/env bash
# bench/login.sh: what a login costs the gateway, against its floor.
#
#   bench/login.sh                          # ROUNDS=3 LOGINS=2500 CONCURRENCY=8
#   BASE=/path/to/other/checkout bench/login.sh   # interleave with another build
#
# Builds Caddy (and, with BASE, Caddy from that checkout too), starts the
# Rebell sandbox in its own Caddy process and a memory-only gateway in
# another, and has bench/login issue LOGINS auth codes and then log in with
# them CONCURRENCY at a time, reading the gateway's CPU time around the
# logins. The floor is one RSA-2048 sign + verify, timed in the driver right
# before and right after each run. Each round measures each build (BASE first
# in odd rounds, last in even ones) on a fresh gateway. Everything listens on 127.0.0.1; every
# process started here is stopped on exit. See bench/README.md.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
LOGINS=${LOGINS:-2500}
CONCURRENCY=${CONCURRENCY:-8}
WARMUP_LOGINS=${WARMUP_LOGINS:-200}
BASE=${BASE:-}
PROFILE=${PROFILE:-0}
OUT_DIR=${OUT_DIR:-$(pwd)/bench/out/login-$(date -u +%Y%m%dT%H%M%SZ)}

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$BENCH_DIR/.." && pwd)

log() { printf '[login.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[login.sh] ERROR: %s\n' "$*" >&2; exit 1; }

for tool in go openssl; do command -v "$tool" >/dev/null || die "$tool is not on the PATH"; done
[[ $ROUNDS =~ ^[0-9]+$ ]] && ((ROUNDS >= 1 && ROUNDS <= 50)) || die "ROUNDS must be 1..50"
[[ $LOGINS =~ ^[0-9]+$ ]] && ((LOGINS >= 100)) || die "LOGINS must be ≥ 100"
[[ $CONCURRENCY =~ ^[0-9]+$ ]] && ((CONCURRENCY >= 1 && CONCURRENCY <= 256)) || die "CONCURRENCY must be 1..256"
[[ -z $BASE || -f $BASE/cmd/caddy/main.go ]] || die "BASE=$BASE is not a checkout of this repository"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/rebell-login.XXXXXX")
PIDS=()
cleanup() {
	local rc=$? pid
	trap - EXIT INT TERM
	for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
	rm -rf "$TMP"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "building"
(cd "$REPO_ROOT" && go build -o "$TMP/caddy-this" ./cmd/caddy && go build -o "$TMP/driver" ./bench/login) || die "go build failed"
BUILDS=(this)
if [[ -n $BASE ]]; then
	(cd "$BASE" && go build -o "$TMP/caddy-base" ./cmd/caddy) || die "go build of BASE failed"
	BUILDS=(base this)
fi

mkdir -m 700 "$TMP/keys"
for k in merchant sandbox; do
	openssl genrsa -out "$TMP/keys/$k.pem" 2048 2>/dev/null
	openssl rsa -in "$TMP/keys/$k.pem" -pubout -out "$TMP/keys/$k.pub" 2>/dev/null
done
read -r P_SB A_SB P_GW A_GW < <("$TMP/driver" -free-ports 4)

global_opts() { printf '{\n\tadmin 127.0.0.1:%s\n\tpersist_config off\n\tauto_https off\n\tgrace_period 1s\n}\n' "$1"; }
{
	global_opts "$A_SB"
	cat <<EOF
http://127.0.0.1:$P_SB {
	rebell_sandbox {
		client_id LOGIN_BENCH
		merchant_public_key_file $TMP/keys/merchant.pub
		private_key_file $TMP/keys/sandbox.pem
		access_token_ttl 24h
		refresh_token_ttl 720h
	}
}
EOF
} >"$TMP/sandbox.Caddyfile"
{
	global_opts "$A_GW"
	cat <<EOF
http://127.0.0.1:$P_GW {
	rebell_auth {
		endpoint http://127.0.0.1:$P_SB
		client_id LOGIN_BENCH
		private_key_file $TMP/keys/merchant.pem
		rebell_public_key_file $TMP/keys/sandbox.pub
		login_dedup_window 0s
		# Every login comes from 127.0.0.1: no per-address limit, and no
		# cap of login calls that the bench would reach.
		login_rate off
		login_calls_per_second 100000
	}
	respond "ok" 200
}
EOF
} >"$TMP/gateway.Caddyfile"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
PID=
start_caddy() { # binary name port
	mkdir -p "$TMP/home-$2"
	env HOME="$TMP/home-$2" XDG_DATA_HOME="$TMP/home-$2/data" XDG_CONFIG_HOME="$TMP/home-$2/config" \
		"$1" run --config "$TMP/$2.Caddyfile" --adapter caddyfile >"$TMP/$2.log" 2>&1 &
	PID=$!
	PIDS+=("$PID")
	local i
	for i in $(seq 300); do
		kill -0 "$PID" 2>/dev/null || { tail -n 5 "$TMP/$2.log" >&2; die "caddy '$2' exited during start-up"; }
		port_open "$3" && return 0
		sleep 0.1
	done
	die "caddy '$2' did not listen on 127.0.0.1:$3 within 30 s"
}
stop() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

start_caddy "$TMP/caddy-this" sandbox "$P_SB"
log "sandbox up; $ROUNDS rounds of $LOGINS logins at concurrency $CONCURRENCY per build (${BUILDS[*]})"

declare -A RES
printf '%-6s %-6s %10s %12s %8s %10s\n' round build floor_us gw_us/login ratio logins/s
for r in $(seq "$ROUNDS"); do
	order=("${BUILDS[@]}")
	if ((r % 2 == 0)) && ((${#BUILDS[@]} == 2)); then order=(this base); fi
	for b in "${order[@]}"; do
		# The floor is timed right before and right after the run, and
		# averaged: the machine's speed drifts (shared cores).
		f1=$("$TMP/driver" -floor 300 | awk '/^floor_us/{print $2}')
		start_caddy "$TMP/caddy-$b" gateway "$P_GW"
		gw=$PID
		prof=()
		if [[ $PROFILE == 1 ]] && ((r == ROUNDS)); then
			mkdir -p "$OUT_DIR"
			cp "$TMP/caddy-$b" "$OUT_DIR/caddy-$b"
			prof=(-admin "127.0.0.1:$A_GW" -profile "$OUT_DIR/cpu-$b.pprof")
		fi
		out=$("$TMP/driver" "${prof[@]}" -sandbox "http://127.0.0.1:$P_SB" -gateway "http://127.0.0.1:$P_GW" -pid "$gw" \
			-logins "$LOGINS" -concurrency "$CONCURRENCY" -warmup "$WARMUP_LOGINS" -floor 0) || die "the driver failed"
		stop "$gw"
		f2=$("$TMP/driver" -floor 300 | awk '/^floor_us/{print $2}')
		floor=$(awk -v a="$f1" -v b="$f2" 'BEGIN{printf "%.1f", (a+b)/2}')
		per=$(awk '/^gateway_cpu_us_per_login/{print $2}' <<<"$out")
		rate=$(awk '/^logins_per_s/{print $2}' <<<"$out")
		ratio=$(awk -v a="$per" -v b="$floor" 'BEGIN{printf "%.2f", a/b}')
		RES[$b]+="$ratio "
		printf '%-6s %-6s %10s %12s %8s %10s\n' "$r" "$b" "$floor" "$per" "$ratio" "$rate"
	done
done
[[ $PROFILE == 1 ]] && log "profiles of the last round in $OUT_DIR (go tool pprof -top $OUT_DIR/caddy-this $OUT_DIR/cpu-this.pprof)"
for b in "${BUILDS[@]}"; do
	med=$(tr ' ' '\n' <<<"${RES[$b]}" | grep . | sort -n | awk '{a[NR]=$1} END{print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}')
	printf 'median ratio %-5s %s (gateway CPU per login / one RSA-2048 sign+verify; target ≤ 1.2)\n' "$b" "$med"
done
