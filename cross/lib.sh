# Shared by cross/qemu-smoke.sh and firmware-images/qemu-boot.sh (sourced, not run).
# Sets: emu (the command prefix that runs a TARGET binary here), agent (its path), outpost (the host
# controller CLI), and helpers to make a signed digits bundle, pick ports, wait, and ask for inference.

models=simulations/models

# emu_for TARGET: qemu-user for foreign CPUs (installed from Debian's packages when missing).
emu_for() {
  local pkgs=()
  case "$1" in
    aarch64-unknown-linux-musl) command -v qemu-aarch64-static >/dev/null || pkgs+=(qemu-user-static)
      emu=(qemu-aarch64-static) ;;
    # glibc for armv7: the Debian cross libc, which qemu finds through -L (the board's base system has its own).
    armv7-unknown-linux-gnueabihf) command -v qemu-arm-static >/dev/null || pkgs+=(qemu-user-static)
      [ -e /usr/arm-linux-gnueabihf/lib/ld-linux-armhf.so.3 ] || pkgs+=(libc6-armhf-cross)
      emu=(qemu-arm-static -L /usr/arm-linux-gnueabihf) ;;
    x86_64-unknown-linux-musl) emu=() ;;
    *) echo "unknown target $1" >&2; return 2 ;;
  esac
  if [ ${#pkgs[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null 2>&1 ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null; }
  fi
}

# The agent for TARGET (OUTPOST_AGENT_BIN, or built by cross/build.sh) and the host `outpost` CLI
# (OUTPOST_BIN, or a debug build in the shared target dir, which `cargo test` has usually made already).
tools_for() {
  agent=${OUTPOST_AGENT_BIN:-$(cross/build.sh "$1" | tail -1)}
  if [ -z "${OUTPOST_BIN:-}" ]; then
    CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/outpost-target} cargo build -q -p outpost-controller --bin outpost
    outpost=${CARGO_TARGET_DIR:-/var/tmp/outpost-target}/debug/outpost
  else
    outpost=$OUTPOST_BIN
  fi
}

# make_bundle DIR: root and release keys, a trust policy, and digits v1 signed with held-out self-tests.
make_bundle() {
  "$outpost" keys gen --out "$1/keys" --name root >/dev/null
  "$outpost" keys gen --out "$1/keys" --name release >/dev/null
  "$outpost" trust init --root-key "$1/keys/root.key" --release-pub "$1/keys/release.pub" --out "$1/trust.policy" >/dev/null
  "$outpost" bundle create --model $models/digits-v1.onnx --name digits --version 1.0.0 --sequence 1 \
    --key "$1/keys/release.key" --selftest-input $models/digits-test-inputs.f32 --out "$1/digits-v1.obundle" >/dev/null
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

now_ms() { date +%s%3N; }

# wait_for SECONDS COMMAND...: retries every 50 ms.
wait_for() {
  local until=$(($(date +%s) + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$until" ] || { echo "timed out waiting for: $*" >&2; return 1; }
    sleep 0.05
  done
}

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# infer_digits PORT N: sends the first N held-out digits one by one and checks every answer against
# onnxruntime's logits for digits v1 (|diff| <= 1e-3) and the label; prints "N/N correct".
infer_digits() {
  python3 - "$1" "$2" "$models" <<'PY'
import json, struct, sys, urllib.request
port, n, models = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
x = open(f"{models}/digits-test-inputs.f32", "rb").read()
want = open(f"{models}/digits-v1.ort-logits.f32", "rb").read()
labels = open(f"{models}/digits-test-labels.u8", "rb").read()
correct = 0
for i in range(n):
    data = list(struct.unpack_from("<64f", x, i * 256))
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": data}]})
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/digits/infer", body.encode(),
                                 {"Content-Type": "application/json"})
    out = json.load(urllib.request.urlopen(req, timeout=30))["outputs"][0]["data"]
    ort = struct.unpack_from("<10f", want, i * 40)
    diff = max(abs(a - b) for a, b in zip(out, ort))
    assert diff <= 1e-3, f"image {i}: logits differ from onnxruntime by {diff}"
    correct += out.index(max(out)) == labels[i]
print(f"{correct}/{n} correct, logits within 1e-3 of onnxruntime")
PY
}

# infer_sensor_f16 PORT: the FP16 typed fixture's six samples in one binary-tensor request; every value must
# be within 1e-3 of onnxruntime's (an FP16 matrix product: the path tract's FP16 kernels would take).
infer_sensor_f16() {
  python3 - "$1" "$models/typed" <<'PY'
import json, struct, sys, urllib.request
port, typed = int(sys.argv[1]), sys.argv[2]
x = open(f"{typed}/sensor-f16.input.x.bin", "rb").read()
want = struct.unpack(f"<{6 * 3}e", open(f"{typed}/sensor-f16.ort.y.bin", "rb").read())
header = json.dumps({"inputs": [{"name": "x", "shape": [6, 5], "datatype": "FP16",
                                 "parameters": {"binary_data_size": len(x)}}],
                     "parameters": {"binary_data_output": True}}).encode()
req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/sensor-f16/infer", header + x,
                             {"Inference-Header-Content-Length": str(len(header))})
resp = urllib.request.urlopen(req, timeout=60)
body = resp.read()
n = int(resp.headers["Inference-Header-Content-Length"])
out = json.loads(body[:n])["outputs"][0]
assert out["datatype"] == "FP16" and out["shape"] == [6, 3], out
got = struct.unpack(f"<{6 * 3}e", body[n:])
diff = max(abs(a - b) for a, b in zip(got, want))
assert diff <= 1e-3, f"sensor-f16: FP16 answers differ from onnxruntime by {diff}"
print(f"sensor-f16: 6 FP16 rows within {diff:.1e} of onnxruntime")
PY
}
