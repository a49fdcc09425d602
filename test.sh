#!/usr/bin/env bash
# Runs the whole test suite: formatting, vet, every test with the race
# detector (unit, end to end through a real Caddy built from ./cmd/caddy, and
# the fuzz targets' seed corpora), the allocation guards without it, then
# each fuzz target briefly.
#
#   ./test.sh                 # FUZZTIME=10000x (executions) per fuzz target by default
#   FUZZTIME=0 ./test.sh      # skip the fuzzing pass
#
# The budget is a count, not a duration: with a duration, Go 1.26's fuzz
# coordinator can report a bare "context deadline exceeded" at the deadline on
# a loaded machine without having found anything (go.dev/issue/75804, fixed in
# Go 1.27). A count has no deadline to race.
set -euo pipefail
cd "$(dirname "$0")"

fuzztime=${FUZZTIME:-10000x}

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.git/*'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change:" $unformatted >&2
	exit 1
fi
go vet ./...
go test -race -count=1 -timeout 20m ./...
# The allocation guards (testing.AllocsPerRun) skip under the race detector,
# which allocates on its own: run them again without it. Their names contain
# "Alloc".
go test -count=1 -run 'Alloc' $(grep -rl --include='*_test.go' 'testing.AllocsPerRun' . | xargs -n1 dirname | sort -u)

# The Mini App helper, against a real gateway (miniapp/testgateway.js), and
# its types (tsc --noEmit, skipped without TypeScript unless
# REBELL_REQUIRE_NODE is set) and package (npm pack, npm install); and
# the Node upstream example verifying the identity assertion
# (upstream/node, docs/upstream.md; it needs `npm ci` there, as .ci/run does).
if command -v node >/dev/null 2>&1; then
	node --test miniapp/*.test.js upstream/node/*.test.mjs
elif [ -n "${REBELL_REQUIRE_NODE:-}" ]; then
	echo "node is required for miniapp/ tests" >&2
	exit 1
else
	echo "node not found: skipping the miniapp/ tests" >&2
fi

if [ "$fuzztime" != "0" ]; then
	# go test -fuzz takes one target in one package at a time.
	for pkg in $(go list ./...); do
		dir=$(go list -f '{{.Dir}}' "$pkg")
		for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
			echo "fuzz $pkg $target for $fuzztime"
			go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"
		done
	done
fi
# A 60 s soak through real Caddy processes (docs/rebell-calls.md, bench/README.md).
if [ "${SOAK:-1}" != "0" ]; then
	DURATION=60s WARMUP=40s bench/soak.sh
fi
echo "all tests passed"
