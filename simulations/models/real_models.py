#!/usr/bin/env python3
"""Real-architecture models through Outpost, compared with onnxruntime (issue 13's compatibility table).

The `onnx` package (PyPI) ships "light" copies of real architectures in its backend test data: AlexNet,
DenseNet-121, Inception v1 and v2, ResNet-50, ShuffleNet, SqueezeNet, VGG-19, ZFNet-512. Their graphs are
the real ones; every weight is made by a ConstantOfShape of 0.02, so every channel computes the same thing.
`prepare` gives each a real set of weights instead (seeded, scaled by fan-in; batch-norm statistics
measured on the sample images, as training would leave them), so a wrong operator shows in the answers:

    python3 simulations/models/real_models.py prepare --out DIR

writes DIR/NAME.onnx, DIR/NAME.input.f32 (seeded sample images, batch 1 each, back to back),
DIR/NAME.ort.f32 (onnxruntime's outputs for them), and DIR/real.json (ops, shapes, parameters, onnxruntime's
1-thread latency). Nothing is downloaded but the pip packages; the models are large (VGG-19 is 548 MiB), so
they stay out of git. A model with its own weights joins them (images uniform in [0, 1)):

    python3 simulations/models/real_models.py add --out DIR --model simulations/models/bench/mobilenet_v2_int8.onnx --name mobilenet_v2_int8

    python3 simulations/models/real_models.py run --out DIR --outpost BIN --agent BIN

puts every model through the real binaries as a release engineer and a device would: `outpost keys gen`,
`outpost trust init`, `outpost bundle create` (self-tests from the sample images), `outpost-agent install`
into its own data directory, `outpost-agent run`, then POSTs each sample to the local API (Open Inference
Protocol, binary tensor extension) and compares the answers with onnxruntime's. Prints the Markdown table
(also DIR/table.md). BENCHMARKS.md "Real models against onnxruntime" has the commands and the table.
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import collections  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import numpy_helper  # noqa: E402

SEED = 20261206
SAMPLES = 3
LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
NAMES = {
    "light_bvlc_alexnet": "alexnet",
    "light_densenet121": "densenet121",
    "light_inception_v1": "inception_v1",
    "light_inception_v2": "inception_v2",
    "light_resnet50": "resnet50",
    "light_shufflenet": "shufflenet",
    "light_squeezenet": "squeezenet",
    "light_vgg19": "vgg19",
    "light_zfnet512": "zfnet512",
}


def session(model_bytes, threads=1):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def consumers(graph):
    out = collections.defaultdict(list)
    for node in graph.node:
        for i, name in enumerate(node.input):
            out[name].append((node, i))
    return out


def role(name, users):
    """What a weight tensor is, from the node that reads it (through Unsqueeze/Reshape)."""
    seen = set()
    todo = [name]
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        for node, i in users.get(n, []):
            if node.op_type in ("Unsqueeze", "Reshape", "Identity"):
                todo.extend(node.output)
                continue
            return node, i
    return None, None


def reseed(model, rng):
    """Replaces each ConstantOfShape weight by seeded values of its shape, scaled for its role."""
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    users = consumers(g)
    keep, new_inits = [], []
    for node in g.node:
        if node.op_type != "ConstantOfShape" or node.input[0] not in inits:
            keep.append(node)
            continue
        shape = tuple(int(d) for d in numpy_helper.to_array(inits[node.input[0]]))
        out = node.output[0]
        user, slot = role(out, users)
        op = user.op_type if user is not None else None
        if op in ("Conv", "Gemm") and slot == 1:
            fan_in = int(np.prod(shape[1:]))
            if op == "Gemm":
                trans_b = next((a.i for a in user.attribute if a.name == "transB"), 0)
                fan_in = shape[1] if trans_b else shape[0]
            v = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        elif op == "BatchNormalization" and slot == 1:
            v = rng.uniform(0.8, 1.2, shape)
        elif op == "BatchNormalization" and slot == 4:
            v = np.ones(shape)
        elif op == "Mul":
            v = rng.uniform(0.8, 1.2, shape)
        else:  # biases, BN shifts and means (means are measured below)
            v = rng.normal(0.0, 0.05, shape)
        new_inits.append(numpy_helper.from_array(v.astype(np.float32), out))
    del g.node[:]
    g.node.extend(keep)
    g.initializer.extend(new_inits)
    # IR version 3 wants every initializer listed among the graph's inputs, as these files do.
    have = {i.name for i in g.input}
    for t in new_inits:
        if t.name not in have:
            g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    shape_inits = {n.input[0] for n in g.node if n.op_type == "ConstantOfShape"}
    used = {i for n in g.node for i in n.input}
    for t in list(g.initializer):
        if t.name.endswith("__SHAPE") and t.name not in used and t.name not in shape_inits:
            g.initializer.remove(t)
            for i in list(g.input):
                if i.name == t.name:
                    g.input.remove(i)
    return model


def calibrate_batch_norms(model, images):
    """Sets each BatchNormalization's mean and variance to its input's statistics on `images`, in graph
    order, as training would: activations stay near unit scale through 50-120 layers instead of
    vanishing or overflowing, so the softmax at the end is not saturated and differences show."""
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    inp = real_input(model)
    for node in g.node:
        if node.op_type != "BatchNormalization":
            continue
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        probe.graph.output.append(onnx.helper.make_tensor_value_info(node.input[0], onnx.TensorProto.FLOAT, None))
        s = session(probe.SerializeToString(), threads=2)
        # These models take batch 1: one image at a time.
        x = np.concatenate([s.run([node.input[0]], {inp.name: images[i:i + 1]})[0] for i in range(len(images))])
        axes = (0,) + tuple(range(2, x.ndim))
        mean, var = x.mean(axis=axes), x.var(axis=axes) + 1e-3
        for name, v in ((node.input[3], mean), (node.input[4], var)):
            inits[name].CopyFrom(numpy_helper.from_array(v.astype(np.float32), name))
    return model


def sample_images(rng, shape):
    """Normalised images (as ImageNet preprocessing leaves them) that differ from each other: each sample has
    its own per-channel offset and contrast, so the models' answers differ between samples too."""
    n, c = SAMPLES, shape[1]
    offset = rng.uniform(-1.0, 1.0, (n, c, 1, 1))
    contrast = rng.uniform(0.3, 1.5, (n, c, 1, 1))
    return (offset + contrast * rng.normal(0.0, 1.0, [n] + shape[1:])).astype(np.float32)


