#!/usr/bin/env python3
"""onnxruntime side of agent/benches/inference.rs (see BENCHMARKS.md).

    python3 ort_bench.py MODEL.onnx INPUTS.f32 N [THREADS]
        Runs N sequential batch-1 inferences on CPU with THREADS intra-op threads (default 1), cycling
        through the rows of INPUTS.f32 (raw little-endian float32, rows back to back, row shape = the
        model's input shape without a batch of 1), after a warm-up. Prints one JSON line:
        {"median_us": ..., "p95_us": ..., "throughput": ..., "threads": ..., "version": ...}

    python3 ort_bench.py --typed TYPED.json NAME N [THREADS]
        The same for fixture NAME of simulations/models/typed/ (TYPED.json describes it): every input in
        its own type, read from the fixture's sample files, cycling through its batch-1 samples.

    python3 ort_bench.py --symbolic-batch IN.onnx OUT.onnx
        Writes a copy of IN whose first input and output dimension is the symbolic "N", for models
        (like the MobileNetV2 stand-in) exported with a fixed batch of 1 and no batch-dependent reshape.

Exit status 3 when onnxruntime (or onnx, for --symbolic-batch) is not installed.
"""

import json
import os
import sys
import time

# One thread everywhere unless asked otherwise, before numpy loads a BLAS.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


def symbolic_batch(src, dst):
    try:
        import onnx
    except ImportError:
        print("onnx is not installed", file=sys.stderr)
        sys.exit(3)
    model = onnx.load(src)
    for vi in list(model.graph.input) + list(model.graph.output):
        dim = vi.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = "N"
    onnx.checker.check_model(model)
    onnx.save(model, dst)


# Open Inference Protocol type names -> numpy dtypes of the fixtures' little-endian sample files.
DTYPES = {"BOOL": "|b1", "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8", "INT8": "<i1",
          "INT16": "<i2", "INT32": "<i4", "INT64": "<i8", "FP16": "<f2", "FP32": "<f4", "FP64": "<f8"}


def session(model_path, threads):
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime is not installed", file=sys.stderr)
        sys.exit(3)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(model_path, sess_options=opts, providers=["CPUExecutionProvider"])
    return sess, ort.__version__


def timed(sess, version, feeds, n, threads):
    """Runs the feeds (cycled) after a warm-up, n times; prints the JSON line."""
    for i in range(min(len(feeds), 10)):
        sess.run(None, feeds[i])
    lat = []
    t0 = time.perf_counter()
    for i in range(n):
        x = feeds[i % len(feeds)]
        s = time.perf_counter()
        sess.run(None, x)
        lat.append(time.perf_counter() - s)
    total = time.perf_counter() - t0
    lat.sort()
    print(json.dumps({
        "median_us": lat[len(lat) // 2] * 1e6,
        "p95_us": lat[min(len(lat) - 1, (len(lat) * 95) // 100)] * 1e6,
        "throughput": n / total,
        "threads": threads,
        "version": version,
    }))


def bench(model_path, inputs_path, n, threads):
    import numpy as np
    sess, version = session(model_path, threads)
    inp = sess.get_inputs()[0]
    shape = [1 if not isinstance(d, int) else d for d in inp.shape]
    if shape[0] != 1:
        shape = [1] + shape
    per = int(np.prod(shape))
    flat = np.fromfile(inputs_path, dtype="<f4")
    rows = [flat[i * per:(i + 1) * per].reshape(shape) for i in range(len(flat) // per)]
    if not rows:
        print(f"{inputs_path} holds no row of {per} floats", file=sys.stderr)
        sys.exit(2)
    timed(sess, version, [{inp.name: x} for x in rows], n, threads)


def bench_typed(index_path, name, n, threads):
    import numpy as np
    with open(index_path) as f:
        fixture = next(m for m in json.load(f)["models"] if m["name"] == name)
    folder = os.path.dirname(index_path)
    sess, version = session(os.path.join(folder, fixture["file"]), threads)
    samples = fixture["samples"]
    columns = {}
    for t in fixture["inputs"]:
        values = np.fromfile(os.path.join(folder, fixture["files"][t["name"]]), dtype=DTYPES[t["datatype"]])
        columns[t["name"]] = values.reshape([samples] + t["shape"][1:])
    feeds = [{k: v[i:i + 1] for k, v in columns.items()} for i in range(samples)]
    timed(sess, version, feeds, n, threads)


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--symbolic-batch":
        symbolic_batch(sys.argv[2], sys.argv[3])
        return
    if len(sys.argv) in (5, 6) and sys.argv[1] == "--typed":
        threads = int(sys.argv[5]) if len(sys.argv) == 6 else 1
        bench_typed(sys.argv[2], sys.argv[3], int(sys.argv[4]), threads)
        return
    if len(sys.argv) not in (4, 5):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    threads = int(sys.argv[4]) if len(sys.argv) == 5 else 1
    bench(sys.argv[1], sys.argv[2], int(sys.argv[3]), threads)


if __name__ == "__main__":
    main()
