//! The versioned envelope every MQTT payload travels in: a pure function over bytes with a hard size
//! limit, checked before any allocation by a decoded length.
//!
//! ```text
//! 'O' 'P' | major version (u8) | flags (u8: bit 0 = zstd) | postcard(Message)
//! ```

use crate::limits::Limits;
use crate::messages::Message;
use std::io::Read;

pub const MAGIC: [u8; 2] = *b"OP";
/// The wire major version. A controller also decodes `MAJOR - 1` once there is a released one. 3: desired
/// states travel as the controller's signed director statements (`Message::SignedDesired`), which an agent
/// speaking 2 would drop; 2: a device runs a set of models (`Hello::running` is a list, desired states per
/// model, `Mode::Remove`). Neither 1 nor 2 was released.
pub const MAJOR: u8 = 3;
const FLAG_ZSTD: u8 = 1;
const HEADER: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message is {size} bytes; the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("message is {0} bytes, shorter than the 4-byte header")]
    Truncated(usize),
    #[error("not an Outpost message (bad magic)")]
    BadMagic,
    #[error("wire version {0} is not supported (this side speaks {MAJOR})")]
    UnsupportedVersion(u8),
    #[error("unknown flags {0:#04x}")]
    UnknownFlags(u8),
    #[error("compressed body: {0}")]
    Decompress(String),
    #[error("body: {0}")]
    Body(String),
}

/// Encodes without compression (small messages: hello, acks, desired states, chunks).
pub fn encode(msg: &Message) -> Vec<u8> {
    let mut out = vec![MAGIC[0], MAGIC[1], MAJOR, 0];
    postcard::to_io(msg, &mut out).expect("message encodes to memory");
    out
}

/// Encodes with the body zstd-compressed (telemetry batches: they compress well and cost cellular data).
pub fn encode_compressed(msg: &Message) -> Vec<u8> {
    let body = postcard::to_allocvec(msg).expect("message encodes");
    let mut out = vec![MAGIC[0], MAGIC[1], MAJOR, FLAG_ZSTD];
    out.extend_from_slice(&zstd::bulk::compress(&body, 3).expect("in-memory zstd"));
    out
}

/// Decodes one message. Sizes are bounded by `limits.max_message` before and after decompression.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Message, DecodeError> {
    if bytes.len() > limits.max_message {
        return Err(DecodeError::TooLarge { size: bytes.len(), limit: limits.max_message });
    }
    if bytes.len() < HEADER {
        return Err(DecodeError::Truncated(bytes.len()));
    }
    if bytes[..2] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    if bytes[2] != MAJOR {
        return Err(DecodeError::UnsupportedVersion(bytes[2]));
    }
    let body = &bytes[HEADER..];
    match bytes[3] {
        0 => postcard::from_bytes(body).map_err(|e| DecodeError::Body(e.to_string())),
        FLAG_ZSTD => {
            let dec = zstd::stream::Decoder::new(body).map_err(|e| DecodeError::Decompress(e.to_string()))?;
            // Capped: a small compressed message must not expand into gigabytes.
            let mut plain = Vec::new();
            dec.take(limits.max_message as u64 + 1)
                .read_to_end(&mut plain)
                .map_err(|e| DecodeError::Decompress(e.to_string()))?;
            if plain.len() > limits.max_message {
                return Err(DecodeError::TooLarge { size: plain.len(), limit: limits.max_message });
            }
            postcard::from_bytes(&plain).map_err(|e| DecodeError::Body(e.to_string()))
        }
        other => Err(DecodeError::UnknownFlags(other)),
    }
}
