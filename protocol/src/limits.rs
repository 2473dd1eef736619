//! Every size an attacker controls is bounded here, in one place (tough's `Limits`). Decoders and the
//! verifier take a `&Limits`; nothing allocates by a length read from the wire before checking it.

/// Bounds on untrusted input. The defaults suit models up to a few hundred MB on 256 MB+ devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest encoded wire message (one MQTT payload), after decompression. Must not exceed the MQTT
    /// maximum packet size configured on both sides. Default 1 MiB: a 256 KiB chunk plus headroom.
    pub max_message: usize,
    /// Largest signed manifest. Default 1 MiB; real manifests are a few KB (names, shapes, digests, the
    /// reference profile), because self-test vectors travel in their own section.
    pub max_manifest: usize,
    /// Most signatures on one manifest or trust policy (an attacker could otherwise make the verifier
    /// check thousands). Default 32.
    pub max_signatures: usize,
    /// Largest trust policy file. Default 64 KiB.
    pub max_policy: usize,
    /// Largest compressed payload, i.e. bytes fetched per update. Default 512 MiB.
    pub max_payload: u64,
    /// Largest model after decompression. Default 1 GiB.
    pub max_model: u64,
    /// Largest bundle chunk on the wire. Default 256 KiB.
    pub max_chunk: usize,
    /// Most chunks per bundle. Default 4096 (1 GiB at 256 KiB).
    pub max_chunks: u32,
    /// Most root documents in one trust update (root rotations a device can walk at once; each is at most
    /// `max_policy` bytes and the whole message at most `max_message`). Default 64.
    pub max_root_chain: usize,
    /// Largest self-test section of a bundle (inputs and expected outputs, raw). Default 64 MiB: four
    /// vectors of a 640×640×3 FP32 detector with its outputs fit several times over.
    pub max_selftest: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message: 1 << 20,
            max_manifest: 1 << 20,
            max_signatures: 32,
            max_policy: 64 << 10,
            max_payload: 512 << 20,
            max_model: 1 << 30,
            max_chunk: 256 << 10,
            max_chunks: 4096,
            max_root_chain: 64,
            max_selftest: 64 << 20,
        }
    }
}

impl Limits {
    /// The largest encoded signature list: one encoded signature is 74 bytes (8-byte key id, length
    /// byte, 64 signature bytes, count prefix amortised), so 80 per signature plus a varint is ample.
    pub fn max_signature_bytes(&self) -> usize {
        self.max_signatures * 80 + 8
    }

    /// The largest `.obundle` file these limits admit (header + manifest + signatures + payload + self-test
    /// section).
    pub fn max_bundle(&self) -> u64 {
        let sigs = self.max_signature_bytes() as u64;
        self.max_payload + self.max_selftest + self.max_manifest as u64 + sigs + 64
    }
}
