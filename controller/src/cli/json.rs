//! `-o json`: what a command prints for scripts. The shapes are the API's records (docs/cli-json.md lists
//! them per command), written the way the text output and the command line write them:
//!
//! - digests (`Digest`) as 64 lowercase hex digits, not arrays of 32 numbers;
//! - versions (`Version`) as `"2.0.0"`, not `{"major": 2, ...}`;
//! - architectures (`Arch`) as `--arch` takes them: `"x86_64"`, `"aarch64"`, `"armv7"`;
//! - wave sizes (`WaveSize`) as on the command line: `"10%"`, `"0.5%"`, or a device count `"5"`;
//! - wave numbers 1-based, as the text shows them: a rollout's `state.wave`, a member's `wave` and
//!   `told_in`, an audit entry's and an evidence's `wave`, `Advanced.to`.
//!
//! It is a serializer that writes a `serde_json::Value` like serde_json's own, except for those types,
//! which it knows by their names; everything else (enums as `"Variant"` or `{"Variant": ...}`, Unix
//! seconds, rates as fractions) is as the API has it. The API itself keeps its shapes: the console and
//! older scripts read them.

use serde::Serialize;
use serde::ser;
use serde_json::{Map, Value};

/// `value` as `-o json` prints it.
pub fn readable<T: Serialize + ?Sized>(value: &T) -> Value {
    value.serialize(Readable).expect("every value the CLI prints serialises")
}

/// Prints `value` as `-o json`, pretty.
pub fn print<T: Serialize + ?Sized>(value: &T) {
    println!("{}", serde_json::to_string_pretty(&readable(value)).expect("json"));
}

/// Fields holding a 0-based wave index, by (type, field): shown 1-based.
const WAVE_FIELDS: [(&str, &str); 6] = [
    ("RolloutState", "wave"),
    ("Member", "wave"),
    ("Member", "told_in"),
    ("AuditEntry", "wave"),
    ("Evidence", "wave"),
    ("Advanced", "to"),
];

fn one_based(ty: &str, field: &str, v: Value) -> Value {
    match v {
        Value::Number(n) if WAVE_FIELDS.contains(&(ty, field)) => {
            n.as_u64().map_or(Value::Number(n), |w| (w + 1).into())
        }
        v => v,
    }
}

/// `[2, 171, ...]` (32 bytes) as hex.
fn hex_of(v: &Value) -> Option<String> {
    let bytes: Option<Vec<u8>> = v.as_array()?.iter().map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok())).collect();
    bytes.map(hex::encode)
}

/// Hundredths of a percent (`Percent(1000)`) as `10%`, `0.5%`.
fn percent(hundredths: u64) -> String {
    match hundredths % 100 {
        0 => format!("{}%", hundredths / 100),
        r if r % 10 == 0 => format!("{}.{}%", hundredths / 100, r / 10),
        r => format!("{}.{r:02}%", hundredths / 100),
    }
}

