//! Tensor values in Open Inference Protocol JSON, in their own type: `data` (flat or nested arrays) is
//! parsed straight into the input's `TensorData` without building a JSON tree (large image tensors), and
//! outputs are written the same way. Integers must be integers within their type's range (an INT64 beyond
//! 2^53 stays exact: it never passes through f64), booleans `true`/`false`, floats any JSON number.

use outpost_models::{TensorData, f16};
use outpost_protocol::manifest::DType;
use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use std::fmt;

/// One JSON number or boolean as written, before its type is known (a `data` field that comes before its
/// `datatype`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Loose {
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    /// A string: never a value of a served type, but kept so that the error can name the datatype (BYTES,
    /// say) once it is known.
    Text,
}

/// Appends one value to a tensor of its declared type, or says why it does not fit.
fn push(data: &mut TensorData, v: Loose) -> Result<(), String> {
    let dtype = data.dtype();
    let not = |what: String| format!("{what} is not a value of type {dtype}");
    let show = |v: Loose| match v {
        Loose::Bool(b) => b.to_string(),
        Loose::Int(i) => i.to_string(),
        Loose::Uint(u) => u.to_string(),
        // `{:?}` keeps the point: "0.0 is not a value of type INT64", not "0 is not ...".
        Loose::Float(f) => format!("{f:?}"),
        Loose::Text => "a string".to_owned(),
    };
    macro_rules! int {
        ($vec:expr, $t:ty) => {{
            let x = match v {
                Loose::Int(i) => <$t>::try_from(i).ok(),
                Loose::Uint(u) => <$t>::try_from(u).ok(),
                Loose::Bool(_) | Loose::Float(_) | Loose::Text => None,
            };
            $vec.push(x.ok_or_else(|| not(show(v)))?)
        }};
    }
    let float = |v: Loose| match v {
        Loose::Int(i) => Ok(i as f64),
        Loose::Uint(u) => Ok(u as f64),
        Loose::Float(f) => Ok(f),
        Loose::Bool(b) => Err(not(b.to_string())),
        Loose::Text => Err(not("a string".to_owned())),
    };
    match data {
        TensorData::Bool(d) => match v {
            Loose::Bool(b) => d.push(b),
            other => return Err(not(show(other))),
        },
        TensorData::U8(d) => int!(d, u8),
        TensorData::U16(d) => int!(d, u16),
        TensorData::U32(d) => int!(d, u32),
        TensorData::U64(d) => int!(d, u64),
        TensorData::I8(d) => int!(d, i8),
        TensorData::I16(d) => int!(d, i16),
        TensorData::I32(d) => int!(d, i32),
        TensorData::I64(d) => int!(d, i64),
        TensorData::F16(d) => d.push(f16::from_f64(float(v)?)),
        TensorData::F32(d) => d.push(float(v)? as f32),
        TensorData::F64(d) => d.push(float(v)?),
    }
    Ok(())
}

/// Values written before their `datatype`, converted once it is known.
pub fn from_loose(dtype: DType, values: &[Loose]) -> Result<TensorData, String> {
    let mut data = TensorData::with_capacity(dtype, values.len());
    for &v in values {
        push(&mut data, v)?;
    }
    Ok(data)
}

/// Parses `[1, 2, 3]` or `[[1, 2], [3]]` (any depth) into a tensor of `dtype`.
#[derive(Debug, Clone, Copy)]
pub struct Typed(pub DType);

impl<'de> DeserializeSeed<'de> for Typed {
    type Value = TensorData;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<TensorData, D::Error> {
        let mut data = TensorData::with_capacity(self.0, 0);
        d.deserialize_seq(Flat(&mut |v| push(&mut data, v)))?;
        Ok(data)
    }
}

/// Parses nested arrays of numbers and booleans without knowing their type yet.
#[derive(Debug, Clone, Copy)]
pub struct Untyped;

impl<'de> DeserializeSeed<'de> for Untyped {
    type Value = Vec<Loose>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<Loose>, D::Error> {
        let mut values = Vec::new();
        d.deserialize_seq(Flat(&mut |v| {
            values.push(v);
            Ok(())
        }))?;
        Ok(values)
    }
}

/// Walks nested arrays, handing every leaf to `sink`.
struct Flat<'a>(&'a mut dyn FnMut(Loose) -> Result<(), String>);

