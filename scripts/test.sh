#!/usr/bin/env bash
# The test command: installs, starts a loopback redis-server, lints, type-checks and runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

port="${CHORUS_TEST_REDIS_PORT:-6390}"
if ! redis-cli -p "$port" ping >/dev/null 2>&1; then
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
    --logfile /tmp/chorus-test-redis.log
  trap 'redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true' EXIT
  for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
export CHORUS_TEST_REDIS_URL="redis://127.0.0.1:${port}/0"

echo "== ruff";  python3 -m ruff check .
echo "== mypy";  python3 -m mypy
echo "== import contracts"; lint-imports
echo "== pytest"; python3 -m pytest -q -p no:cacheprovider "$@"
