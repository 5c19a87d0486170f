#!/usr/bin/env bash
# Build the Go peers that bundler is raced against (bench/bench_peers.py) from the Go
# module proxy into .tools/bin (ignored by git): crane, oras and regctl, at pinned
# versions; and tools/referrers-registry (a test registry with the OCI 1.1 referrers
# API, our own main over go-containerregistry's pkg/registry). Needs Go (1.22 or newer). Safe to run again: a tool already built at its
# version is kept. Prints the directory on success.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$PWD/.tools/bin"
mkdir -p "$BIN"
if ! command -v go >/dev/null; then
  echo "go-peers: Go is not installed; the Go peers are skipped" >&2
  exit 1
fi
build() {  # name module version
  local name=$1 module=$2 version=$3
  if [ -x "$BIN/$name" ] && [ -f "$BIN/$name.version" ] && [ "$(cat "$BIN/$name.version")" = "$version" ]; then
    return 0
  fi
  GOBIN="$BIN" GOFLAGS=-mod=mod go install "$module@$version"
  echo "$version" > "$BIN/$name.version"
}
build crane github.com/google/go-containerregistry/cmd/crane v0.22.1
build oras oras.land/oras/cmd/oras v1.3.6
build regctl github.com/regclient/regclient/cmd/regctl v0.11.7
stamp=$(cat tools/referrers-registry/main.go tools/referrers-registry/go.mod tools/referrers-registry/go.sum | sha256sum | cut -c1-16)
if [ ! -x "$BIN/referrers-registry" ] || [ "$(cat "$BIN/referrers-registry.version" 2>/dev/null)" != "$stamp" ]; then
  (cd tools/referrers-registry && GOFLAGS=-mod=mod go build -o "$BIN/referrers-registry" .)
  echo "$stamp" > "$BIN/referrers-registry.version"
fi
echo "$BIN"
