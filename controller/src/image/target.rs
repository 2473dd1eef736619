//! The device targets an image can be built for, and the ELF header check that the agent binary given
//! really is for that target: a wrong binary would only show up on the device, as "exec format error"
//! at first boot, with no agent to report it.

use outpost_protocol::Arch;

/// A Rust target triple with an image builder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    X86_64Musl,
    Aarch64Musl,
    Armv7Gnueabihf,
}

/// What the ELF header of a binary for a target says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElfId {
    /// `EI_CLASS`: 1 = 32-bit, 2 = 64-bit.
    pub class: u8,
    /// `EI_DATA`: 1 = little-endian.
    pub data: u8,
    /// `e_machine`.
    pub machine: u16,
}

const EM_ARM: u16 = 40;
const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;

impl Target {
    pub const ALL: [Target; 3] = [Target::X86_64Musl, Target::Aarch64Musl, Target::Armv7Gnueabihf];

    pub fn parse(s: &str) -> Result<Target, String> {
        Target::ALL.into_iter().find(|t| t.triple() == s).ok_or_else(|| {
            let known: Vec<_> = Target::ALL.iter().map(|t| t.triple()).collect();
            format!("unknown target {s:?} (known: {})", known.join(", "))
        })
    }

    pub fn triple(self) -> &'static str {
        match self {
            Target::X86_64Musl => "x86_64-unknown-linux-musl",
            Target::Aarch64Musl => "aarch64-unknown-linux-musl",
            Target::Armv7Gnueabihf => "armv7-unknown-linux-gnueabihf",
        }
    }

    /// The architecture devices of this target report, which bundles are checked against.
    pub fn arch(self) -> Arch {
        match self {
            Target::X86_64Musl => Arch::X86_64,
            Target::Aarch64Musl => Arch::Aarch64,
            Target::Armv7Gnueabihf => Arch::Armv7,
        }
    }

    pub fn elf(self) -> ElfId {
        match self {
            Target::X86_64Musl => ElfId { class: 2, data: 1, machine: EM_X86_64 },
            Target::Aarch64Musl => ElfId { class: 2, data: 1, machine: EM_AARCH64 },
            Target::Armv7Gnueabihf => ElfId { class: 1, data: 1, machine: EM_ARM },
        }
    }
}

fn describe(id: ElfId) -> String {
    let machine = match id.machine {
        EM_ARM => "arm".to_owned(),
        EM_X86_64 => "x86_64".to_owned(),
        EM_AARCH64 => "aarch64".to_owned(),
        3 => "i386".to_owned(),
        8 => "mips".to_owned(),
        243 => "riscv".to_owned(),
        m => format!("e_machine {m}"),
    };
    let bits = if id.class == 2 { 64 } else { 32 };
    let endian = if id.data == 1 { "little-endian" } else { "big-endian" };
    format!("{bits}-bit {endian} {machine}")
}

/// Reads the identity of an ELF executable from its first bytes.
pub fn read_elf(head: &[u8]) -> Result<ElfId, String> {
    if head.len() < 20 || head[..4] != *b"\x7fELF" {
        return Err("not an ELF executable".into());
    }
    let (class, data) = (head[4], head[5]);
    if !matches!(class, 1 | 2) || !matches!(data, 1 | 2) {
        return Err(format!("corrupt ELF header (class {class}, data {data})"));
    }
    let u16_at = |i: usize| {
        if data == 1 { u16::from_le_bytes([head[i], head[i + 1]]) } else { u16::from_be_bytes([head[i], head[i + 1]]) }
    };
    let kind = u16_at(16);
    if kind != ET_EXEC && kind != ET_DYN {
        return Err(format!("an ELF file of type {kind}, not an executable"));
    }
    Ok(ElfId { class, data, machine: u16_at(18) })
}

/// Refuses a binary whose ELF header is not the target's.
pub fn check_binary(target: Target, head: &[u8]) -> Result<(), String> {
    let got = read_elf(head)?;
    let want = target.elf();
    if got != want {
        return Err(format!("a {} binary, but {} needs {}", describe(got), target.triple(), describe(want)));
    }
    Ok(())
}

/// The agent marks its binary with `\0outpost-agent-version=X.Y.Z\0` (agent/src/main.rs); the image
/// records that version and refuses binaries without it, which are not the Outpost agent.
pub fn agent_version(binary: &[u8]) -> Option<String> {
    const MARK: &[u8] = b"\0outpost-agent-version=";
    let at = binary.windows(MARK.len()).position(|w| w == MARK)? + MARK.len();
    let len = binary[at..].iter().take(32).position(|&b| b == 0)?;
    let v = std::str::from_utf8(&binary[at..at + len]).ok()?;
    v.parse::<outpost_protocol::Version>().ok().map(|_| v.to_owned())
}

/// A minimal ELF header for `id` followed by `tail`: for tests of the checks above and of image
/// building, which read nothing past the header and the version marker.
pub fn synthetic_elf(id: ElfId, tail: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = id.class;
    h[5] = id.data;
    h[6] = 1;
    h[16..18].copy_from_slice(&ET_DYN.to_le_bytes());
    h[18..20].copy_from_slice(&id.machine.to_le_bytes());
    h.extend_from_slice(tail);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_accepts_its_own_header_and_refuses_the_others() {
        for t in Target::ALL {
            assert_eq!(Target::parse(t.triple()), Ok(t));
            for other in Target::ALL {
                let r = check_binary(t, &synthetic_elf(other.elf(), b""));
                assert_eq!(r.is_ok(), t == other, "{t:?} given {other:?}: {r:?}");
            }
        }
        let err = check_binary(Target::Aarch64Musl, &synthetic_elf(Target::X86_64Musl.elf(), b"")).unwrap_err();
        assert_eq!(
            err,
            "a 64-bit little-endian x86_64 binary, but aarch64-unknown-linux-musl needs 64-bit little-endian aarch64"
        );
    }

    #[test]
    fn non_executables_are_refused() {
        assert!(check_binary(Target::X86_64Musl, b"#!/bin/sh\necho hi\n").unwrap_err().contains("not an ELF"));
        assert!(check_binary(Target::X86_64Musl, b"\x7fELF").unwrap_err().contains("not an ELF"));
        let mut object = synthetic_elf(Target::X86_64Musl.elf(), b"");
        object[16] = 1; // ET_REL: an object file
        assert!(check_binary(Target::X86_64Musl, &object).unwrap_err().contains("not an executable"));
        assert!(Target::parse("riscv64gc-unknown-linux-gnu").unwrap_err().contains("aarch64-unknown-linux-musl"));
    }

    #[test]
    fn the_agent_version_marker_is_found_and_checked() {
        assert_eq!(agent_version(b"xx\0outpost-agent-version=1.2.3\0yy").as_deref(), Some("1.2.3"));
        assert_eq!(agent_version(b"xx\0outpost-agent-version=1.2\0"), None);
        assert_eq!(agent_version(b"xx\0outpost-agent-version=1.2.3"), None);
        assert_eq!(agent_version(b"some other program"), None);
    }
}
