//! The typed fixtures of `simulations/models/typed/` (UINT8, INT64 with a mask, BOOL and FP16 inputs;
//! INT64, BOOL, FP16 and FP32 outputs; a 640×640 detector), converted to NNEF as bundles carry them and
//! run by tract on onnxruntime's inputs: every answer equals onnxruntime's, integers and booleans exactly,
//! floats within 1e-3.

use outpost_models::tensor::{compare, to_manifest};
use outpost_models::{TensorData, onnx};
use outpost_protocol::manifest::{DType, Dim, Tolerance};
use std::path::PathBuf;

fn typed_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../simulations/models/typed")
}

fn index() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(typed_dir().join("typed.json")).unwrap()).unwrap()
}

fn read(dtype: DType, file: &str) -> TensorData {
    TensorData::from_le_bytes(dtype, &std::fs::read(typed_dir().join(file)).unwrap()).unwrap()
}

/// Pixel (b, c, y, x) of detector test image b (typed_models.py `detector_image`).
pub fn detector_image(n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n * 3 * 640 * 640);
    for b in 0..n {
        for c in 0..3 {
            for y in 0..640 {
                for x in 0..640 {
                    v.push(((b * 11 + c * 7 + y * 13 + x * 31) % 256) as u8);
                }
            }
        }
    }
    v
}

#[test]
fn every_typed_model_converts_keeps_its_types_and_answers_like_onnxruntime() {
    for m in index()["models"].as_array().unwrap() {
        let name = m["name"].as_str().unwrap();
        let converted = onnx::convert(&std::fs::read(typed_dir().join(m["file"].as_str().unwrap())).unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let n = m["samples"].as_u64().unwrap() as usize;
        let mut inputs = Vec::new();
        for (spec, want) in converted.interface.inputs.iter().zip(m["inputs"].as_array().unwrap()) {
            assert_eq!(spec.name, want["name"].as_str().unwrap(), "{name}");
            assert_eq!(spec.dtype.as_str(), want["datatype"].as_str().unwrap(), "{name} {}", spec.name);
            assert!(matches!(spec.shape[0], Dim::Symbolic(_)), "{name}: the batch stays symbolic");
            let mut shape = converted.unit_shape(inputs.len());
            shape[0] = n;
            let data = match m["files"].get(&spec.name) {
                Some(file) => read(spec.dtype, file.as_str().unwrap()),
                None => TensorData::U8(detector_image(n)),
            };
            inputs.push((shape, data));
        }
        let outputs = converted.run(inputs).unwrap_or_else(|e| panic!("{name}: {e}"));
        for ((spec, (shape, got)), want) in
            converted.interface.outputs.iter().zip(&outputs).zip(m["outputs"].as_array().unwrap())
        {
            assert_eq!(spec.dtype.as_str(), want["datatype"].as_str().unwrap(), "{name} {}", spec.name);
            let ort = read(spec.dtype, m["files"][&spec.name].as_str().unwrap());
            let tol = Tolerance { abs: 1e-3, rel: 0.0 };
            compare(got, shape, &to_manifest(&spec.name, shape, &ort), tol)
                .unwrap_or_else(|e| panic!("{name}: tract and onnxruntime differ: {e}"));
        }
        println!("{name}: {} outputs equal onnxruntime's", outputs.len());
    }
}

#[test]
fn an_out_of_range_token_id_is_refused_before_tract_indexes_with_it() {
    let bytes = std::fs::read(typed_dir().join("intent-i64.onnx")).unwrap();
    let converted = onnx::convert(&bytes).unwrap();
    // Found in the NNEF model devices load: `ids` indexes the 50-row embedding; `mask` indexes nothing.
    let bounds = outpost_models::bounds::index_bounds(&converted.model).unwrap();
    assert_eq!(bounds, vec![Some(outpost_models::bounds::IndexBound { len: 50 }), None]);
    let mask = TensorData::I64(vec![1; 8]);
    for bad in [200, 50, -51, i64::MIN] {
        let ids = TensorData::I64(vec![3, 4, 5, 6, 7, 8, 9, bad]);
        let e = converted.run(vec![(vec![1, 8], ids), (vec![1, 8], mask.clone())]).unwrap_err();
        let want =
            format!("input ids holds {bad} at element 7, but it indexes a table of 50 rows: values must be in -50..49");
        assert!(e.to_string().contains(&want), "{e}");
    }
    // Negative ids count from the end, as in ONNX.
    let ids = TensorData::I64(vec![-50, -1, 0, 49, 1, 2, 3, 4]);
    assert!(converted.run(vec![(vec![1, 8], ids), (vec![1, 8], mask)]).is_ok());
}
