#!/usr/bin/env bash
# The test entry point (README's test command; .ci/run calls exactly this). Installs what the tests
# need when it is missing, then runs the whole Rust suite. Safe to run again: each step checks
# first and does nothing when its tools are already there, so a warm run adds about a second.
#
# Needs: a Rust toolchain and python3 (Debian: python3, python3-venv). As root on Debian, missing
# system packages are installed with apt-get; elsewhere the script says what to install.
#
# Environment: SWITCHYARD_VENV (default target/python-venv) is where the Python packages of
# clients/python/requirements.txt go; the tests find its interpreter through SWITCHYARD_PYTHON.
# With arguments, they replace `--all-targets`: `scripts/test.sh --test suite python_client::` runs one file.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

log() { printf 'test.sh: %s\n' "$*" >&2; }

# System packages the tests need, as "command:debian-package" pairs; one apt-get run installs all
# that are missing.
SYSTEM_NEEDS=(
  "python3:python3"
  "openssl:openssl"  # test certificates for the Python client's TLS test
  "redis-server:redis-server"  # tests/suite/cluster.rs: replicas sharing state through Redis
)

apt_updated=0
apt_install() {
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    log "missing: $*; install these packages and run again"
    exit 1
  fi
  if [[ $apt_updated -eq 0 ]]; then
    log "apt-get update"
    apt-get update -qq
    apt_updated=1
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

install_system_needs() {
  local missing=() pair
  for pair in "${SYSTEM_NEEDS[@]}"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    apt_install "${missing[@]}"
  fi
}

# A virtual environment keeps the pinned packages apart from the system's Python (Debian refuses
# pip installs into it) and makes the check cheap: a stamp holds the hash of the requirements.
install_python_packages() {
  local venv="${SWITCHYARD_VENV:-$repo/target/python-venv}"
  local req="$repo/clients/python/requirements.txt"
  local stamp="$venv/.requirements.sha256"
  local want
  want="$(sha256sum "$req" | cut -d' ' -f1)"
  if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    export SWITCHYARD_PYTHON="$venv/bin/python"
    return
  fi
  if [[ ! -x "$venv/bin/python" ]]; then
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
      # Debian ships venv's ensurepip separately.
      rm -rf "$venv"
      apt_install python3-venv
      python3 -m venv "$venv"
    fi
  fi
  log "pip install -r clients/python/requirements.txt into $venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
  echo "$want" >"$stamp"
  export SWITCHYARD_PYTHON="$venv/bin/python"
}

install_system_needs
install_python_packages
# A whole-suite run from a clean clone gains nothing from incremental caches, which added about
# 1 GB to a 1.2 GB test build; set CARGO_INCREMENTAL=1 to keep them.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
if [[ $# -eq 0 ]]; then
  exec cargo test --all-targets
fi
exec cargo test "$@"
