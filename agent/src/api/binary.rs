//! The Open Inference Protocol's binary tensor data extension (KServe v2 / Triton): the body is a JSON
//! header of `Inference-Header-Content-Length` bytes followed by raw little-endian tensors of each input's
//! `datatype` (a BOOL is one byte, 0 or 1), one per input whose `parameters.binary_data_size` says how many
//! bytes it takes, in input order. Outputs come back the
//! same way when the request asks (`binary_data` on an output, or `binary_data_output` for all). An image
//! as JSON text is 2.5× its raw size and its numbers cost ~19 ns each to parse (2.9 ms for a 224×224×3
//! image, BENCHMARKS.md); raw, it is a copy.

use super::oip::InferRequestJson;
use outpost_models::TensorData;
use serde_json::Value;

/// The header naming the JSON part's length, on requests and on binary responses.
pub const HEADER: &str = "inference-header-content-length";

/// `parameters.<key>` as a non-negative integer, or `None` when absent. A present key of another type is
/// an error: a client that set it meant something.
fn param_u64(params: &Option<Value>, key: &str) -> Result<Option<u64>, String> {
    match params.as_ref().and_then(|p| p.get(key)) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| format!("parameters.{key} must be a non-negative integer")),
    }
}

fn param_bool(params: &Option<Value>, key: &str) -> bool {
    params.as_ref().and_then(|p| p.get(key)).and_then(Value::as_bool).unwrap_or(false)
}

/// Decodes a request body: plain JSON when `header_len` is `None`, else the JSON header and the binary
/// tensors after it. Errors name what was wrong (they become 400s).
pub fn decode_request(body: &[u8], header_len: Option<&str>) -> Result<InferRequestJson, String> {
    let Some(header_len) = header_len else {
        return serde_json::from_slice(body).map_err(|e| format!("invalid request JSON: {e}"));
    };
    let json_len: usize = header_len
        .trim()
        .parse()
        .map_err(|_| format!("Inference-Header-Content-Length {header_len:?} is not a byte count"))?;
    if json_len > body.len() {
        return Err(format!("Inference-Header-Content-Length {json_len} exceeds the body's {} bytes", body.len()));
    }
    let (json, mut rest) = body.split_at(json_len);
    let mut req: InferRequestJson =
        serde_json::from_slice(json).map_err(|e| format!("invalid request JSON header: {e}"))?;
    for input in &mut req.inputs {
        let Some(size) =
            param_u64(&input.parameters, "binary_data_size").map_err(|e| format!("input {:?}: {e}", input.name))?
        else {
            continue;
        };
        if input.data.is_some() {
            return Err(format!("input {:?} has both `data` and binary data", input.name));
        }
        let dtype = input.dtype()?;
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if size > rest.len() {
            return Err(format!(
                "input {:?}: binary_data_size {size} but only {} binary bytes are left in the body",
                input.name,
                rest.len()
            ));
        }
        let (mine, after) = rest.split_at(size);
        input.data = Some(
            TensorData::from_le_bytes(dtype, mine).map_err(|e| format!("input {:?}: binary data: {e}", input.name))?,
        );
        rest = after;
    }
    if !rest.is_empty() {
        return Err(format!("{} bytes after the last binary input (binary_data_size too small?)", rest.len()));
    }
    Ok(req)
}

/// The outputs the response should carry as binary data: every one with `binary_data_output`, else those
/// requested with `parameters.binary_data`.
pub fn binary_outputs(req: &InferRequestJson) -> BinaryOutputs {
    if param_bool(&req.parameters, "binary_data_output") {
        return BinaryOutputs::All;
    }
    let named = req.outputs.iter().flatten().filter(|o| param_bool(&o.parameters, "binary_data"));
    BinaryOutputs::Named(named.map(|o| o.name.clone()).collect())
}

#[derive(Debug, Clone, PartialEq)]
pub enum BinaryOutputs {
    All,
    Named(Vec<String>),
}

impl BinaryOutputs {
    pub fn contains(&self, name: &str) -> bool {
        match self {
            BinaryOutputs::All => true,
            BinaryOutputs::Named(names) => names.iter().any(|n| n == name),
        }
    }

    pub fn any(&self) -> bool {
        !matches!(self, BinaryOutputs::Named(names) if names.is_empty())
    }
}

