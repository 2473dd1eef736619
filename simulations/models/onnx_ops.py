#!/usr/bin/env python3
"""Which ONNX operators tract runs but devices could not load from NNEF (issue 13).

The `onnx` package generates one small model per operator case (its backend node tests: 1,800+ cases over
every operator of the standard). `dump` writes each case's model; the Rust example
`cargo run -p outpost-models --features onnx --example onnx_ops -- DIR` tries each one two ways, as tract
reads ONNX (typed and decluttered) and as `outpost bundle create` converts it for devices (NNEF with
tract-core's operators only), and writes DIR/results.tsv; `report` groups the results by operator:

    python3 simulations/models/onnx_ops.py dump --out DIR
    cargo run -p outpost-models --features onnx --example onnx_ops -- DIR
    python3 simulations/models/onnx_ops.py report --out DIR
    python3 simulations/models/onnx_ops.py fixtures --out simulations/models/ops   # models/tests/nnef_ops.rs

An operator is listed when tract reads at least one of its cases and the NNEF conversion refuses one of
those (the refusal is quoted); operators tract cannot read at all are counted apart.
"""

import argparse
import collections
import json
import os
import sys
import warnings

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.backend.test.case import node as node_cases


def frozen(case):
    """The case's model with every input after the first made a constant (its test value), as weights,
    pads, scales and axes are in real models: the cases pass them as inputs, which tract refuses for
    parameters it needs to know when it plans (\"Params are not const\")."""
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    if not case.data_sets:
        return model
    values = case.data_sets[0][0]
    g = model.graph
    keep = list(g.input[:1])
    for vi, value in zip(list(g.input[1:]), values[1:]):
        if not isinstance(value, np.ndarray):
            keep.append(vi)
            continue
        g.initializer.append(numpy_helper.from_array(value, vi.name))
    for vi in list(g.input[len(values):]):
        keep.append(vi)
    del g.input[:]
    g.input.extend(keep)
    return model


def dump(out):
    os.makedirs(out, exist_ok=True)
    index = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = node_cases.collect_testcases(None)
    for case in cases:
        d = os.path.join(out, case.name)
        os.makedirs(d, exist_ok=True)
        onnx.save(frozen(case), os.path.join(d, "model.onnx"))
        ops = sorted({n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
                      for n in case.model.graph.node})
        index[case.name] = ops
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump(index, f, indent=0)
    print(f"{len(index)} cases in {out}")


