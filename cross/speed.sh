#!/usr/bin/env bash
# Request latency of two agent binaries, side by side:
#   cross/speed.sh TARGET BASE_BIN CANDIDATE_BIN [MODEL.onnx ...]
# For a size setting's speed cost (cross/README.md "Size"): build the agent twice (`cross/build.sh TARGET`, the
# setting off and on), then compare. x86_64-unknown-linux-musl runs natively; other targets run under
# qemu-user, where time tracks the instructions executed rather than a real core's speed (a code-size setting
# that adds or removes instructions shows; cache and pipeline effects do not). Both agents install the
# same signed bundle of each model and serve it; one Python client with a keep-alive connection to each asks
# them in alternating rounds (binary tensor bodies, seeded random inputs, result cache off), so load from other
# processes falls on both alike. Prints median and p90 latency per agent and candidate/base with the range
# over rounds; asserts no time. Models default to digits v1 and, when it exists,
# simulations/models/bench/mobilenet_v2.onnx (make_models.py --mobilenet). Environment: OUTPOST_BIN (the host
# `outpost` CLI), OUTPOST_SPEED_ROUNDS (default 10), OUTPOST_SPEED_PER_ROUND (requests per agent and round,
# default 20; digits gets 10× as many).
set -euo pipefail
cd "$(dirname "$0")/.."
. cross/lib.sh
usage="usage: cross/speed.sh TARGET BASE_BIN CANDIDATE_BIN [MODEL.onnx ...]"
target=${1:?$usage}
base=$(realpath "${2:?$usage}")
cand=$(realpath "${3:?$usage}")
shift 3
models_in=("$@")
if [ ${#models_in[@]} -eq 0 ]; then
  models_in=("$models/digits-v1.onnx")
  [ -f "$models/bench/mobilenet_v2.onnx" ] && models_in+=("$models/bench/mobilenet_v2.onnx")
fi
emu_for "$target"
OUTPOST_AGENT_BIN=$base tools_for "$target"
work=$(mktemp -d /tmp/outpost-speed-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

"$outpost" keys gen --out "$work/keys" --name root >/dev/null
"$outpost" keys gen --out "$work/keys" --name release >/dev/null
"$outpost" trust init --root-key "$work/keys/root.key" --release-pub "$work/keys/release.pub" \
  --out "$work/trust.policy" >/dev/null
trust=(--trust "$work/trust.policy" --root-pub "$work/keys/root.pub")
# No result cache (every request runs the model), no shadow work, and time enough for emulated runs.
printf '[inference]\nrequest_timeout = "120s"\n[cache]\nmax_entries = 0\n[shadow]\nsample_percent = 0\n' \
  >"$work/agent.toml"

names=()
for m in "${models_in[@]}"; do
  name=$(basename "$m" .onnx | tr -c 'a-z0-9\n' '-' | sed 's/-*$//')
  names+=("$name")
  "$outpost" bundle create --model "$m" --name "$name" --version 1.0.0 --sequence 1 \
    --key "$work/keys/release.key" --out "$work/$name.obundle" >/dev/null
done

ports=()
for who in base cand; do
  bin=$base; [ "$who" = cand ] && bin=$cand
  for name in "${names[@]}"; do
    "${emu[@]}" "$bin" install "$work/$name.obundle" --data-dir "$work/$who" --config "$work/agent.toml" "${trust[@]}" >/dev/null
  done
  port=$(free_port)
  "${emu[@]}" "$bin" run --data-dir "$work/$who" --config "$work/agent.toml" --listen "127.0.0.1:$port" "${trust[@]}" \
    >"$work/$who.log" 2>&1 &
  pids+=($!)
  ports+=("$port")
  wait_for 120 curl -sf "http://127.0.0.1:$port/v2/health/ready"
done

echo "target:    $target, under ${emu[*]:-the host CPU}"
echo "base:      $base ($(stat -c %s "$base") bytes)"
echo "candidate: $cand ($(stat -c %s "$cand") bytes)"
python3 - "${ports[0]}" "${ports[1]}" "${OUTPOST_SPEED_ROUNDS:-10}" "${OUTPOST_SPEED_PER_ROUND:-20}" "${names[@]}" <<'PY'
import http.client, json, random, statistics, struct, sys, time

base_port, cand_port, rounds, per_round = (int(a) for a in sys.argv[1:5])
names = sys.argv[5:]
SIZES = {"FP32": 4}


def body_for(meta, rng):
    inputs, raw = [], b""
    for i in meta["inputs"]:
        shape = [1 if d < 0 else d for d in i["shape"]]
        n = 1
        for d in shape:
            n *= d
        assert i["datatype"] == "FP32", f"speed.sh sends FP32 inputs only, not {i['datatype']}"
        data = struct.pack(f"<{n}f", *(rng.random() for _ in range(n)))
        inputs.append({"name": i["name"], "shape": shape, "datatype": "FP32",
                       "parameters": {"binary_data_size": len(data)}})
        raw += data
    header = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}}).encode()
    return header, header + raw


def ask(conn, name, req):
    header, body = req
    start = time.perf_counter()
    conn.request("POST", f"/v2/models/{name}/infer", body,
                 {"Inference-Header-Content-Length": str(len(header))})
    resp = conn.getresponse()
    answer = resp.read()
    took = time.perf_counter() - start
    assert resp.status == 200, f"{name}: {resp.status} {answer[:200]!r}"
    return took, answer


def q(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


conns = {"base": http.client.HTTPConnection("127.0.0.1", base_port),
         "cand": http.client.HTTPConnection("127.0.0.1", cand_port)}
print()
print("| model | requests per agent | base median | candidate median | base p90 | candidate p90 "
      "| candidate / base (median) | range over rounds |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
for name in names:
    c = conns["base"]
    c.request("GET", f"/v2/models/{name}")
    meta = json.loads(c.getresponse().read())
    rng = random.Random(7)
    n = per_round * (10 if name.startswith("digits") else 1)
    reqs = [body_for(meta, rng) for _ in range(n)]
    # Warm-up, and the two agents must give the same answers before their speed means anything.
    for req in reqs[:5]:
        a = ask(conns["base"], name, req)[1]
        b = ask(conns["cand"], name, req)[1]
        assert a == b, f"{name}: the two agents answered differently"
    times = {"base": [], "cand": []}
    ratios = []
    for r in range(rounds):
        order = ["base", "cand"] if r % 2 == 0 else ["cand", "base"]
        got = {}
        for who in order:
            got[who] = [ask(conns[who], name, req)[0] for req in reqs]
            times[who] += got[who]
        ratios.append(statistics.median(got["cand"]) / statistics.median(got["base"]))
    mb, mc = statistics.median(times["base"]), statistics.median(times["cand"])
    print(f"| {name} | {len(times['base'])} | {mb * 1e3:.3f} ms | {mc * 1e3:.3f} ms "
          f"| {q(times['base'], 0.9) * 1e3:.3f} ms | {q(times['cand'], 0.9) * 1e3:.3f} ms "
          f"| {mc / mb:.3f} | {min(ratios):.3f}–{max(ratios):.3f} |")
PY
