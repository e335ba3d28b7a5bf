#!/usr/bin/env bash
# The whole test suite, one command on a fresh machine: installs what the
# tests need (when missing), builds once, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

need_cmd() { command -v "$1" >/dev/null 2>&1; }

# Services used by the integration tests (Redis, Prometheus with promtool,
# PostgreSQL) come from Debian's packages. They are installed whenever one is
# missing (the tests FAIL without them, they never skip); when all are there
# this costs a few `command -v`.
install_services() {
  local missing=()
  need_cmd redis-server || missing+=(redis-server)
  { need_cmd prometheus && need_cmd promtool; } || missing+=(prometheus)
  compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || missing+=(postgresql)
  # Node.js and npm for the Mermaid parser of tests/mermaid.rs.
  need_cmd node || missing+=(nodejs)
  need_cmd npm || missing+=(npm)
  # groff renders the man page in tests/cli.rs.
  need_cmd groff || missing+=(groff-base)
  # ssh-keygen and ssh-agent make and hold the keys of signed approvals.
  { need_cmd ssh-keygen && need_cmd ssh-agent && need_cmd ssh-add; } || missing+=(openssh-client)
  # Headless Chromium and its WebDriver for the page of `runbook serve`.
  need_cmd chromium || missing+=(chromium)
  need_cmd chromedriver || missing+=(chromium-driver)
  [ ${#missing[@]} -eq 0 ] && return 0

  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    if need_cmd sudo && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      echo "missing: ${missing[*]}; install them as root:" >&2
      echo "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
      exit 1
    fi
  fi
  echo "installing: ${missing[*]}"
  # Keep package scripts from starting system daemons (Prometheus on
  # 0.0.0.0:9090, Redis on 6379, PostgreSQL on 5432): a policy-rc.d that
  # denies every start, removed again if we put it there.
  local guard=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${sudo[@]}" chmod +x /usr/sbin/policy-rc.d
    guard=/usr/sbin/policy-rc.d
  fi
  local log rc=0
  log=$(mktemp)
  {
    "${sudo[@]}" apt-get update -qq &&
      "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends -o Dpkg::Use-Pty=0 -o DPkg::Lock::Timeout=300 \
        "${missing[@]}"
  } >"$log" 2>&1 || rc=$?
  [ -n "$guard" ] && "${sudo[@]}" rm -f "$guard"
  if [ "$rc" != 0 ]; then
    echo "installing ${missing[*]} failed (exit $rc):" >&2
    tail -n 40 "$log" >&2
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
  hash -r
}
install_services

# The real Mermaid parser that tests/mermaid.rs runs (the `mermaid` npm
# package, with jsdom for its DOM), as pinned by tests/mermaid/package-lock.json.
# `npm ci` runs only when the lock file changed since the last install (its
# hash is kept in node_modules), so a warm machine pays one sha256sum.
install_mermaid_checker() {
  local dir=tests/mermaid
  local stamp="$dir/node_modules/.package-lock.sha256" want log
  want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && return 0
  echo "installing the Mermaid checker (npm ci in $dir)"
  log=$(mktemp)
  if ! (cd "$dir" && npm ci --no-audit --no-fund) >"$log" 2>&1; then
    echo "npm ci in $dir failed:" >&2
    tail -n 40 "$log" >&2
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
  echo "$want" >"$stamp"
}
install_mermaid_checker

cargo build --all-targets --locked --features fault-injection 2>&1 | tail -n 3
cargo clippy --all-targets --locked --features fault-injection -- -D warnings 2>&1 | tail -n 3
cargo fmt --all -- --check
# The test log goes under cargo's target dir, wherever CARGO_TARGET_DIR puts it.
target_dir="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target_dir"
log="$target_dir/test-output.txt"
cargo test --locked --features fault-injection -- --test-threads "$(nproc)" 2>&1 | tee "$log" | grep -E '^(test result|running|failures:|---- |thread )' || true
grep -q 'test result: FAILED\|error: test failed' "$log" && { tail -n 60 "$log"; exit 1; }
if ! grep -q '^test result: ok' "$log"; then tail -n 60 "$log"; exit 1; fi
passed=$(grep -o '[0-9]* passed' "$log" | awk '{s+=$1} END {print s+0}')
failed=$(grep -o '[0-9]* failed' "$log" | awk '{s+=$1} END {print s+0}')
echo "$passed passed, $failed failed"
