#!/usr/bin/env bash
# Installs what Chorus needs on a fresh Debian machine with Python 3.11 (idempotent, quick when done).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v prometheus >/dev/null || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]} from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# llama-cpp-python builds llama.cpp from source (minutes on two cores). pip keeps the built wheel
# in its cache, so only the first install on a machine pays; these flags skip what Chorus never
# runs (examples, tests, the HTTP server) and keep the build portable across x86-64 CPUs.
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF -DGGML_NATIVE=OFF}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
python3 -m pip install --disable-pip-version-check -q -e ".[dev]"
