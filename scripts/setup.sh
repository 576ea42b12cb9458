#!/usr/bin/env bash
# Installs what Chorus needs on a fresh Debian machine with Python 3.11 (idempotent, quick when done).
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step's time, so that a slow setup shows where it went.
timed() {
  local label=$1 t0=$SECONDS
  shift
  "$@"
  echo "setup: $label took $((SECONDS - t0)) s"
}

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v prometheus >/dev/null || missing+=(prometheus)
# The local AT Protocol network (ops/devnet): PostgreSQL for its AppView (Debian keeps initdb and
# pg_ctl in /usr/lib/postgresql/<version>/bin, off PATH), Node.js for the servers, and a C++
# toolchain for better-sqlite3, which is compiled here (no prebuilt binary is fetched).
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
# Debian's nodejs ships its headers (for the native build) in libnode-dev.
command -v node >/dev/null || missing+=(nodejs npm libnode-dev)
command -v g++ >/dev/null || missing+=(g++)
command -v make >/dev/null || missing+=(make)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]} from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  install_packages() {
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  }
  timed "apt-get install" install_packages
fi

# ops/devnet/node_modules: the exact versions of package-lock.json. A marker records the lockfile's
# sha256 and node's version it was built for; while both match and the native module loads, this
# step is skipped.
devnet_modules() {
  local dir=ops/devnet marker=ops/devnet/node_modules/.chorus-setup want
  want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1) node-$(node --version)"
  if [ "$(cat "$marker" 2>/dev/null)" = "$want" ] &&
    (cd "$dir" && node -e "new (require('better-sqlite3'))(':memory:')" 2>/dev/null); then
    echo "setup: ops/devnet/node_modules is up to date"
    return
  fi
  # --ignore-scripts, then only better-sqlite3 is built: with build-from-source set for the whole
  # install, sharp would try to compile itself too (it ships a prebuilt binary as a package).
  (cd "$dir" && timed "npm ci (ops/devnet)" npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  # Node's own headers when they sit beside it (/usr for Debian's and NodeSource's packages,
  # /usr/local for a tarball), so that node-gyp does not download them.
  local prefix
  prefix="$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")"
  if [ -f "$prefix/include/node/node.h" ]; then export npm_config_nodedir="$prefix"; fi
  (cd "$dir" && export npm_config_build_from_source=true &&
    timed "npm rebuild better-sqlite3 (compiles SQLite)" npm rebuild better-sqlite3 --loglevel=error)
  (cd "$dir" && node -e "new (require('better-sqlite3'))(':memory:'); require('sharp')")
  echo "$want" >"$marker"
}
devnet_modules

# llama-cpp-python builds llama.cpp from source (minutes on two cores). pip keeps the built wheel
# in its cache, so only the first install on a machine pays; these flags skip what Chorus never
# runs (examples, tests, the HTTP server) and keep the build portable across x86-64 CPUs.
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF -DGGML_NATIVE=OFF}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
timed "pip install -e .[dev]" python3 -m pip install --disable-pip-version-check -q -e ".[dev]"
