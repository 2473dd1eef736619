"""The second model of the simulations: a machine-vibration anomaly detector.

A small MLP on 16 spectral band energies of a 128-sample accelerometer window says
whether a machine runs normally (class 0) or shows a bearing fault (class 1). The
data is synthetic and deterministic: a running machine's vibration is a sine at its
shaft frequency plus noise; a worn bearing adds a high-frequency tone whose strength
varies. Two releases with the same graph:

- vibration-v1: trained from scratch (seed VIB_SEED);
- vibration-v2: v1 trained on with twice the data for more epochs (the realistic
  update: same interface, slightly different answers).

Files written (all little-endian, row-major, no header):
- vibration-v1.onnx, vibration-v2.onnx  input "features" float32 [N,16], output
  "logits" float32 [N,2]
- vibration-test-inputs.f32  400 x 16 float32 (the held-out windows' features)
- vibration-test-labels.u8   400 labels (0 normal, 1 fault)
- vibration-v*.ort-logits.f32  onnxruntime's logits for the test set, 400 x 2
- vibration.json              sha256s, sizes and accuracies
"""

import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

VIB_SEED = 20251205
WINDOW = 128
BANDS = 16
HIDDEN = 32
N_TRAIN = 1600
N_TEST = 400
OPSET = 17
IR_VERSION = 8


def windows(rng, n):
    """n accelerometer windows and their labels (half of them faulty)."""
    t = np.arange(WINDOW, dtype=np.float64) / WINDOW
    y = (np.arange(n) % 2).astype(np.int64)
    rng.shuffle(y)
    x = np.empty((n, WINDOW))
    for i in range(n):
        shaft = rng.uniform(6, 12)
        sig = rng.uniform(0.8, 1.2) * np.sin(2 * np.pi * shaft * t + rng.uniform(0, 2 * np.pi))
        sig += rng.normal(0, 0.25, WINDOW)
        if y[i] == 1:
            tone = rng.uniform(38, 52)
            sig += rng.uniform(0.15, 0.6) * np.sin(2 * np.pi * tone * t + rng.uniform(0, 2 * np.pi))
        x[i] = sig
    return x, y


def features(x):
    """log(1 + energy) in 16 equal bands of the spectrum, scaled to about [0, 1]."""
    spec = np.abs(np.fft.rfft(x, axis=1))[:, 1:1 + BANDS * 4] ** 2
    bands = spec.reshape(x.shape[0], BANDS, 4).sum(axis=2)
    return (np.log1p(bands) / 10.0).astype(np.float32)


def forward(p, f):
    h = np.maximum(f @ p["fc1.weight"].T + p["fc1.bias"], 0)
    return h @ p["fc2.weight"].T + p["fc2.bias"], h


def train(p, f, y, rng, epochs, lr):
    """Full-batch-shuffled minibatch Adam on softmax cross-entropy."""
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(v) for k, v in p.items()}
    step = 0
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for s in range(0, len(y), 64):
            bi = order[s:s + 64]
            logits, h = forward(p, f[bi])
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            prob = e / e.sum(axis=1, keepdims=True)
            prob[np.arange(len(bi)), y[bi]] -= 1
            d = prob / len(bi)
            dh = (d @ p["fc2.weight"]) * (h > 0)
            g = {"fc2.weight": d.T @ h, "fc2.bias": d.sum(0),
                 "fc1.weight": dh.T @ f[bi], "fc1.bias": dh.sum(0)}
            step += 1
            for k in p:
                m[k] = 0.9 * m[k] + 0.1 * g[k]
                v[k] = 0.999 * v[k] + 0.001 * g[k] ** 2
                mh, vh = m[k] / (1 - 0.9 ** step), v[k] / (1 - 0.999 ** step)
                p[k] = (p[k] - lr * mh / (np.sqrt(vh) + 1e-8)).astype(np.float32)
    return p


