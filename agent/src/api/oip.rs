//! JSON shapes of the Open Inference Protocol (KServe v2 REST). `data` may be flat (row-major) or nested
//! arrays; it is parsed straight into `Vec<f32>` without building a JSON tree (large image tensors).

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferRequestJson {
    #[serde(default)]
    pub id: Option<String>,
    pub inputs: Vec<InputJson>,
    #[serde(default)]
    pub outputs: Option<Vec<RequestedOutput>>,
    #[serde(default)]
    pub parameters: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub struct InputJson {
    pub name: String,
    pub shape: Vec<usize>,
    pub datatype: String,
    /// Empty when the tensor travels as binary data after the JSON (`api::binary`).
    #[serde(default, deserialize_with = "flat_f32")]
    pub data: Vec<f32>,
    #[serde(default)]
    pub parameters: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub struct RequestedOutput {
    pub name: String,
    #[serde(default)]
    pub parameters: Option<serde_json::Value>,
}

#[derive(Debug, Serialize)]
pub struct InferResponseJson<'a> {
    pub model_name: &'a str,
    pub model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub outputs: Vec<OutputJson<'a>>,
}

#[derive(Debug, Serialize)]
pub struct OutputJson<'a> {
    pub name: &'a str,
    pub shape: &'a [usize],
    pub datatype: &'static str,
    /// `None` when the values follow the JSON as binary data (`parameters.binary_data_size` says how many bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<&'a [f32]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<BinaryParameters>,
}

#[derive(Debug, Serialize)]
pub struct BinaryParameters {
    pub binary_data_size: usize,
}

#[derive(Debug, Serialize)]
pub struct TensorMetadata {
    pub name: String,
    pub datatype: &'static str,
    /// -1 marks a variable (batch) dimension.
    pub shape: Vec<i64>,
}

#[derive(Debug, Serialize)]
pub struct ModelMetadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: &'static str,
    pub inputs: Vec<TensorMetadata>,
    pub outputs: Vec<TensorMetadata>,
}

/// Accepts `[1, 2, 3]` or `[[1, 2], [3]]` (any depth) and flattens it.
fn flat_f32<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
    struct Flat<'a>(&'a mut Vec<f32>);

    impl<'de> de::DeserializeSeed<'de> for Flat<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Flat<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("numbers or nested arrays of numbers")
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
            self.0.push(v as f32);
            Ok(())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
            self.0.push(v as f32);
            Ok(())
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
            self.0.push(v as f32);
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element_seed(Flat(&mut *self.0))?.is_some() {}
            Ok(())
        }
    }

    let mut out = Vec::new();
    d.deserialize_seq(Flat(&mut out))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_and_nested_data_parse_to_the_same_values() {
        let flat: InputJson =
            serde_json::from_str(r#"{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2.5,3,4]}"#).unwrap();
        let nested: InputJson =
            serde_json::from_str(r#"{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2.5],[3,4]]}"#).unwrap();
        assert_eq!(flat.data, vec![1.0, 2.5, 3.0, 4.0]);
        assert_eq!(nested.data, flat.data);
        assert!(
            serde_json::from_str::<InputJson>(r#"{"name":"x","shape":[1],"datatype":"FP32","data":["a"]}"#).is_err()
        );
    }
}
