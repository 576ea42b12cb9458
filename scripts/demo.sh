#!/usr/bin/env bash
# The run command: installs, starts the fleet locally (Ray, Redis, Serve) and runs the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec chorus demo "$@"
