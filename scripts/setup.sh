#!/usr/bin/env bash
# Set up a machine for bundler's demo, tests and benchmarks (Debian, Python >= 3.11):
# the Debian packages docker-registry, skopeo and umoci, and a virtualenv .venv with
# bundler installed in editable mode with its test extra. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v skopeo >/dev/null || need+=(skopeo)
command -v umoci >/dev/null || need+=(umoci)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
# byte-compile the package as a regular pip install would (an editable install leaves it
# to the first import, which PYTHONDONTWRITEBYTECODE=1 turns into a compile on every run)
.venv/bin/python -m compileall -q bundler >/dev/null
# the Go tools the referrer tests drive (oras, and a registry with the referrers API):
# built from the Go module proxy into .tools/bin; without Go those tests are skipped
if command -v go >/dev/null; then
  bash scripts/go-peers.sh >/dev/null
fi