#[derive(Debug)]
pub struct Error(String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

#[derive(Debug)]
struct Readable;

fn key_string(key: Value) -> Result<String, Error> {
    match key {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(Error(format!("a map key must be a string, not {other}"))),
    }
}

/// `serialize_bool`, `serialize_i8`, ...: each the value as serde_json has it.
macro_rules! scalars {
    ($($f:ident: $t:ty),*) => {
        $(fn $f(self, v: $t) -> Result<Value, Error> {
            Ok(v.into())
        })*
    };
}

impl ser::Serializer for Readable {
    type Ok = Value;
    type Error = Error;
    type SerializeSeq = Seq;
    type SerializeTuple = Seq;
    type SerializeTupleStruct = Seq;
    type SerializeTupleVariant = TupleVariant;
    type SerializeMap = MapOut;
    type SerializeStruct = Struct;
    type SerializeStructVariant = StructVariant;

    scalars!(serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_u8: u8, serialize_u16: u16, serialize_u32: u32, serialize_u64: u64);
    fn serialize_f32(self, v: f32) -> Result<Value, Error> {
        Ok(f64::from(v).into())
    }
    fn serialize_f64(self, v: f64) -> Result<Value, Error> {
        // NaN and infinities have no JSON form: null, as serde_json writes them.
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn serialize_char(self, v: char) -> Result<Value, Error> {
        Ok(v.to_string().into())
    }
    fn serialize_str(self, v: &str) -> Result<Value, Error> {
        Ok(v.into())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Value, Error> {
        Ok(v.iter().map(|b| Value::from(*b)).collect::<Vec<_>>().into())
    }
    fn serialize_none(self) -> Result<Value, Error> {
        Ok(Value::Null)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Value, Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<Value, Error> {
        Ok(Value::Null)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Value, Error> {
        Ok(Value::Null)
    }
    fn serialize_unit_variant(self, name: &'static str, _index: u32, variant: &'static str) -> Result<Value, Error> {
        // An architecture as `--arch` and the text write it: "x86_64", "aarch64", "armv7".
        Ok(if name == "Arch" { variant.to_lowercase().into() } else { variant.into() })
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, name: &'static str, value: &T) -> Result<Value, Error> {
        let inner = value.serialize(Readable)?;
        Ok(match name {
            "Digest" => hex_of(&inner).map_or(inner, Value::String),
            "Percent" => inner.as_u64().map_or(inner, |h| percent(h).into()),
            _ => inner,
        })
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Value, Error> {
        let inner = value.serialize(Readable)?;
        // A wave size reads as on the command line: "10%" (Percent is already a string) or "5".
        if name == "WaveSize" {
            return Ok(match inner {
                Value::Number(n) => n.to_string().into(),
                other => other,
            });
        }
        let mut m = Map::new();
        m.insert(variant.to_owned(), inner);
        Ok(Value::Object(m))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Seq, Error> {
        Ok(Seq(Vec::with_capacity(len.unwrap_or(0))))
    }
    fn serialize_tuple(self, len: usize) -> Result<Seq, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<Seq, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<TupleVariant, Error> {
        Ok(TupleVariant(variant, Vec::with_capacity(len)))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<MapOut, Error> {
        Ok(MapOut(Map::new(), None))
    }
    fn serialize_struct(self, name: &'static str, _len: usize) -> Result<Struct, Error> {
        Ok(Struct(name, Map::new()))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<StructVariant, Error> {
        Ok(StructVariant(variant, Map::new()))
    }
}

#[derive(Debug)]
pub struct Seq(Vec<Value>);

impl ser::SerializeSeq for Seq {
    type Ok = Value;
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.0.push(value.serialize(Readable)?);
        Ok(())
    }
    fn end(self) -> Result<Value, Error> {
        Ok(Value::Array(self.0))
    }
}

impl ser::SerializeTuple for Seq {
    type Ok = Value;
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<Value, Error> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleStruct for Seq {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<Value, Error> {
        ser::SerializeSeq::end(self)
    }
}

#[derive(Debug)]
pub struct TupleVariant(&'static str, Vec<Value>);

impl ser::SerializeTupleVariant for TupleVariant {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.1.push(value.serialize(Readable)?);
        Ok(())
    }
    fn end(self) -> Result<Value, Error> {
        let mut m = Map::new();
        m.insert(self.0.to_owned(), Value::Array(self.1));
        Ok(Value::Object(m))
    }
}

#[derive(Debug)]
pub struct MapOut(Map<String, Value>, Option<String>);

impl ser::SerializeMap for MapOut {
    type Ok = Value;
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        self.1 = Some(key_string(key.serialize(Readable)?)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let key = self.1.take().ok_or_else(|| Error("a map value without its key".into()))?;
        self.0.insert(key, value.serialize(Readable)?);
        Ok(())
    }
    fn end(self) -> Result<Value, Error> {
        Ok(Value::Object(self.0))
    }
}

#[derive(Debug)]
pub struct Struct(&'static str, Map<String, Value>);

impl ser::SerializeStruct for Struct {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<(), Error> {
        self.1.insert(key.to_owned(), one_based(self.0, key, value.serialize(Readable)?));
        Ok(())
    }
    fn end(self) -> Result<Value, Error> {
        let Struct(name, m) = self;
        if name == "Version"
            && let [Some(a), Some(b), Some(c)] = ["major", "minor", "patch"].map(|k| m.get(k).and_then(Value::as_u64))
        {
            return Ok(format!("{a}.{b}.{c}").into());
        }
        Ok(Value::Object(m))
    }
}

#[derive(Debug)]
pub struct StructVariant(&'static str, Map<String, Value>);

impl ser::SerializeStructVariant for StructVariant {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<(), Error> {
        self.1.insert(key.to_owned(), one_based(self.0, key, value.serialize(Readable)?));
        Ok(())
    }
    fn end(self) -> Result<Value, Error> {
        let mut m = Map::new();
        m.insert(self.0.to_owned(), Value::Object(self.1));
        Ok(Value::Object(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::{Decision, WaveSize};
    use outpost_protocol::{Digest, Version};

    #[test]
    fn digests_are_hex_versions_are_dotted_and_wave_sizes_read_as_typed() {
        assert_eq!(readable(&Digest([0xab; 32])), Value::from("ab".repeat(32)));
        assert_eq!(readable(&Version::new(2, 10, 0)), Value::from("2.10.0"));
        for arch in [outpost_protocol::Arch::X86_64, outpost_protocol::Arch::Aarch64, outpost_protocol::Arch::Armv7] {
            assert_eq!(readable(&arch), Value::from(arch.as_str()));
        }
        assert_eq!(readable(&Some(Version::new(1, 0, 0))), Value::from("1.0.0"));
        for (typed, want) in [("10%", "10%"), ("0.5%", "0.5%"), ("0.25%", "0.25%"), ("100%", "100%"), ("5", "5")] {
            assert_eq!(readable(&typed.parse::<WaveSize>().unwrap()), Value::from(want), "{typed}");
        }
        assert_eq!(readable(&Decision::Advanced { to: 1 }), serde_json::json!({"Advanced": {"to": 2}}));
        assert_eq!(readable(&Decision::Completed), Value::from("Completed"));
        // Anything else as serde_json writes it.
        let other = serde_json::json!({"a": [1, 2, {"b": null}], "c": 0.25, "d": "x"});
        assert_eq!(readable(&other), other);
    }

    #[test]
    fn a_rollout_reads_with_one_based_waves_hex_digests_and_dotted_versions() {
        let mut r = crate::rollout::Rollout::new(crate::rollout::testkit::spec(&["1", "50%", "100%"], 60)).unwrap();
        r.state.wave = 1;
        let v = readable(&r);
        assert_eq!(v["state"]["wave"], 2, "the second wave is wave 2, as status shows it");
        assert_eq!(v["spec"]["waves"][0]["size"], "1");
        assert_eq!(v["spec"]["waves"][1]["size"], "50%");
        let version = &v["spec"]["release"]["version"];
        assert!(version.as_str().is_some_and(|s| s.split('.').count() == 3), "{version}");
        let digest = v["spec"]["release"]["bundle"]["digest"].as_str().unwrap();
        assert!(digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit()), "{digest}");
        // The API's form is untouched by this.
        assert_eq!(serde_json::to_value(&r).unwrap()["state"]["wave"], 1);
    }
}