impl<'de> DeserializeSeed<'de> for Flat<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Flat<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("numbers, booleans or nested arrays of them")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        (self.0)(Loose::Bool(v)).map_err(E::custom)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        (self.0)(Loose::Int(v)).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        (self.0)(Loose::Uint(v)).map_err(E::custom)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        (self.0)(Loose::Float(v)).map_err(E::custom)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        (self.0)(Loose::Text).map_err(E::custom)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Flat(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

/// Serialises a tensor's values as one flat JSON array in their own type (FP16 as its f32 value).
#[derive(Debug, Clone, Copy)]
pub struct Values<'a>(pub &'a TensorData);

impl serde::Serialize for Values<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        fn all<S: Serializer, T: serde::Serialize>(
            s: S,
            items: impl ExactSizeIterator<Item = T>,
        ) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(items.len()))?;
            for x in items {
                seq.serialize_element(&x)?;
            }
            seq.end()
        }
        match self.0 {
            TensorData::Bool(v) => all(s, v.iter()),
            TensorData::U8(v) => all(s, v.iter()),
            TensorData::U16(v) => all(s, v.iter()),
            TensorData::U32(v) => all(s, v.iter()),
            TensorData::U64(v) => all(s, v.iter()),
            TensorData::I8(v) => all(s, v.iter()),
            TensorData::I16(v) => all(s, v.iter()),
            TensorData::I32(v) => all(s, v.iter()),
            TensorData::I64(v) => all(s, v.iter()),
            TensorData::F16(v) => all(s, v.iter().map(|x| x.to_f32())),
            TensorData::F32(v) => all(s, v.iter()),
            TensorData::F64(v) => all(s, v.iter()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(dtype: DType, json: &str) -> Result<TensorData, String> {
        let mut de = serde_json::Deserializer::from_str(json);
        Typed(dtype).deserialize(&mut de).map_err(|e| e.to_string())
    }

    #[test]
    fn every_type_parses_flat_or_nested_and_writes_back_the_same_json() {
        let cases = [
            (DType::Bool, "[[true,false],[false,true]]", "[true,false,false,true]"),
            (DType::U8, "[0,[255]]", "[0,255]"),
            (DType::I8, "[-128,127]", "[-128,127]"),
            (DType::U16, "[65535]", "[65535]"),
            (DType::I16, "[-32768]", "[-32768]"),
            (DType::U32, "[4294967295]", "[4294967295]"),
            (DType::I32, "[-2147483648]", "[-2147483648]"),
            (DType::U64, "[18446744073709551615]", "[18446744073709551615]"),
            (DType::I64, "[9007199254740993,-1]", "[9007199254740993,-1]"),
            (DType::F16, "[1.5,-2]", "[1.5,-2.0]"),
            (DType::F32, "[1,2.5]", "[1.0,2.5]"),
            (DType::F64, "[1e300]", "[1e+300]"),
        ];
        for (dtype, json, back) in cases {
            let data = parse(dtype, json).unwrap_or_else(|e| panic!("{dtype}: {e}"));
            assert_eq!(data.dtype(), dtype);
            assert_eq!(serde_json::to_string(&Values(&data)).unwrap(), back, "{dtype}");
        }
    }

    #[test]
    fn values_outside_their_type_are_refused_by_name() {
        for (dtype, json, what) in [
            (DType::U8, "[256]", "256 is not a value of type UINT8"),
            (DType::U8, "[-1]", "-1 is not a value of type UINT8"),
            (DType::I64, "[1.5]", "1.5 is not a value of type INT64"),
            (DType::I64, "[18446744073709551615]", "18446744073709551615 is not a value of type INT64"),
            (DType::Bool, "[1]", "1 is not a value of type BOOL"),
            (DType::F32, "[true]", "true is not a value of type FP32"),
            (DType::F32, "[\"a\"]", "a string is not a value of type FP32"),
        ] {
            let e = parse(dtype, json).unwrap_err();
            assert!(e.contains(what), "{dtype} {json}: {e}");
        }
    }

    #[test]
    fn untyped_values_convert_once_the_type_is_known() {
        let mut de = serde_json::Deserializer::from_str("[[1,2],[3]]");
        let loose = Untyped.deserialize(&mut de).unwrap();
        assert_eq!(from_loose(DType::I64, &loose).unwrap(), TensorData::I64(vec![1, 2, 3]));
        assert!(from_loose(DType::Bool, &loose).unwrap_err().contains("1 is not a value of type BOOL"));
    }
}
