//! The Open Inference Protocol's binary tensor data extension (KServe v2 / Triton): the body is a JSON
//! header of `Inference-Header-Content-Length` bytes followed by raw little-endian tensors, one per input
//! whose `parameters.binary_data_size` says how many bytes it takes, in input order. Outputs come back the
//! same way when the request asks (`binary_data` on an output, or `binary_data_output` for all). An image
//! as JSON text is 2.5× its raw size and its numbers cost ~19 ns each to parse (2.9 ms for a 224×224×3
//! image, BENCHMARKS.md); raw, it is a copy.

use super::oip::InferRequestJson;
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
        if !input.data.is_empty() {
            return Err(format!("input {:?} has both `data` and binary data", input.name));
        }
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if size % 4 != 0 {
            return Err(format!(
                "input {:?}: binary_data_size {size} is not a whole number of FP32 values",
                input.name
            ));
        }
        if size > rest.len() {
            return Err(format!(
                "input {:?}: binary_data_size {size} but only {} binary bytes are left in the body",
                input.name,
                rest.len()
            ));
        }
        let (mine, after) = rest.split_at(size);
        input.data = mine.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
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

/// A binary response body: the JSON header, then the binary outputs' values in output order. Returns the
/// body and the JSON part's length (the response's `Inference-Header-Content-Length`).
pub fn encode_response<T: serde::Serialize>(header: &T, binary: &[&[f32]]) -> (Vec<u8>, usize) {
    let mut body = serde_json::to_vec(header).expect("response JSON serialises");
    let json_len = body.len();
    body.reserve(binary.iter().map(|d| d.len() * 4).sum());
    for data in binary {
        for v in data.iter() {
            body.extend_from_slice(&v.to_le_bytes());
        }
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
        let data: Vec<&[f32]> = req.inputs.iter().map(|t| &t.data[..]).collect();
        assert_eq!(data, vec![&[1.5, -2.0][..], &[7.0][..], &[3.25][..]]);
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
