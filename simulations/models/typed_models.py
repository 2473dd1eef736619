"""Small models with the tensor types real edge models take, and onnxruntime's answers for them.

Called by make_models.py (which sets single-threaded BLAS first); writes into OUT/typed/:

- camera-u8:    UINT8 image [N,3,8,8] -> FP32 scores [N,3] and INT64 class [N]
- intent-i64:   INT64 token ids [N,8] and INT64 attention mask [N,8] (vocabulary of 50: seeded random
                ids in [0, 256) fall outside it, so `outpost bundle create` must ask for real samples)
                -> FP32 logits [N,4] and INT64 intent [N]
- flags-bool:   BOOL flags [N,6] -> FP32 score [N,2], BOOL inverted [N,6] and INT64 count [N]
- sensor-f16:   FP16 readings [N,5] -> FP16 y [N,3]
- detector-640: UINT8 image [N,3,640,640] -> FP32 boxes [N,400,6] and INT64 class [N,400] (the image-sized
                model: its self-test vectors are megabytes)
- gpu-names:    FP32 image "gpu_0/data_0" [N,3,6,6] -> FP32 "gpu_0/softmax_1" [N,5]: tensor names as
                ResNet-50, ShuffleNet and ZFNet-512 from the onnx package spell them, which NNEF cannot
                ("gpu_0_data_0"); listed under "renamed" in typed.json, files named by NNEF's spelling
- camera-int8:  FP32 image [N,3,16,16] -> FP32 logits [N,5], quantized by onnxruntime's `quantize_static` in
                the QDQ format as MobileNetV2's int8 stand-in is (uint8 activations, int8 per-channel weights,
                int32 biases): convolutions (one depthwise), a residual Add, global pooling and a Gemm, each
                between QuantizeLinear/DequantizeLinear; listed under "quantized" in typed.json, onnxruntime's
                answers from its int8 kernels; camera-int8-s8s8 (int8 activations) and
                camera-int8-u8u8-tensor (uint8 weights, one scale per tensor) the same network quantized the
                other ways quantizers do

For each small model: SAMPLES batch-1 samples per input, back to back, raw little-endian
(`NAME.input.INPUT.bin`; BOOL one byte), and onnxruntime's outputs for all of them run as one batch
(`NAME.ort.OUTPUT.bin`). The detector's input is a formula (see `detector_image`) the tests rebuild, so only
its outputs for that image are committed. `typed.json` describes every file.
"""

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

TYPED_SEED = 20240617
SAMPLES = 6
OPSET = 17
IR_VERSION = 8
PRODUCER = "outpost-make_models"

NP = {TensorProto.UINT8: "<u1", TensorProto.INT64: "<i8", TensorProto.BOOL: "|b1",
      TensorProto.FLOAT: "<f4", TensorProto.FLOAT16: "<f2"}
OIP = {TensorProto.UINT8: "UINT8", TensorProto.INT64: "INT64", TensorProto.BOOL: "BOOL",
       TensorProto.FLOAT: "FP32", TensorProto.FLOAT16: "FP16"}


def init(name, array):
    return numpy_helper.from_array(np.ascontiguousarray(array), name)


def vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def finish(name, nodes, inputs, outputs, inits):
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=inits)
    model = helper.make_model(graph, producer_name=PRODUCER, producer_version="1",
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def camera_u8(rng):
    w = rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32)
    b = rng.normal(0, 0.1, (4,)).astype(np.float32)
    fw = rng.normal(0, 1.0, (3, 4)).astype(np.float32)
    fb = rng.normal(0, 0.1, (3,)).astype(np.float32)
    nodes = [
        helper.make_node("Cast", ["image"], ["imagef"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["imagef", "scale"], ["x"]),
        helper.make_node("Conv", ["x", "conv.weight", "conv.bias"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["scores"], transB=1),
        helper.make_node("ArgMax", ["scores"], ["class"], axis=1, keepdims=0),
    ]
    inits = [init("scale", np.array(1 / 255, np.float32)), init("conv.weight", w), init("conv.bias", b),
             init("fc.weight", fw), init("fc.bias", fb)]
    model = finish("camera_u8", nodes, [vi("image", TensorProto.UINT8, ["N", 3, 8, 8])],
                   [vi("scores", TensorProto.FLOAT, ["N", 3]), vi("class", TensorProto.INT64, ["N"])], inits)
    samples = {"image": rng.integers(0, 256, (SAMPLES, 3, 8, 8), dtype=np.uint8)}
    return model, samples


def intent_i64(rng):
    vocab, dim, seq = 50, 6, 8
    emb = rng.normal(0, 1.0, (vocab, dim)).astype(np.float32)
    fw = rng.normal(0, 1.0, (4, dim)).astype(np.float32)
    fb = rng.normal(0, 0.1, (4,)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["embedding", "ids"], ["e"], axis=0),
        helper.make_node("Cast", ["mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "axis2"], ["m3"]),
        helper.make_node("Mul", ["e", "m3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["maskf", "axis1"], ["count"], keepdims=1),
        helper.make_node("Max", ["count", "one"], ["denom"]),
        helper.make_node("Div", ["summed", "denom"], ["pooled"]),
        helper.make_node("Gemm", ["pooled", "fc.weight", "fc.bias"], ["logits"], transB=1),
        helper.make_node("ArgMax", ["logits"], ["intent"], axis=1, keepdims=0),
    ]
    inits = [init("embedding", emb), init("axis1", np.array([1], np.int64)),
             init("axis2", np.array([2], np.int64)), init("one", np.array(1.0, np.float32)),
             init("fc.weight", fw), init("fc.bias", fb)]
    model = finish("intent_i64", nodes,
                   [vi("ids", TensorProto.INT64, ["N", seq]), vi("mask", TensorProto.INT64, ["N", seq])],
                   [vi("logits", TensorProto.FLOAT, ["N", 4]), vi("intent", TensorProto.INT64, ["N"])], inits)
    lengths = rng.integers(2, seq + 1, SAMPLES)
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(1, vocab, (SAMPLES, seq)).astype(np.int64) * mask  # padding is token 0
    return model, {"ids": ids, "mask": mask}


def flags_bool(rng):
    fw = rng.normal(0, 1.0, (2, 6)).astype(np.float32)
    fb = rng.normal(0, 0.1, (2,)).astype(np.float32)
    nodes = [
        helper.make_node("Cast", ["flags"], ["flagsf"], to=TensorProto.FLOAT),
        helper.make_node("Gemm", ["flagsf", "fc.weight", "fc.bias"], ["score"], transB=1),
        helper.make_node("Not", ["flags"], ["inverted"]),
        helper.make_node("Cast", ["flags"], ["flagsi"], to=TensorProto.INT64),
        helper.make_node("ReduceSum", ["flagsi", "axis1"], ["count"], keepdims=0),
    ]
    inits = [init("fc.weight", fw), init("fc.bias", fb), init("axis1", np.array([1], np.int64))]
    model = finish("flags_bool", nodes, [vi("flags", TensorProto.BOOL, ["N", 6])],
                   [vi("score", TensorProto.FLOAT, ["N", 2]), vi("inverted", TensorProto.BOOL, ["N", 6]),
                    vi("count", TensorProto.INT64, ["N"])], inits)
    return model, {"flags": rng.integers(0, 2, (SAMPLES, 6)).astype(np.bool_)}


def sensor_f16(rng):
    w = rng.normal(0, 0.5, (5, 3)).astype(np.float16)
    b = rng.normal(0, 0.1, (3,)).astype(np.float16)
    nodes = [
        helper.make_node("MatMul", ["x", "weight"], ["xw"]),
        helper.make_node("Add", ["xw", "bias"], ["y"]),
    ]
    model = finish("sensor_f16", nodes, [vi("x", TensorProto.FLOAT16, ["N", 5])],
                   [vi("y", TensorProto.FLOAT16, ["N", 3])], [init("weight", w), init("bias", b)])
    return model, {"x": rng.normal(0, 1.0, (SAMPLES, 5)).astype(np.float16)}


def detector_image(n):
    """The detector's test input, a formula the Rust tests rebuild: pixel (b, c, y, x) of image b is
    (b * 11 + c * 7 + y * 13 + x * 31) mod 256."""
    b, c, y, x = np.meshgrid(np.arange(n), np.arange(3), np.arange(640), np.arange(640), indexing="ij")
    return ((b * 11 + c * 7 + y * 13 + x * 31) % 256).astype(np.uint8)


def detector_640(rng):
    w = rng.normal(0, 0.02, (6, 3, 32, 32)).astype(np.float32)
    b = rng.normal(0, 0.1, (6,)).astype(np.float32)
    nodes = [
        helper.make_node("Cast", ["image"], ["imagef"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["imagef", "scale"], ["x"]),
        helper.make_node("Conv", ["x", "head.weight", "head.bias"], ["c"], strides=[32, 32]),
        helper.make_node("Reshape", ["c", "cells"], ["r"]),
        helper.make_node("Transpose", ["r"], ["boxes"], perm=[0, 2, 1]),
        helper.make_node("ArgMax", ["boxes"], ["class"], axis=2, keepdims=0),
    ]
    inits = [init("scale", np.array(1 / 255, np.float32)), init("head.weight", w), init("head.bias", b),
             init("cells", np.array([0, 6, 400], np.int64))]
    model = finish("detector_640", nodes, [vi("image", TensorProto.UINT8, ["N", 3, 640, 640])],
                   [vi("boxes", TensorProto.FLOAT, ["N", 400, 6]), vi("class", TensorProto.INT64, ["N", 400])],
                   inits)
    return model, {"image": detector_image(2)}


def gpu_names(rng):
    w = rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32)
    b = rng.normal(0, 0.1, (4,)).astype(np.float32)
    fw = rng.normal(0, 1.0, (5, 4)).astype(np.float32)
    fb = rng.normal(0, 0.1, (5,)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["gpu_0/data_0", "gpu_0/conv1_w", "gpu_0/conv1_b"], ["gpu_0/conv1"],
                         pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["gpu_0/conv1"], ["gpu_0/relu1"]),
        helper.make_node("GlobalAveragePool", ["gpu_0/relu1"], ["gpu_0/pool1"]),
        helper.make_node("Flatten", ["gpu_0/pool1"], ["gpu_0/flat1"], axis=1),
        helper.make_node("Gemm", ["gpu_0/flat1", "gpu_0/fc_w", "gpu_0/fc_b"], ["gpu_0/fc"], transB=1),
        helper.make_node("Softmax", ["gpu_0/fc"], ["gpu_0/softmax_1"], axis=1),
    ]
    inits = [init("gpu_0/conv1_w", w), init("gpu_0/conv1_b", b), init("gpu_0/fc_w", fw), init("gpu_0/fc_b", fb)]
    model = finish("gpu_names", nodes, [vi("gpu_0/data_0", TensorProto.FLOAT, ["N", 3, 6, 6])],
                   [vi("gpu_0/softmax_1", TensorProto.FLOAT, ["N", 5])], inits)
    return model, {"gpu_0/data_0": rng.normal(0, 1.0, (SAMPLES, 3, 6, 6)).astype(np.float32)}


# Models whose tensor names NNEF spells otherwise: their own seed, so adding them changed no other fixture.
RENAMED_SEED = 20261206
RENAMED = [
    ("gpu-names", gpu_names),
]

def camera_int8(rng, activations="QUInt8", weights="QInt8", per_channel=True):
    """The float model, then `quantize_static` (QDQ; by default U8S8, per-channel) calibrated on seeded
    images."""
    import tempfile
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    def conv_w(cout, cin, k):
        return rng.normal(0, np.sqrt(2.0 / (cin * k * k)), (cout, cin, k, k)).astype(np.float32)

    inits = [init("conv1.weight", conv_w(8, 3, 3)), init("conv1.bias", rng.normal(0, 0.1, (8,)).astype(np.float32)),
             init("dw.weight", conv_w(8, 1, 3)), init("dw.bias", rng.normal(0, 0.1, (8,)).astype(np.float32)),
             init("pw.weight", conv_w(8, 8, 1)), init("pw.bias", rng.normal(0, 0.1, (8,)).astype(np.float32)),
             init("fc.weight", rng.normal(0, 0.5, (5, 8)).astype(np.float32)),
             init("fc.bias", rng.normal(0, 0.1, (5,)).astype(np.float32))]
    nodes = [
        helper.make_node("Conv", ["image", "conv1.weight", "conv1.bias"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "dw.weight", "dw.bias"], ["c2"], pads=[1, 1, 1, 1], group=8),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "pw.weight", "pw.bias"], ["c3"]),
        helper.make_node("Add", ["r1", "c3"], ["sum"]),
        helper.make_node("GlobalAveragePool", ["sum"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["logits"], transB=1),
    ]
    model = finish("camera_int8", nodes, [vi("image", TensorProto.FLOAT, ["N", 3, 16, 16])],
                   [vi("logits", TensorProto.FLOAT, ["N", 5])], inits)
    calibration = [rng.random((1, 3, 16, 16), dtype=np.float32) for _ in range(16)]

    class Images(CalibrationDataReader):
        def __init__(self):
            self.images = iter({"image": x} for x in calibration)

        def get_next(self):
            return next(self.images, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "float.onnx"), os.path.join(tmp, "int8.onnx")
        onnx.save(model, src)
        quantize_static(src, dst, Images(), quant_format=QuantFormat.QDQ, activation_type=QuantType[activations],
                        weight_type=QuantType[weights], per_channel=per_channel)
        quantized = onnx.load(dst)
    quantized.producer_name, quantized.producer_version = PRODUCER, "1"
    return quantized, {"image": rng.random((SAMPLES, 3, 16, 16), dtype=np.float32)}


# Quantized models (QDQ): their own seed, so adding them changed no other fixture.
QUANTIZED_SEED = 20261208
QUANTIZED = [
    ("camera-int8", camera_int8),
    # The other forms quantizers write: int8 activations (symmetric), and per-tensor uint8 weights.
    ("camera-int8-s8s8", lambda rng: camera_int8(rng, activations="QInt8")),
    ("camera-int8-u8u8-tensor", lambda rng: camera_int8(rng, weights="QUInt8", per_channel=False)),
]

MODELS = [
    ("camera-u8", camera_u8),
    ("intent-i64", intent_i64),
    ("flags-bool", flags_bool),
    ("sensor-f16", sensor_f16),
    ("detector-640", detector_640),
]


def tensor_info(value_info):
    t = value_info.type.tensor_type
    dims = [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim]
    return {"name": value_info.name, "datatype": OIP[t.elem_type], "shape": dims}


def file_part(tensor):
    """A tensor name as a file name: NNEF's spelling of it ("gpu_0/data_0" -> "gpu_0_data_0")."""
    return "".join(c if c.isalnum() or c == "_" else "_" for c in tensor)


def make_typed(out, write_bytes, sha256):
    """Writes every typed model, its samples and onnxruntime's answers into OUT/typed/."""
    folder = os.path.join(out, "typed")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(TYPED_SEED)
    described = []
    renamed_rng = np.random.default_rng(RENAMED_SEED)
    renamed = []
    quantized_rng = np.random.default_rng(QUANTIZED_SEED)
    quantized = []
    jobs = ([(n, b, rng, described) for n, b in MODELS] + [(n, b, renamed_rng, renamed) for n, b in RENAMED]
            + [(n, b, quantized_rng, quantized) for n, b in QUANTIZED])
    for name, build, rng_of, listed in jobs:
        model, samples = build(rng_of)
        path = os.path.join(folder, f"{name}.onnx")
        write_bytes(path, model.SerializeToString())
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        answers = sess.run(None, samples)
        files = {}
        for vinfo in model.graph.input:
            elem = vinfo.type.tensor_type.elem_type
            if name != "detector-640":
                fname = f"{name}.input.{file_part(vinfo.name)}.bin"
                write_bytes(os.path.join(folder, fname), samples[vinfo.name].astype(NP[elem]).tobytes())
                files[vinfo.name] = fname
        for vinfo, value in zip(model.graph.output, answers):
            elem = vinfo.type.tensor_type.elem_type
            fname = f"{name}.ort.{file_part(vinfo.name)}.bin"
            write_bytes(os.path.join(folder, fname), value.astype(NP[elem]).tobytes())
            files[vinfo.name] = fname
            # Integer outputs (argmax) compare exactly across runtimes: make sure no two scores are so
            # close that float rounding could pick another class.
        if name in ("camera-u8", "intent-i64"):
            scores = answers[0]
            top2 = np.sort(scores, axis=1)[:, -2:]
            assert (top2[:, 1] - top2[:, 0] > 1e-3).all(), (name, top2)
        n = next(iter(samples.values())).shape[0]
        listed.append({
            "name": name,
            "file": f"{name}.onnx",
            "sha256": sha256(path),
            "samples": int(n),
            "inputs": [tensor_info(v) for v in model.graph.input],
            "outputs": [tensor_info(v) for v in model.graph.output],
            "files": files,
        })
        print(f"typed/{name}: {os.path.getsize(path)} bytes, {n} samples, outputs "
              + ", ".join(f"{v.name} {tuple(a.shape)} {a.dtype}" for v, a in zip(model.graph.output, answers)))
    with open(os.path.join(folder, "typed.json"), "w") as f:
        json.dump({"seed": TYPED_SEED, "opset": OPSET, "models": described, "renamed_seed": RENAMED_SEED,
                   "renamed": renamed, "quantized_seed": QUANTIZED_SEED, "quantized": quantized}, f, indent=2)
        f.write("\n")
