#!/usr/bin/env bash
# Set up a machine for bundler's demo, tests and benchmarks (Debian, Python >= 3.11):
# the Debian packages docker-registry, skopeo and umoci, the peers the tests run (docker.io
# with its containerd, podman, buildah), a virtualenv .venv with bundler installed in
# editable mode with its test extra, and the Go programs of the tests and benchmarks
# (scripts/build-tools.sh, where Go is installed). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v skopeo >/dev/null || need+=(skopeo)
command -v umoci >/dev/null || need+=(umoci)
command -v dockerd >/dev/null || need+=(docker.io)
command -v ctr >/dev/null || need+=(containerd)
command -v podman >/dev/null || need+=(podman)
command -v buildah >/dev/null || need+=(buildah)
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
bash scripts/build-tools.sh
