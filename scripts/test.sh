#!/usr/bin/env bash
# The README's test command: installs what the tests use and this machine lacks, then runs
# `cargo test --workspace` (arguments, if any, go to `cargo test` instead of `--workspace`).
#
# The tests run real programs from Debian's packages rather than mocks: mosquitto (the agents' fleet tests
# start their own broker), openssl (the TLS tests make certificates), e2fsprogs (`outpost image build`
# makes ext4 images with mke2fs -d and debugfs), chromium and chromedriver (the console's tests drive a
# headless browser), Python's prometheus_client (the /metrics tests parse with a real Prometheus parser),
# libfaketime (a controller whose wall clock steps back). As
# root the script installs what is missing with apt-get; otherwise it prints the one line to run and exits
# 2, before building anything. From PyPI it installs numpy and tritonclient when missing
# (simulations/tests/requirements.txt: a real OIP client).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
# need PACKAGE CHECK...: PACKAGE is missing unless every CHECK (a command, or an absolute path that must be
# executable) is there.
need() {
  local pkg=$1 c
  shift
  for c in "$@"; do
    if [[ $c == /* ]]; then [ -x "$c" ] || { missing+=("$pkg"); return; }; else
      command -v "$c" >/dev/null || { missing+=("$pkg"); return; }
    fi
  done
}
need mosquitto /usr/sbin/mosquitto
need openssl openssl
need e2fsprogs /usr/sbin/mke2fs /usr/sbin/debugfs
need chromium /usr/bin/chromium
need chromium-driver /usr/bin/chromedriver
/usr/bin/python3 -c 'import prometheus_client' 2>/dev/null || missing+=(python3-prometheus-client)
# libfaketime moves a controller's wall clock (controller_recovery.rs: a clock that steps back).
[ -e "/usr/lib/$(uname -m)-linux-gnu/faketime/libfaketimeMT.so.1" ] || missing+=(libfaketime)

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "scripts/test.sh: installing ${missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "scripts/test.sh: the tests need Debian packages this machine lacks; install them with: sudo apt-get install -y ${missing[*]}" >&2
    exit 2
  fi
fi

# A real Open Inference Protocol client (NVIDIA's tritonclient) talks to the agent in
# agent/tests/typed_serving.rs, from PyPI.
if ! python3 -c 'import numpy, tritonclient.http' 2>/dev/null; then
  echo "scripts/test.sh: installing simulations/tests/requirements.txt (pip)"
  python3 -m pip install -q -r simulations/tests/requirements.txt
fi

if [ $# -eq 0 ]; then set -- --workspace; fi
exec cargo test "$@"