def real_input(model):
    inits = {i.name for i in model.graph.initializer}
    return next(i for i in model.graph.input if i.name not in inits)


def dims(value_info):
    return [d.dim_value for d in value_info.type.tensor_type.shape.dim]


def ort_latency(model_bytes, x, runs):
    s = session(model_bytes)
    name = s.get_inputs()[0].name
    for _ in range(2):
        s.run(None, {name: x})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        s.run(None, {name: x})
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e3


def prepare(out):
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(SEED)
    index = []
    for stem, name in sorted(NAMES.items(), key=lambda kv: kv[1]):
        model = onnx.load(os.path.join(LIGHT, stem + ".onnx"))
        ops = collections.Counter(n.op_type for n in model.graph.node if n.op_type != "ConstantOfShape")
        model = reseed(model, rng)
        images = sample_images(rng, dims(real_input(model)))
        model = calibrate_batch_norms(model, images)
        onnx.checker.check_model(model)
        index.append(describe(out, name, "onnx " + onnx.__version__ + " " + stem + ".onnx", model, ops, images))
    with open(os.path.join(out, "real.json"), "w") as f:
        json.dump({"onnx": onnx.__version__, "onnxruntime": ort.__version__, "samples": SAMPLES,
                   "models": index}, f, indent=1)


def add(out, path, name):
    """One more model, weights as they are (the int8 MobileNetV2 stand-in of make_models.py --int8, say), into
    DIR/real.json beside prepare's: sample images uniform in [0, 1), the range such stand-ins were calibrated
    on (a quantized model clips what lies outside its calibration)."""
    os.makedirs(out, exist_ok=True)
    model = onnx.load(path)
    ops = collections.Counter(n.op_type for n in model.graph.node)
    rng = np.random.default_rng(SEED + 1)
    images = rng.random([SAMPLES] + dims(real_input(model))[1:], dtype=np.float32)
    entry = describe(out, name, os.path.basename(path), model, ops, images)
    listing = os.path.join(out, "real.json")
    index = {"onnx": onnx.__version__, "onnxruntime": ort.__version__, "samples": SAMPLES, "models": []}
    if os.path.exists(listing):
        with open(listing) as f:
            index = json.load(f)
    index["models"] = [m for m in index["models"] if m["name"] != name] + [entry]
    with open(os.path.join(out, "real.json"), "w") as f:
        json.dump(index, f, indent=1)


