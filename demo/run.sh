#!/usr/bin/env bash
# The bundler demo: set up (Debian packages docker-registry, skopeo, umoci and .venv),
# then export an image set from one local registry to a bundle and import it into another.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "Setting up (Debian packages and .venv) ..."
bash scripts/setup.sh
exec .venv/bin/python demo/demo.py "$@"
