#!/usr/bin/env python3
"""A real Open Inference Protocol client against an Outpost agent: NVIDIA's `tritonclient` (HTTP, KServe v2),
as applications use it. For one typed model of simulations/models/typed/, sends the committed samples as
one batch, over JSON and over the binary tensor extension, and compares every output with onnxruntime's
answer (integers and booleans exactly, floats within 1e-3). Prints one line per check; exits 1 on a
mismatch. Run by agent/tests/typed_serving.rs (scripts/test.sh installs tritonclient[http]).

    python3 oip_client.py --url 127.0.0.1:PORT --model camera-u8 --typed-dir simulations/models/typed
"""

import argparse
import json
import os
import sys

import numpy as np
import tritonclient.http as httpclient

NP = {"UINT8": np.uint8, "INT64": np.int64, "BOOL": np.bool_, "FP32": np.float32, "FP16": np.float16}


def detector_image(n):
    """The detector's input, a formula (typed_models.py `detector_image`): pixel (b, c, y, x) of image b is
    (b * 11 + c * 7 + y * 13 + x * 31) mod 256."""
    b, c, y, x = np.meshgrid(np.arange(n), np.arange(3), np.arange(640), np.arange(640), indexing="ij")
    return ((b * 11 + c * 7 + y * 13 + x * 31) % 256).astype(np.uint8)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--typed-dir", required=True)
    args = ap.parse_args()
    index = json.load(open(os.path.join(args.typed_dir, "typed.json")))
    m = next(x for x in index["models"] if x["name"] == args.model)
    n = m["samples"]
    client = httpclient.InferenceServerClient(url=args.url)
    assert client.is_server_ready(), "server not ready"
    meta = client.get_model_metadata(args.model)
    got_types = [(t["name"], t["datatype"]) for t in meta["inputs"] + meta["outputs"]]
    want_types = [(t["name"], t["datatype"]) for t in m["inputs"] + m["outputs"]]
    assert got_types == want_types, f"metadata {got_types} != {want_types}"
    print(f"{args.model}: metadata reports {want_types}")

    feeds = {}
    for t in m["inputs"]:
        shape = [n] + [d for d in t["shape"][1:]]
        if t["name"] in m["files"]:
            raw = open(os.path.join(args.typed_dir, m["files"][t["name"]]), "rb").read()
            feeds[t["name"]] = np.frombuffer(raw, dtype=NP[t["datatype"]]).reshape(shape)
        else:
            feeds[t["name"]] = detector_image(n)

    failures = 0
    for binary in (False, True):
        inputs = []
        for t in m["inputs"]:
            x = httpclient.InferInput(t["name"], list(feeds[t["name"]].shape), t["datatype"])
            x.set_data_from_numpy(feeds[t["name"]], binary_data=binary)
            inputs.append(x)
        outputs = [httpclient.InferRequestedOutput(t["name"], binary_data=binary) for t in m["outputs"]]
        result = client.infer(args.model, inputs, outputs=outputs)
        how = "binary" if binary else "JSON"
        for t in m["outputs"]:
            got = result.as_numpy(t["name"])
            raw = open(os.path.join(args.typed_dir, m["files"][t["name"]]), "rb").read()
            want = np.frombuffer(raw, dtype=NP[t["datatype"]]).reshape(got.shape)
            if got.dtype != want.dtype:
                print(f"FAIL {how} {t['name']}: dtype {got.dtype}, onnxruntime {want.dtype}")
                failures += 1
            elif t["datatype"] in ("FP32", "FP16"):
                diff = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max())
                ok = diff <= 1e-3
                print(f"{'ok' if ok else 'FAIL'} {how} {t['name']} {t['datatype']} {list(got.shape)}: "
                      f"max |agent - onnxruntime| = {diff:.2e}")
                failures += 0 if ok else 1
            else:
                ok = bool((got == want).all())
                print(f"{'ok' if ok else 'FAIL'} {how} {t['name']} {t['datatype']} {list(got.shape)}: "
                      f"{'equal' if ok else 'differ'} to onnxruntime's")
                failures += 0 if ok else 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