def describe(out, name, source, model, ops, images):
    """Writes DIR/NAME.onnx, the sample images and onnxruntime's answers; returns the model's real.json entry."""
    inp = real_input(model)
    shape = dims(inp)
    data = model.SerializeToString()
    with open(os.path.join(out, name + ".onnx"), "wb") as f:
        f.write(data)
    s = session(data)
    outputs = [s.run(None, {inp.name: images[i:i + 1]})[0] for i in range(SAMPLES)]
    answers = np.concatenate(outputs).astype("<f4")
    images.astype("<f4").tofile(os.path.join(out, name + ".input.f32"))
    answers.tofile(os.path.join(out, name + ".ort.f32"))
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    latency = ort_latency(data, images[:1], runs=5 if params > 50e6 else 10)
    entry = {
        "name": name,
        "source": source,
        "opset": model.opset_import[0].version,
        "ops": dict(sorted(ops.items())),
        "input": {"name": inp.name, "shape": shape},
        "output": {"name": model.graph.output[0].name, "shape": list(outputs[0].shape)},
        "params": params,
        "onnx_bytes": len(data),
        "ort_ms": latency,
        "top1": [int(a.argmax()) for a in outputs],
        "max_prob": [float(a.max()) for a in outputs],
    }
    print(f"{name}: {params / 1e6:.1f} M parameters, onnxruntime {latency:.1f} ms, top-1 {entry['top1']}, "
          f"max p {[round(p, 3) for p in entry['max_prob']]}", flush=True)
    return entry


# ---- run: the real binaries -------------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sh(args, **kw):
    t = time.perf_counter()
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    return p, time.perf_counter() - t


def last_line(p):
    text = (p.stderr.strip() or p.stdout.strip()).splitlines()
    return text[-1] if text else f"exit {p.returncode}"


