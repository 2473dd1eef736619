//! JSON shapes of the Open Inference Protocol (KServe v2 REST). An input's `data` may be flat (row-major)
//! or nested arrays; it is parsed straight into its `datatype` (`api::tensor_json`) without building a JSON
//! tree (large image tensors).

use super::tensor_json::{self, Typed, Untyped, Values};
use outpost_models::TensorData;
use outpost_protocol::manifest::DType;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
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

#[derive(Debug)]
pub struct InputJson {
    pub name: String,
    pub shape: Vec<usize>,
    pub datatype: String,
    /// `None` when the tensor travels as binary data after the JSON (`api::binary`).
    pub data: Option<TensorData>,
    pub parameters: Option<serde_json::Value>,
}

impl InputJson {
    /// The input's element type, or a message a client can act on (BYTES, strings, is not served).
    pub fn dtype(&self) -> Result<DType, String> {
        DType::parse(&self.datatype).ok_or_else(|| unsupported(&self.name, &self.datatype))
    }
}

fn unsupported(name: &str, datatype: &str) -> String {
    if datatype == "BYTES" {
        format!(
            "input {name:?} has datatype BYTES: this agent serves numeric and boolean tensors only (BOOL, UINT8/16/32/64, \
             INT8/16/32/64, FP16/32/64), not strings"
        )
    } else {
        format!("input {name:?} has datatype {datatype:?}, which is not an Open Inference Protocol tensor type")
    }
}

impl<'de> Deserialize<'de> for InputJson {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(InputVisitor)
    }
}

struct InputVisitor;

impl<'de> Visitor<'de> for InputVisitor {
    type Value = InputJson;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an input tensor object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<InputJson, A::Error> {
        let (mut name, mut shape, mut datatype) = (None::<String>, None, None::<String>);
        let (mut data, mut loose, mut parameters) = (None, None, None);
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "name" => name = Some(map.next_value()?),
                "shape" => shape = Some(map.next_value()?),
                "datatype" => datatype = Some(map.next_value()?),
                // Parsed straight into its type when the datatype came first (every client we know writes it
                // first); otherwise kept as written and converted below.
                "data" => match datatype.as_deref().map(|t| (t, DType::parse(t))) {
                    Some((_, Some(dtype))) => data = Some(map.next_value_seed(Typed(dtype))?),
                    Some((t, None)) => {
                        return Err(de::Error::custom(unsupported(name.as_deref().unwrap_or("?"), t)));
                    }
                    None => loose = Some(map.next_value_seed(Untyped)?),
                },
                "parameters" => parameters = Some(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let name = name.ok_or_else(|| de::Error::missing_field("name"))?;
        let shape = shape.ok_or_else(|| de::Error::missing_field("shape"))?;
        let datatype = datatype.ok_or_else(|| de::Error::missing_field("datatype"))?;
        if let Some(values) = loose {
            let dtype = DType::parse(&datatype).ok_or_else(|| de::Error::custom(unsupported(&name, &datatype)))?;
            data = Some(tensor_json::from_loose(dtype, &values).map_err(de::Error::custom)?);
        }
        Ok(InputJson { name, shape, datatype, data, parameters })
    }
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
    pub data: Option<Values<'a>>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_and_nested_data_parse_to_the_same_values_in_the_declared_type() {
        let flat: InputJson =
            serde_json::from_str(r#"{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2.5,3,4]}"#).unwrap();
        let nested: InputJson =
            serde_json::from_str(r#"{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2.5],[3,4]]}"#).unwrap();
        assert_eq!(flat.data, Some(TensorData::F32(vec![1.0, 2.5, 3.0, 4.0])));
        assert_eq!(nested.data, flat.data);
        assert!(
            serde_json::from_str::<InputJson>(r#"{"name":"x","shape":[1],"datatype":"FP32","data":["a"]}"#).is_err()
        );
    }

    #[test]
    fn data_before_its_datatype_still_takes_that_type() {
        let t: InputJson =
            serde_json::from_str(r#"{"data":[9007199254740993],"name":"ids","datatype":"INT64","shape":[1]}"#).unwrap();
        assert_eq!(t.data, Some(TensorData::I64(vec![9_007_199_254_740_993])));
        let e = serde_json::from_str::<InputJson>(r#"{"data":[1],"name":"m","datatype":"BOOL","shape":[1]}"#);
        assert!(e.unwrap_err().to_string().contains("1 is not a value of type BOOL"));
    }

    #[test]
    fn bytes_tensors_are_refused_with_a_message_that_says_so() {
        let e = serde_json::from_str::<InputJson>(r#"{"name":"s","shape":[1],"datatype":"BYTES","data":["hi"]}"#);
        assert!(e.unwrap_err().to_string().contains("datatype BYTES: this agent serves numeric and boolean tensors"));
        // Keys in sorted order (`data` before `datatype`), as some clients write them.
        let e = serde_json::from_str::<InputJson>(r#"{"data":["hi"],"datatype":"BYTES","name":"s","shape":[1]}"#);
        assert!(e.unwrap_err().to_string().contains("datatype BYTES: this agent serves numeric and boolean tensors"));
        let binary: InputJson = serde_json::from_str(r#"{"name":"s","shape":[1],"datatype":"BYTES"}"#).unwrap();
        assert!(binary.dtype().unwrap_err().contains("not strings"));
    }
}