def to_onnx(p):
    nodes = [
        helper.make_node("Gemm", ["features", "fc1.weight", "fc1.bias"], ["fc1"], name="fc1", transB=1),
        helper.make_node("Relu", ["fc1"], ["relu1"], name="relu1"),
        helper.make_node("Gemm", ["relu1", "fc2.weight", "fc2.bias"], ["logits"], name="fc2", transB=1),
    ]
    inits = [numpy_helper.from_array(np.ascontiguousarray(p[k], dtype=np.float32), k)
             for k in ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]]
    graph = helper.make_graph(
        nodes, "vibration_mlp",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", BANDS])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        initializer=inits,
    )
    model = helper.make_model(graph, producer_name="outpost-make_models", producer_version="1",
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def make_vibration(out, write_bytes, sha256, ort_session):
    rng = np.random.default_rng(VIB_SEED)
    xtr, ytr = windows(rng, N_TRAIN * 2)
    xte, yte = windows(rng, N_TEST)
    ftr, fte = features(xtr), features(xte)
    init = np.random.default_rng(VIB_SEED + 1)
    p = {
        "fc1.weight": (init.standard_normal((HIDDEN, BANDS)) * np.sqrt(2.0 / BANDS)).astype(np.float32),
        "fc1.bias": np.zeros(HIDDEN, np.float32),
        "fc2.weight": (init.standard_normal((2, HIDDEN)) * np.sqrt(1.0 / HIDDEN)).astype(np.float32),
        "fc2.bias": np.zeros(2, np.float32),
    }
    v1 = train(p, ftr[:N_TRAIN], ytr[:N_TRAIN], np.random.default_rng(VIB_SEED + 2), 40, 3e-3)
    v1 = {k: a.copy() for k, a in v1.items()}
    v2 = train({k: a.copy() for k, a in v1.items()}, ftr, ytr, np.random.default_rng(VIB_SEED + 3), 40, 1e-3)
    write_bytes(os.path.join(out, "vibration-test-inputs.f32"), fte.astype("<f4").tobytes())
    write_bytes(os.path.join(out, "vibration-test-labels.u8"), yte.astype(np.uint8).tobytes())
    models = []
    for name, params in [("vibration-v1", v1), ("vibration-v2", v2)]:
        path = os.path.join(out, f"{name}.onnx")
        write_bytes(path, to_onnx(params).SerializeToString())
        (logits,) = ort_session(path).run(["logits"], {"features": fte})
        assert logits.shape == (N_TEST, 2)
        np_logits, _ = forward(params, fte)
        assert float(np.abs(np_logits - logits).max()) < 1e-4, name
        write_bytes(os.path.join(out, f"{name}.ort-logits.f32"), logits.astype("<f4").tobytes())
        correct = int((logits.argmax(1) == yte).sum())
        print(f"{name:<15} ORT acc {correct / N_TEST:.4f} ({correct}/{N_TEST}) {os.path.getsize(path)} bytes")
        models.append({"name": name, "file": f"{name}.onnx", "sha256": sha256(path),
                       "size_bytes": os.path.getsize(path), "ort_test_correct": correct,
                       "ort_logits_file": f"{name}.ort-logits.f32",
                       "ort_logits_sha256": sha256(os.path.join(out, f"{name}.ort-logits.f32"))})
    agree = int((forward(v1, fte)[0].argmax(1) == forward(v2, fte)[0].argmax(1)).sum())
    print(f"vibration v1 and v2 agree on {agree}/{N_TEST} test windows")
    with open(os.path.join(out, "vibration.json"), "w") as f:
        json.dump({"seed": VIB_SEED, "test_count": N_TEST, "v1_v2_top1_agreement": agree,
                   "input": {"name": "features", "shape": ["N", BANDS], "dtype": "float32"},
                   "output": {"name": "logits", "shape": ["N", 2], "dtype": "float32"},
                   "test_inputs": {"file": "vibration-test-inputs.f32",
                                   "sha256": sha256(os.path.join(out, "vibration-test-inputs.f32"))},
                   "test_labels": {"file": "vibration-test-labels.u8",
                                   "sha256": sha256(os.path.join(out, "vibration-test-labels.u8"))},
                   "models": models}, f, indent=2)
        f.write("\n")
