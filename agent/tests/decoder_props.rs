//! Property tests of the local API's request decoders (JSON bodies and the binary tensor extension), the
//! code every unsigned local request passes through first. For any bytes and any header length they return
//! a request or an error and never panic; typed tensors of every type survive both encodings exactly; and a
//! valid binary body cut short or with bytes changed still decodes to tensors whose sizes agree with what
//! they declare, or to an error. CI runs `OUTPOST_DECODER_CASES` cases per property (default 2000, about
//! a second each in a debug build); raise it locally for a longer fuzzing run.

use outpost_agent::api::binary::decode_request;
use outpost_agent::api::tensor_json::Values;
use outpost_models::{TensorData, f16};
use outpost_protocol::manifest::DType;
use proptest::prelude::*;
use serde_json::{Value, json};

fn cases() -> u32 {
    std::env::var("OUTPOST_DECODER_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
}

/// A typed tensor of up to 24 values: every OIP type tract runs, extreme values included (finite floats:
/// JSON has no NaN or infinity).
fn tensor() -> impl Strategy<Value = TensorData> {
    let n = 0..24usize;
    prop_oneof![
        prop::collection::vec(any::<bool>(), n.clone()).prop_map(TensorData::Bool),
        prop::collection::vec(any::<u8>(), n.clone()).prop_map(TensorData::U8),
        prop::collection::vec(any::<u16>(), n.clone()).prop_map(TensorData::U16),
        prop::collection::vec(any::<u32>(), n.clone()).prop_map(TensorData::U32),
        prop::collection::vec(any::<u64>(), n.clone()).prop_map(TensorData::U64),
        prop::collection::vec(any::<i8>(), n.clone()).prop_map(TensorData::I8),
        prop::collection::vec(any::<i16>(), n.clone()).prop_map(TensorData::I16),
        prop::collection::vec(any::<i32>(), n.clone()).prop_map(TensorData::I32),
        prop::collection::vec(any::<i64>(), n.clone()).prop_map(TensorData::I64),
        prop::collection::vec(
            any::<u16>().prop_map(f16::from_bits).prop_filter("finite", |h| h.is_finite()),
            n.clone()
        )
        .prop_map(TensorData::F16),
        prop::collection::vec(any::<f32>().prop_filter("finite", |x| x.is_finite()), n.clone())
            .prop_map(TensorData::F32),
        prop::collection::vec(any::<f64>().prop_filter("finite", |x| x.is_finite()), n).prop_map(TensorData::F64),
    ]
}

fn json_input(name: &str, t: &TensorData) -> Value {
    json!({"name": name, "shape": [t.len()], "datatype": t.dtype().as_str(), "data": serde_json::to_value(Values(t)).unwrap()})
}

/// A binary request body for `tensors`: the JSON header and its length, then the raw values.
fn binary_body(tensors: &[TensorData]) -> (Vec<u8>, usize) {
    let inputs: Vec<Value> = tensors
        .iter()
        .enumerate()
        .map(|(i, t)| {
            json!({"name": format!("t{i}"), "shape": [t.len()], "datatype": t.dtype().as_str(),
            "parameters": {"binary_data_size": t.byte_len()}})
        })
        .collect();
    let mut body = serde_json::to_vec(&json!({ "inputs": inputs })).unwrap();
    let len = body.len();
    for t in tensors {
        t.write_le_bytes(&mut body);
    }
    (body, len)
}

/// What a decoded request must hold whenever decoding succeeds: every tensor has values, in its declared
/// type, and binary ones exactly as many bytes as declared.
fn consistent(body: &[u8], header: Option<&str>) {
    if let Ok(req) = decode_request(body, header) {
        for input in &req.inputs {
            let Some(data) = &input.data else { continue };
            assert_eq!(Some(data.dtype()), DType::parse(&input.datatype), "{}", input.name);
            let declared = input.parameters.as_ref().and_then(|p| p.get("binary_data_size")).and_then(Value::as_u64);
            if let Some(size) = declared {
                assert_eq!(data.byte_len() as u64, size, "{}", input.name);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_with_any_header_length_decode_or_fail_without_panicking(
        body in prop::collection::vec(any::<u8>(), 0..256),
        header in prop::option::of(prop_oneof![any::<u64>().prop_map(|n| n.to_string()), (0..300u64).prop_map(|n| n.to_string()), ".{0,8}"]),
    ) {
        consistent(&body, header.as_deref());
    }

    #[test]
    fn typed_tensors_survive_json_and_binary_exactly(tensors in prop::collection::vec(tensor(), 1..5)) {
        let inputs: Vec<Value> = tensors.iter().enumerate().map(|(i, t)| json_input(&format!("t{i}"), t)).collect();
        let body = serde_json::to_vec(&json!({ "inputs": inputs })).unwrap();
        let req = decode_request(&body, None).unwrap();
        let got: Vec<TensorData> = req.inputs.into_iter().map(|t| t.data.unwrap()).collect();
        prop_assert_eq!(&got, &tensors);

        let (body, len) = binary_body(&tensors);
        let req = decode_request(&body, Some(&len.to_string())).unwrap();
        let got: Vec<TensorData> = req.inputs.into_iter().map(|t| t.data.unwrap()).collect();
        prop_assert_eq!(&got, &tensors);
    }

    #[test]
    fn damaged_binary_bodies_decode_consistently_or_fail(
        tensors in prop::collection::vec(tensor(), 1..4),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
        header_shift in -3i64..4,
    ) {
        let (mut body, len) = binary_body(&tensors);
        for (at, byte) in flips {
            let i = at.index(body.len());
            body[i] = byte;
        }
        let keep = if cut.index(4) == 0 { cut.index(body.len() + 1) } else { body.len() };
        body.truncate(keep);
        let header = (len as i64 + header_shift).to_string();
        consistent(&body, Some(&header));
    }

    #[test]
    fn json_values_outside_their_type_are_refused_not_wrapped(
        v in prop_oneof![any::<i64>().prop_map(|v| json!(v)), any::<u64>().prop_map(|v| json!(v)), any::<f64>().prop_filter("finite", |x| x.is_finite()).prop_map(|v| json!(v)), any::<bool>().prop_map(|v| json!(v))],
        dtype in prop::sample::select(vec!["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"]),
    ) {
        let body = serde_json::to_vec(&json!({"inputs": [{"name": "x", "shape": [1], "datatype": dtype, "data": [v.clone()]}]})).unwrap();
        match decode_request(&body, None) {
            Ok(req) => {
                // Accepted only when the value is exactly representable in the type.
                let data = req.inputs[0].data.as_ref().unwrap();
                let back = serde_json::to_value(Values(data)).unwrap();
                prop_assert_eq!(back[0].clone(), v);
            }
            Err(e) => prop_assert!(e.contains("is not a value of type"), "{}", e),
        }
    }
}
