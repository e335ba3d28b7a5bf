#!/usr/bin/env bash
# The whole test suite, one command on a fresh machine: installs what the
# tests need (when missing), builds once, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

need_cmd() { command -v "$1" >/dev/null 2>&1; }

# Services used by the integration tests (Redis, Prometheus, PostgreSQL) come
# from Debian's packages; install them only when missing.
install_services() {
  local missing=()
  need_cmd redis-server || missing+=(redis-server)
  need_cmd prometheus || missing+=(prometheus)
  need_cmd promtool || missing+=(prometheus)
  [ -x /usr/lib/postgresql/15/bin/postgres ] || missing+=(postgresql)
  if [ ${#missing[@]} -gt 0 ] && [ "${RUNBOOK_SKIP_INSTALL:-}" != 1 ]; then
    echo "installing: ${missing[*]}"
    # Keep package scripts from starting system daemons on shared ports.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}
if [ "${RUNBOOK_NEEDS_SERVICES:-0}" = 1 ]; then install_services; fi

cargo build --all-targets --locked 2>&1 | tail -n 3
cargo clippy --all-targets --locked -- -D warnings 2>&1 | tail -n 3
cargo fmt --all -- --check
cargo test --locked -- --test-threads "$(nproc)" 2>&1 | tee target/test-output.txt | grep -E '^(test result|running|failures:|---- |thread )' || true
grep -q 'test result: FAILED\|error: test failed' target/test-output.txt && { tail -n 60 target/test-output.txt; exit 1; }
if ! grep -q '^test result: ok' target/test-output.txt; then tail -n 60 target/test-output.txt; exit 1; fi
passed=$(grep -o '[0-9]* passed' target/test-output.txt | awk '{s+=$1} END {print s+0}')
failed=$(grep -o '[0-9]* failed' target/test-output.txt | awk '{s+=$1} END {print s+0}')
echo "$passed passed, $failed failed"
