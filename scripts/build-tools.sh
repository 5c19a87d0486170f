#!/usr/bin/env bash
# Build the Go programs the tests and benchmarks use into .tools/bin (gitignored; their
# code is never committed): crane and oras (real clients pulling from `bundler serve`,
# and peers in bench/bench_peers.py, with regctl) and the OCI distribution-spec
# conformance suite (`go test -c`); and tools/referrers-registry (our own test registry
# with the OCI 1.1 referrers API, over go-containerregistry's pkg/registry); and CNCF
# distribution v3's registry as distribution-registry (the first with an opt-in for sparse
# image indexes: the --platform-mode sparse tests). Versions are pinned; a program
# already built is kept. Without a Go toolchain nothing is built and those tests skip.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
CRANE_VERSION=v0.22.1
ORAS_VERSION=v1.3.6
REGCTL_VERSION=v0.11.7
CONFORMANCE_VERSION=v0.0.0-20260831232431-97274622c111
DISTRIBUTION_VERSION=v3.1.2
if ! command -v go >/dev/null; then
  echo "no Go toolchain: crane, oras and the conformance suite are not built (their tests skip)"
  exit 0
fi
bin="$PWD/.tools/bin"
mkdir -p "$bin"
build() {  # NAME PACKAGE@VERSION
  [ -x "$bin/$1" ] && return 0
  GOBIN="$bin" go install "$2" || echo "warning: $1 could not be built (its tests skip)"
}
build crane "github.com/google/go-containerregistry/cmd/crane@$CRANE_VERSION"
build oras "oras.land/oras/cmd/oras@$ORAS_VERSION"
build regctl "github.com/regclient/regclient/cmd/regctl@$REGCTL_VERSION"
stamp=$(cat tools/referrers-registry/main.go tools/referrers-registry/go.mod \
  tools/referrers-registry/go.sum | sha256sum | cut -c1-16)
if [ ! -x "$bin/referrers-registry" ] || [ "$(cat "$bin/referrers-registry.version" 2>/dev/null)" != "$stamp" ]; then
  if (cd tools/referrers-registry && GOFLAGS=-mod=mod go build -o "$bin/referrers-registry" .); then
    echo "$stamp" > "$bin/referrers-registry.version"
  else
    echo "warning: tools/referrers-registry could not be built (its tests skip)"
  fi
fi
if [ ! -x "$bin/distribution-registry" ]; then
  module="github.com/distribution/distribution/v3@$DISTRIBUTION_VERSION"
  if dir=$(cd /tmp && go mod download -json "$module" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p') \
      && [ -n "$dir" ] && (cd "$dir" && GOFLAGS=-mod=mod go build -o "$bin/distribution-registry" ./cmd/registry); then
    :
  else
    echo "warning: the distribution v3 registry could not be built (the sparse index tests skip)"
  fi
fi
if [ ! -x "$bin/oci-conformance.test" ]; then
  module="github.com/opencontainers/distribution-spec/conformance@$CONFORMANCE_VERSION"
  if dir=$(cd /tmp && go mod download -json "$module" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p') \
      && [ -n "$dir" ] && (cd "$dir" && go test -c -o "$bin/oci-conformance.test" .); then
    :
  else
    echo "warning: the OCI conformance suite could not be built (its test skips)"
  fi
fi
