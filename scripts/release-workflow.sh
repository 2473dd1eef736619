#!/usr/bin/env bash
# The release-engineer workflow end to end, on the committed digits models: keys, a trust policy, signed
# bundles (full and delta), verification as a device would do it, and the refusals a device makes.
# Everything lands in ./outpost-demo/ (or $OUT). The fleet itself: `outpost-sim demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outpost-demo}
MODELS=simulations/models

echo "== building outpost (release; the first build compiles tract and takes a while)"
[ -n "${OUTPOST_BIN:-}" ] || cargo build --release -q -p outpost-controller --bin outpost
BIN=${OUTPOST_BIN:-${CARGO_TARGET_DIR:-target}/release/outpost}

rm -rf "$OUT" && mkdir -p "$OUT"
step() { printf '\n== %s\n$ %s\n' "$1" "${*:2}"; "${@:2}"; }
refuse() {
  printf '\n== %s (must be refused)\n$ %s\n' "$1" "${*:2}"
  if "${@:2}"; then echo "!! expected a refusal" >&2; exit 1; fi
}

step "root and release keys" "$BIN" keys gen --out "$OUT/keys" --name root
"$BIN" keys gen --out "$OUT/keys" --name release
step "trust policy: the release key, signed by the root key" \
  "$BIN" trust init --root-key "$OUT/keys/root.key" --release-pub "$OUT/keys/release.pub" --out "$OUT/trust.policy"
step "digits v1, full bundle, self-tests from the held-out digits" \
  "$BIN" bundle create --model $MODELS/digits-v1.onnx --name digits --version 1.0.0 --sequence 1 \
  --key "$OUT/keys/release.key" --selftest-input $MODELS/digits-test-inputs.f32 --out "$OUT/digits-v1.obundle"
step "digits v2, full bundle" \
  "$BIN" bundle create --model $MODELS/digits-v2.onnx --name digits --version 2.0.0 --sequence 2 \
  --key "$OUT/keys/release.key" --selftest-input $MODELS/digits-test-inputs.f32 --out "$OUT/digits-v2.obundle"
step "digits v2 as a delta against v1" \
  "$BIN" bundle create --model $MODELS/digits-v2.onnx --name digits --version 2.0.0 --sequence 2 \
  --key "$OUT/keys/release.key" --selftest-input $MODELS/digits-test-inputs.f32 --base $MODELS/digits-v1.onnx \
  --out "$OUT/digits-v2-delta.obundle"
step "inspect" "$BIN" bundle inspect "$OUT/digits-v2-delta.obundle"
V=("$BIN" bundle verify --trust "$OUT/trust.policy" --root-pub "$OUT/keys/root.pub")
step "verify v1 as a new device" "${V[@]}" "$OUT/digits-v1.obundle"
step "verify the v2 delta on a device running v1" "${V[@]}" "$OUT/digits-v2-delta.obundle" --floor 1 --base $MODELS/digits-v1.onnx

cp "$OUT/digits-v2.obundle" "$OUT/tampered.obundle"
printf '\x01' | dd of="$OUT/tampered.obundle" bs=1 seek=300 conv=notrunc status=none
refuse "a bundle changed in transit" "${V[@]}" "$OUT/tampered.obundle"
refuse "v1 on a device that committed v2 (rollback)" "${V[@]}" "$OUT/digits-v1.obundle" --floor 2
refuse "the v2 delta on a device running another model" "${V[@]}" "$OUT/digits-v2-delta.obundle" --base $MODELS/digits-bad.onnx
refuse "v1 half a year from now (expired)" "${V[@]}" "$OUT/digits-v1.obundle" --now $(( $(date +%s) + 200 * 86400 ))

printf '\nAll done: files in %s/\n' "$OUT"
ls -l "$OUT"