def infer(port, model, inp, shape, x):
    header = json.dumps({"inputs": [{"name": inp, "shape": shape, "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "parameters": {"binary_data_output": True}}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("POST", f"/v2/models/{model}/infer", body=header + x.tobytes(),
                 headers={"Inference-Header-Content-Length": str(len(header)),
                          "Content-Type": "application/octet-stream"})
    r = conn.getresponse()
    body = r.read()
    conn.close()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {body[:300]!r}")
    n = int(r.getheader("Inference-Header-Content-Length"))
    head = json.loads(body[:n])
    return np.frombuffer(body[n:], dtype="<f4"), head


def run(out, outpost, agent, only, threads):
    with open(os.path.join(out, "real.json")) as f:
        index = json.load(f)
    work = os.path.join(out, "work")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    keys = os.path.join(work, "keys")
    for key in ("root", "release"):
        p, _ = sh([outpost, "keys", "gen", "--out", keys, "--name", key])
        assert p.returncode == 0, p.stderr
    policy = os.path.join(work, "trust.policy")
    p, _ = sh([outpost, "trust", "init", "--root-key", f"{keys}/root.key", "--release-pub",
               f"{keys}/release.pub", "--out", policy])
    assert p.returncode == 0, p.stderr
    rows = []
    for m in sorted(index["models"], key=lambda m: m["params"]):
        name = m["name"]
        if only and name not in only:
            continue
        row = {"name": name, "ops": m["ops"], "params": m["params"], "ort_ms": m["ort_ms"], "threads": threads}
        rows.append(row)
        bundle = os.path.join(work, name + ".obundle")
        p, secs = sh([outpost, "bundle", "create", "--model", os.path.join(out, name + ".onnx"), "--name",
                      name.replace("_", "-"), "--version", "1.0.0", "--sequence", "1", "--key",
                      f"{keys}/release.key", "--selftest-input", os.path.join(out, name + ".input.f32"),
                      "--selftest-count", "1", "--out", bundle])
        row["create_s"] = secs
        if p.returncode != 0:
            row["converts"] = "no: " + last_line(p)
            print(f"{name}: bundle create refused: {last_line(p)}", flush=True)
            continue
        row["converts"] = "yes"
        row["bundle_bytes"] = os.path.getsize(bundle)
        data = os.path.join(work, name + "-data")
        conf = os.path.join(work, name + ".toml")
        port = free_port()
        with open(conf, "w") as f:
            f.write(f'data_dir = "{data}"\nlisten = "127.0.0.1:{port}"\n'
                    f'[trust]\npolicy = "{policy}"\nroot_pub = ["{keys}/root.pub"]\n'
                    f'[inference]\nthreads = {threads}\nrequest_timeout = "120s"\nmax_body_bytes = 16777216\n'
                    '[cache]\nmax_entries = 0\n')
        p, secs = sh([agent, "install", bundle, "--config", conf])
        row["install_s"] = secs
        if p.returncode != 0:
            row["serves"] = "no: install: " + last_line(p)
            print(f"{name}: install refused: {last_line(p)}", flush=True)
            continue
        proc = subprocess.Popen([agent, "run", "--config", conf], stdout=subprocess.DEVNULL,
                                stderr=open(os.path.join(work, name + ".log"), "w"))
        try:
            row.update(serve_and_compare(port, name.replace("_", "-"), m, out))
        except Exception as e:  # noqa: BLE001 - the table says what happened
            row["serves"] = f"no: {e}"
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        print(f"{name}: {row}", flush=True)
    table = markdown(index, rows)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(table)
    print(table)


def serve_and_compare(port, model, m, out):
    deadline = time.time() + 300
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", f"/v2/models/{model}/ready")
            ready = conn.getresponse().status == 200
            conn.close()
            if ready:
                break
        except OSError:
            pass
        if time.time() > deadline:
            raise RuntimeError("not ready within 300 s")
        time.sleep(0.2)
    shape = m["input"]["shape"]
    per = int(np.prod(shape))
    # The name the device serves (model metadata): NNEF spells some ONNX names otherwise (gpu_0/data_0).
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", f"/v2/models/{model}")
    meta = json.loads(conn.getresponse().read())
    conn.close()
    m = dict(m, input=dict(m["input"], name=meta["inputs"][0]["name"]))
    images = np.fromfile(os.path.join(out, m["name"] + ".input.f32"), dtype="<f4").reshape([-1] + shape[1:])
    want = np.fromfile(os.path.join(out, m["name"] + ".ort.f32"), dtype="<f4").reshape(len(images), -1)
    diffs, agree = [], 0
    for i in range(len(images)):
        got, _ = infer(port, model, m["input"]["name"], shape, images[i:i + 1].reshape(shape))
        assert got.size == want[i].size, f"{got.size} values, onnxruntime gave {want[i].size}"
        diffs.append(float(np.abs(got - want[i]).max()))
        agree += int(got.argmax() == want[i].argmax())
    x = images[:1].reshape(shape)
    runs = 5 if m["params"] > 50e6 else 15
    infer(port, model, m["input"]["name"], shape, x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        infer(port, model, m["input"]["name"], shape, x)
        times.append(time.perf_counter() - t)
    assert per == x.size
    # onnxruntime again now, under the same load as the agent's requests: the ratio compares like with like.
    data = open(os.path.join(out, m["name"] + ".onnx"), "rb").read()
    ort_ms = ort_latency(data, x, runs)
    return {"serves": "yes", "max_diff": max(diffs), "top1": f"{agree}/{len(images)}",
            "agent_ms": float(np.median(times)) * 1e3, "ort_ms": ort_ms}


def markdown(index, rows):
    lines = [
        f"onnx {index['onnx']} light models with seeded weights; onnxruntime {index['onnxruntime']}, 1 thread; "
        f"the agent over its local HTTP API (binary tensors), 1 worker, {rows[0]['threads'] if rows else 1} "
        "thread(s); median of sequential batch-1 requests, onnxruntime timed right after the agent.",
        "",
        "| model | parameters | ONNX operators | converts? | bundle (bundle create) | serves? | "
        "max diff (top-1 agrees) | agent | onnxruntime | ratio |",
        "| --- | ---: | --- | --- | ---: | --- | --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        ops = ", ".join(r["ops"])
        params = f"{r['params'] / 1e6:.1f} M"
        if r["converts"] != "yes":
            lines.append(f"| {r['name']} | {params} | {ops} | {r['converts']} | – | – | – | – | "
                         f"{r['ort_ms']:.1f} ms | – |")
            continue
        bundle = f"{r['bundle_bytes'] / 2**20:.1f} MiB ({r['create_s']:.0f} s)"
        if r.get("serves") != "yes":
            lines.append(f"| {r['name']} | {params} | {ops} | yes | {bundle} | {r.get('serves')} | – | – | "
                         f"{r['ort_ms']:.1f} ms | – |")
            continue
        lines.append(f"| {r['name']} | {params} | {ops} | yes | {bundle} | yes | {r['max_diff']:.1e} ({r['top1']}) | "
                     f"{r['agent_ms']:.1f} ms | {r['ort_ms']:.1f} ms | {r['agent_ms'] / r['ort_ms']:.2f}× |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--out", required=True)
    e = sub.add_parser("add")
    e.add_argument("--out", required=True)
    e.add_argument("--model", required=True)
    e.add_argument("--name", required=True)
    r = sub.add_parser("run")
    r.add_argument("--out", required=True)
    r.add_argument("--outpost", required=True)
    r.add_argument("--agent", required=True)
    r.add_argument("--only", nargs="*", default=[])
    r.add_argument("--threads", type=int, default=1, help="the agent's inference.threads")
    a = ap.parse_args()
    if a.cmd == "prepare":
        prepare(a.out)
    elif a.cmd == "add":
        add(a.out, a.model, a.name)
    else:
        run(a.out, a.outpost, a.agent, set(a.only), a.threads)


if __name__ == "__main__":
    sys.exit(main())
