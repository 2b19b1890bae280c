#!/usr/bin/env bash
# Raises the open-files limit to the hard limit (each side holds up to ~19,900 sockets) and puts
# the load generator on CPU 1; it starts each server under test on CPU 0.
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)"
if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
  exec taskset -c "${BENCH_LOAD_CPU:-1}" node dist-bench/bench/run.js
fi
exec node dist-bench/bench/run.js
