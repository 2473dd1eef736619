#!/usr/bin/env bash
# Builds outpost-agent for one device target: cross/build.sh TARGET
#   TARGET: x86_64-unknown-linux-musl | aarch64-unknown-linux-musl | armv7-unknown-linux-gnueabihf
# Links with cargo-zigbuild (zig as the C compiler and linker for every target; README says why). Prints the
# path of the stripped binary on the last line of stdout. Environment:
#   OUTPOST_CROSS_TARGET_DIR  cargo target dir (default /var/tmp/outpost-cross-target, apart from host builds)
#   OUTPOST_CROSS_PROFILE     cargo profile (default `edge`: release optimised for size, see Cargo.toml)
set -euo pipefail
cd "$(dirname "$0")/.."

target=${1:-}
profile=${OUTPOST_CROSS_PROFILE:-edge}
export CARGO_TARGET_DIR=${OUTPOST_CROSS_TARGET_DIR:-/var/tmp/outpost-cross-target}

case "$target" in
  x86_64-unknown-linux-musl | aarch64-unknown-linux-musl) zig_target=$target ;;
  # rustup has no armv7 musl std here: link against glibc, and pin the oldest glibc we promise (2.17).
  armv7-unknown-linux-gnueabihf) zig_target=$target.2.17 ;;
  *)
    echo "usage: cross/build.sh x86_64-unknown-linux-musl|aarch64-unknown-linux-musl|armv7-unknown-linux-gnueabihf" >&2
    exit 2
    ;;
esac

# Tools: the Rust std for the target (rustup), zig and cargo-zigbuild (both ship as PyPI wheels, so a fresh
# machine needs no download outside the package registries).
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$target"; then
  rustup target add "$target" >&2
fi
if ! command -v cargo-zigbuild >/dev/null || ! { command -v zig >/dev/null || python3 -m ziglang version >/dev/null 2>&1; }; then
  python3 -m pip install --quiet --disable-pip-version-check ziglang cargo-zigbuild >&2
fi

# The `edge` profile aborts on panic, so nothing unwinds: unwind tables would only serve backtraces, which a
# stripped binary cannot symbolise anyway (about -22 KB on aarch64; std's prebuilt functions keep theirs).
if [ "$profile" = edge ]; then
  export RUSTFLAGS="${RUSTFLAGS:-} -C force-unwind-tables=no"
fi

start=$(date +%s)
cargo zigbuild --locked -p outpost-agent --bin outpost-agent --profile "$profile" --target "$zig_target" >&2
bin=$CARGO_TARGET_DIR/$target/$profile/outpost-agent
[ -x "$bin" ] || { echo "cross/build.sh: no binary at $bin" >&2; exit 2; }
echo "cross/build.sh: $target ($profile) built in $(($(date +%s) - start)) s: $(stat -c %s "$bin") bytes" >&2
echo "$bin"
