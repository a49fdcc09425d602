#!/usr/bin/env bash
# Runs the whole test suite: formatting, vet, every test with the race
# detector (unit, end to end through a real Caddy built from ./cmd/caddy, and
# the fuzz targets' seed corpora), then each fuzz target briefly.
#
#   ./test.sh                 # FUZZTIME=10s per fuzz target by default
#   FUZZTIME=0 ./test.sh      # skip the fuzzing pass
set -euo pipefail
cd "$(dirname "$0")"

fuzztime=${FUZZTIME:-10s}

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.git/*'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change:" $unformatted >&2
	exit 1
fi
go vet ./...
go test -race -count=1 -timeout 20m ./...

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
echo "all tests passed"
