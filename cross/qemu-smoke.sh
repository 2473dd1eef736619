#!/usr/bin/env bash
# Proof that a cross-built agent runs: cross/qemu-smoke.sh TARGET
# Under qemu-user (natively for x86_64), the TARGET agent installs a signed digits bundle, passes
# `selftest`, and answers inference over its local API with onnxruntime's logits; then an FP16 model is
# installed beside it and answers within 1e-3 of onnxruntime. Prints its figures:
# binary size, idle RSS with no model and with digits v1, and cold start to first inference.
# Environment: OUTPOST_AGENT_BIN (skip the build), OUTPOST_BIN (the host `outpost` CLI).
set -euo pipefail
cd "$(dirname "$0")/.."
. cross/lib.sh
target=${1:?usage: cross/qemu-smoke.sh TARGET}
emu_for "$target"
tools_for "$target"
run=("${emu[@]}" "$agent")
work=$(mktemp -d /tmp/outpost-qemu-smoke-XXXXXX)
pid=
cleanup() {
  [ -z "$pid" ] || kill "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== $target: $agent ($(stat -c %s "$agent") bytes) under ${emu[*]:-the host CPU}"
"${run[@]}" --version
make_bundle "$work"
trust=(--trust "$work/trust.policy" --root-pub "$work/keys/root.pub")

# run_agent DATA_DIR: starts `run` in the background, sets pid and port.
run_agent() {
  port=$(free_port)
  "${run[@]}" run --data-dir "$1" --listen "127.0.0.1:$port" "${trust[@]}" >"$work/agent.log" 2>&1 &
  pid=$!
}
stop_agent() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }

echo "== idle with no model"
run_agent "$work/empty"
wait_for 60 curl -sf "http://127.0.0.1:$port/v2/health/live"
sleep 1
idle_rss=$(rss_kb "$pid")
stop_agent

echo "== install, selftest"
"${run[@]}" install "$work/digits-v1.obundle" --data-dir "$work/data" "${trust[@]}" | tee "$work/install.out"
grep -q "installed digits 1.0.0" "$work/install.out"
"${run[@]}" selftest --data-dir "$work/data" | tee "$work/selftest.out"
grep -q "selftest passed: digits 1.0.0" "$work/selftest.out"

echo "== serve and infer"
start=$(now_ms)
run_agent "$work/data"
wait_for 120 curl -sf "http://127.0.0.1:$port/v2/health/ready"
infer_digits "$port" 1 >/dev/null
first_ms=$(($(now_ms) - start))
infer_digits "$port" 32
sleep 1
model_rss=$(rss_kb "$pid")
stop_agent

echo "== an FP16 model (the edge build has no hand-written FP16 kernels on aarch64: tract's portable ones)"
"$outpost" bundle create --model $models/typed/sensor-f16.onnx --name sensor-f16 --version 1.0.0 --sequence 1 \
  --key "$work/keys/release.key" --selftest-input x=$models/typed/sensor-f16.input.x.bin \
  --out "$work/sensor-f16.obundle" >/dev/null
"${run[@]}" install "$work/sensor-f16.obundle" --data-dir "$work/data" "${trust[@]}" | tee "$work/install16.out"
grep -q "installed sensor-f16 1.0.0" "$work/install16.out"
run_agent "$work/data"
wait_for 120 curl -sf "http://127.0.0.1:$port/v2/models/sensor-f16/ready"
infer_sensor_f16 "$port"
stop_agent

echo "figure: target=$target size_bytes=$(stat -c %s "$agent") idle_rss_kb_no_model=$idle_rss" \
  "idle_rss_kb_digits_v1=$model_rss cold_start_to_first_inference_ms=$first_ms emulated=${emu[0]:-no}"
echo "== $target: ok"