def fixtures(out):
    """The committed fixtures of models/tests/nnef_ops.rs, in simulations/models/ops/: `lrn` (a convolution,
    then two LRNs of sizes 5 and 3 (onnxruntime takes odd sizes only) on 8 channels: the window clipped at both edges) with
    seeded inputs and onnxruntime's answers; `nonzero` (an operator tract runs from ONNX but devices cannot
    load: the refusal must name it and its node); `pool_ceil` (max and average pooling with ceil_mode = 1,
    seeded inputs and onnxruntime's answers per output); `gelu` (exact GELU as ONNX's Gelu and as the
    Erf-built chain, onnxruntime's answers for each)."""
    from onnx import TensorProto, helper
    import onnxruntime as ort
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(20261206)
    w = rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("LRN", ["c"], ["n1"], name="norm1", size=5, alpha=0.3, beta=0.75, bias=1.0),
        helper.make_node("LRN", ["n1"], ["y"], name="norm2", size=3, alpha=0.05, beta=0.6, bias=2.0),
    ]
    graph = helper.make_graph(nodes, "lrn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 6, 6])],
                              initializer=[numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, producer_name="outpost-onnx_ops", opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, os.path.join(out, "lrn.onnx"))
    x = rng.normal(0, 2.0, (4, 3, 6, 6)).astype(np.float32)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    y = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    x.astype("<f4").tofile(os.path.join(out, "lrn.input.f32"))
    y.astype("<f4").tofile(os.path.join(out, "lrn.ort.f32"))

    nodes = [helper.make_node("NonZero", ["x"], ["idx"], name="where_set")]
    graph = helper.make_graph(nodes, "nonzero", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("idx", TensorProto.INT64, [1, "K"])])
    model = helper.make_model(graph, producer_name="outpost-onnx_ops", opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, os.path.join(out, "nonzero.onnx"))

    # Pooling that rounds up (ceil_mode = 1) on 8×8: a last window reaching past the input (max; average of
    # real values only) and past the model's own padding of 1 (average counting that padding).
    pool = dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
    nodes = [
        helper.make_node("MaxPool", ["x"], ["max"], name="max_ceil", **pool),
        helper.make_node("AveragePool", ["x"], ["avg"], name="avg_ceil", count_include_pad=0, **pool),
        helper.make_node("AveragePool", ["x"], ["avg_pad"], name="avg_pad_ceil", count_include_pad=1,
                         pads=[1, 1, 1, 1], **pool),
    ]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 2, h, h])
               for n, h in (("max", 4), ("avg", 4), ("avg_pad", 5))]
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 8, 8])
    graph = helper.make_graph(nodes, "pool_ceil", [x_info], outputs)
    model = helper.make_model(graph, producer_name="outpost-onnx_ops", opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, os.path.join(out, "pool_ceil.onnx"))
    x = np.random.default_rng(20261207).normal(0, 1.0, (3, 2, 8, 8)).astype(np.float32)
    ys = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    x.astype("<f4").tofile(os.path.join(out, "pool_ceil.input.f32"))
    for (name, _), y in zip((("max", 4), ("avg", 4), ("avg_pad", 5)), ys):
        y.astype("<f4").tofile(os.path.join(out, f"pool_ceil.ort.{name}.f32"))

    # Exact GELU both ways models carry it: ONNX's Gelu (opset 20) and the Erf-built chain of BERT-like
    # exports (x / sqrt(2), Erf, + 1, · x, · 0.5); inputs spread over [-6, 6] where erf bends and saturates.
    sqrt2 = np.array(np.sqrt(2.0), np.float32)
    nodes = [
        helper.make_node("Gelu", ["x"], ["gelu"], name="gelu_op"),
        helper.make_node("Div", ["x", "sqrt2"], ["scaled"], name="gelu_div"),
        helper.make_node("Erf", ["scaled"], ["erf"], name="gelu_erf"),
        helper.make_node("Add", ["erf", "one"], ["one_plus"], name="gelu_add"),
        helper.make_node("Mul", ["x", "one_plus"], ["x_one_plus"], name="gelu_mul"),
        helper.make_node("Mul", ["x_one_plus", "half"], ["erf_gelu"], name="gelu_half"),
    ]
    inits = [numpy_helper.from_array(sqrt2, "sqrt2"), numpy_helper.from_array(np.array(1.0, np.float32), "one"),
             numpy_helper.from_array(np.array(0.5, np.float32), "half")]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 16]) for n in ("gelu", "erf_gelu")]
    graph = helper.make_graph(nodes, "gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                              outputs, initializer=inits)
    model = helper.make_model(graph, producer_name="outpost-onnx_ops", opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, os.path.join(out, "gelu.onnx"))
    x = np.random.default_rng(20261208).uniform(-6.0, 6.0, (4, 16)).astype(np.float32)
    ys = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    x.astype("<f4").tofile(os.path.join(out, "gelu.input.f32"))
    for name, y in zip(("gelu", "erf_gelu"), ys):
        y.astype("<f4").tofile(os.path.join(out, f"gelu.ort.{name}.f32"))
    print(f"fixtures in {out}")


def report(out):
    with open(os.path.join(out, "cases.json")) as f:
        cases = json.load(f)
    by_op = collections.defaultdict(lambda: {"cases": 0, "typed": 0, "nnef": 0, "refusal": None})
    with open(os.path.join(out, "results.tsv")) as f:
        for line in f:
            name, typed, nnef, why = (line.rstrip("\n").split("\t") + [""] * 4)[:4]
            ops = cases.get(name, [])
            # The operator a case is about: its name says (test_lrn_default → LRN). Cases named for none
            # of their operators (functions expanded into others) count in the totals only.
            main = [op for op in ops if name.startswith("test_" + op.lower().replace(".", "_"))]
            for op in main:
                e = by_op[op]
                e["cases"] += 1
                e["typed"] += typed == "ok"
                if typed == "ok" and nnef == "ok":
                    e["nnef"] += 1
                elif typed == "ok" and e["refusal"] is None:
                    e["refusal"] = why
    gap = {op: e for op, e in by_op.items() if e["typed"] > e["nnef"]}
    unread = sorted(op for op, e in by_op.items() if e["typed"] == 0)
    print("| ONNX operator | cases tract reads | of which convert to NNEF | first refusal |")
    print("| --- | ---: | ---: | --- |")
    for op, e in sorted(gap.items()):
        why = (e["refusal"] or "").replace("|", "\\|")[:160]
        print(f"| {op} | {e['typed']} of {e['cases']} | {e['nnef']} | {why} |")
    full = sum(1 for e in by_op.values() if e["typed"] and e["typed"] == e["nnef"])
    print(f"\n{len(by_op)} operators; {full} convert in every case tract reads; {len(gap)} above; "
          f"{len(unread)} tract reads in no case: {', '.join(unread)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["dump", "report", "fixtures"])
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    {"dump": dump, "report": report, "fixtures": fixtures}[a.cmd](a.out)


if __name__ == "__main__":
    sys.exit(main())
