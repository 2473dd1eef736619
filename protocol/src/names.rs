//! Names that arrive from the wire and end up in topics and file paths. They are validated newtypes so a
//! hostile id cannot traverse paths (`..`), inject MQTT wildcards (`+`, `#`) or extra topic levels (`/`).

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// The longest device id or model name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{kind} is empty")]
    Empty { kind: &'static str },
    #[error("{kind} is {len} bytes long; the limit is {MAX_NAME_LEN}")]
    TooLong { kind: &'static str, len: usize },
    #[error("{kind} {value:?} contains the forbidden character {ch:?}")]
    Forbidden { kind: &'static str, value: String, ch: char },
    #[error("{kind} {value:?} contains \"..\" (path traversal)")]
    DotDot { kind: &'static str, value: String },
    #[error("{kind} {value:?} contains a control character")]
    Control { kind: &'static str, value: String },
}

fn validate(kind: &'static str, value: &str) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if value.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong { kind, len: value.len() });
    }
    // `/` would add topic levels and path components, `+`/`#` are MQTT wildcards, `\` is a Windows path
    // separator, NUL ends C strings in the broker.
    if let Some(ch) = value.chars().find(|c| matches!(c, '/' | '+' | '#' | '\\' | '\0')) {
        return Err(NameError::Forbidden { kind, value: value.to_owned(), ch });
    }
    if value.chars().any(char::is_control) {
        return Err(NameError::Control { kind, value: value.to_owned() });
    }
    if value.contains("..") {
        return Err(NameError::DotDot { kind, value: value.to_owned() });
    }
    Ok(())
}

macro_rules! validated_name {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Result<Self, NameError> {
                let value = value.into();
                validate($kind, &value)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }

        // Decoding validates too: a name read from the wire is as untrusted as one typed by a user.
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

validated_name!(
    /// A device's identity: one MQTT topic level and one directory name.
    DeviceId,
    "device id"
);
validated_name!(
    /// A model's name (`digits`): shared by every version of the model.
    ModelName,
    "model name"
);

/// CPU architectures Outpost builds the agent for. Only append variants (postcard encodes the index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Arch {
    X86_64,
    Aarch64,
    Armv7,
}

impl Arch {
    pub const ALL: [Arch; 3] = [Arch::X86_64, Arch::Aarch64, Arch::Armv7];

    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
            Arch::Armv7 => "armv7",
        }
    }

    /// The architecture this code was compiled for, if Outpost supports it.
    pub fn current() -> Option<Arch> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Arch::X86_64),
            "aarch64" => Some(Arch::Aarch64),
            "arm" => Some(Arch::Armv7),
            _ => None,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "x86_64" | "amd64" => Ok(Arch::X86_64),
            "aarch64" | "arm64" => Ok(Arch::Aarch64),
            "armv7" | "arm" | "armhf" => Ok(Arch::Armv7),
            other => Err(format!("unknown architecture {other:?} (expected x86_64, aarch64 or armv7)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_are_accepted() {
        for ok in ["dev-0001", "edge.eu-west.17", "digits", "a", &"x".repeat(64)] {
            assert!(DeviceId::new(ok).is_ok(), "{ok}");
            assert!(ModelName::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn hostile_names_are_refused_with_the_reason() {
        type Check = fn(&NameError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("", |e| matches!(e, NameError::Empty { .. })),
            (&"x".repeat(65), |e| matches!(e, NameError::TooLong { len: 65, .. })),
            ("a/b", |e| matches!(e, NameError::Forbidden { ch: '/', .. })),
            ("a+b", |e| matches!(e, NameError::Forbidden { ch: '+', .. })),
            ("a#", |e| matches!(e, NameError::Forbidden { ch: '#', .. })),
            ("a\0b", |e| matches!(e, NameError::Forbidden { ch: '\0', .. })),
            ("..", |e| matches!(e, NameError::DotDot { .. })),
            ("x..y", |e| matches!(e, NameError::DotDot { .. })),
            ("tab\there", |e| matches!(e, NameError::Control { .. })),
        ];
        for (input, check) in cases {
            let err = DeviceId::new(*input).unwrap_err();
            assert!(check(&err), "{input:?} gave {err}");
        }
    }

    #[test]
    fn decoding_a_name_validates_it() {
        let bytes = postcard::to_allocvec(&"../../etc").unwrap();
        assert!(postcard::from_bytes::<ModelName>(&bytes).is_err());
        let bytes = postcard::to_allocvec(&"digits").unwrap();
        assert_eq!(postcard::from_bytes::<ModelName>(&bytes).unwrap().as_str(), "digits");
    }
}