/// A binary response body: the JSON header, then the binary outputs' values (little-endian, in their own
/// types) in output order. Returns the body and the JSON part's length (the response's
/// `Inference-Header-Content-Length`).
pub fn encode_response<T: serde::Serialize>(header: &T, binary: &[&TensorData]) -> (Vec<u8>, usize) {
    let mut body = serde_json::to_vec(header).expect("response JSON serialises");
    let json_len = body.len();
    body.reserve(binary.iter().map(|d| d.byte_len()).sum());
    for data in binary {
        data.write_le_bytes(&mut body);
    }
    (body, json_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_inputs_take_their_bytes_in_input_order_and_json_inputs_keep_their_data() {
        let header = br#"{"inputs":[
            {"name":"a","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}},
            {"name":"b","shape":[1],"datatype":"FP32","data":[7]},
            {"name":"c","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":4}}]}"#;
        let mut body = header.to_vec();
        for v in [1.5f32, -2.0, 3.25] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        let req = decode_request(&body, Some(&header.len().to_string())).unwrap();
        let data: Vec<_> = req.inputs.into_iter().map(|t| t.data.unwrap()).collect();
        let f = |v: &[f32]| TensorData::F32(v.to_vec());
        assert_eq!(data, vec![f(&[1.5, -2.0]), f(&[7.0]), f(&[3.25])]);
    }

    #[test]
    fn binary_inputs_decode_in_their_own_type_and_bad_lengths_or_booleans_are_named() {
        let header = br#"{"inputs":[
            {"name":"ids","shape":[2],"datatype":"INT64","parameters":{"binary_data_size":16}},
            {"name":"mask","shape":[2],"datatype":"BOOL","parameters":{"binary_data_size":2}},
            {"name":"x","shape":[1],"datatype":"FP16","parameters":{"binary_data_size":2}}]}"#;
        let mut body = header.to_vec();
        body.extend_from_slice(&(1i64 << 60).to_le_bytes());
        body.extend_from_slice(&(-3i64).to_le_bytes());
        body.extend_from_slice(&[1, 0]);
        body.extend_from_slice(&outpost_models::f16::from_f32(1.5).to_bits().to_le_bytes());
        let len = header.len().to_string();
        let req = decode_request(&body, Some(&len)).unwrap();
        let data: Vec<_> = req.inputs.into_iter().map(|t| t.data.unwrap()).collect();
        assert_eq!(data[0], TensorData::I64(vec![1 << 60, -3]));
        assert_eq!(data[1], TensorData::Bool(vec![true, false]));
        assert_eq!(data[2], TensorData::F16(vec![outpost_models::f16::from_f32(1.5)]));

        let mut bad_bool = body.clone();
        bad_bool[header.len() + 16] = 2;
        let e = decode_request(&bad_bool, Some(&len)).unwrap_err();
        assert!(e.contains("input \"mask\": binary data: BOOL value 0 is the byte 2"), "{e}");
        let odd = br#"{"inputs":[{"name":"ids","shape":[1],"datatype":"INT64","parameters":{"binary_data_size":7}}]}"#;
        let mut body = odd.to_vec();
        body.extend_from_slice(&[0; 7]);
        let e = decode_request(&body, Some(&odd.len().to_string())).unwrap_err();
        assert!(e.contains("7 bytes is not a whole number of INT64 values"), "{e}");
        let bytes = br#"{"inputs":[{"name":"s","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":2}}]}"#;
        let mut body = bytes.to_vec();
        body.extend_from_slice(b"hi");
        let e = decode_request(&body, Some(&bytes.len().to_string())).unwrap_err();
        assert!(e.contains("datatype BYTES"), "{e}");
    }

    #[test]
    fn binary_outputs_follow_the_request_flags() {
        let req = |s: &str| serde_json::from_str::<InferRequestJson>(s).unwrap();
        let none = req(r#"{"inputs":[],"outputs":[{"name":"x"}]}"#);
        assert!(!binary_outputs(&none).any());
        let one = req(r#"{"inputs":[],"outputs":[{"name":"x","parameters":{"binary_data":true}},{"name":"y"}]}"#);
        assert!(binary_outputs(&one).contains("x") && !binary_outputs(&one).contains("y"));
        let all = req(r#"{"inputs":[],"parameters":{"binary_data_output":true}}"#);
        assert!(binary_outputs(&all).contains("anything"));
    }
}
