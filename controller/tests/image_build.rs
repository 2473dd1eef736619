//! `outpost image build` as a device installer runs it: the image is read back from both of its forms
//! (the rootfs tar with the manifest's hashes, the ext4 image with debugfs), and every kind of bad input
//! is refused with one line before anything is written. A real aarch64 agent binary is used when
//! OUTPOST_AARCH64_AGENT names one (.ci/run's cross step builds it); the rest runs on a synthetic ELF.

#[path = "support/cli.rs"]
mod cli;

use cli::*;
use outpost_controller::image::ext4::find_tool;
use outpost_controller::image::manifest::{ImageManifest, sha256_hex};
use outpost_controller::image::target::{Target, synthetic_elf};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Keys, a trust policy, a digits bundle, a CA file and agent binaries, made with the release CLI.
struct Fixture {
    dir: PathBuf,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        let dir = tempdir(name);
        let f = Fixture { dir };
        for key in ["root", "release", "other-root"] {
            ok(&["keys", "gen", "--out", &f.p("keys"), "--name", key]);
        }
        ok(&["trust", "init", "--root-key", &f.p("keys/root.key"), "--release-pub", &f.p("keys/release.pub")]
            .into_iter()
            .chain(["--out", &f.p("trust.policy")])
            .collect::<Vec<_>>());
        let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../simulations/models/digits-v1.onnx");
        ok(&[
            "bundle",
            "create",
            "--model",
            model.to_str().unwrap(),
            "--name",
            "digits",
            "--version",
            "1.0.0",
            "--sequence",
            "1",
            "--key",
            &f.p("keys/release.key"),
            "--out",
            &f.p("digits-v1.obundle"),
        ]);
        // The builder checks the CA is PEM and passes it through; the agent's TLS tests cover real CAs.
        std::fs::write(f.dir.join("ca.pem"), "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").unwrap();
        let marker = b"\0outpost-agent-version=0.1.0\0";
        let filler: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
        std::fs::write(
            f.dir.join("agent-aarch64"),
            synthetic_elf(Target::Aarch64Musl.elf(), &[marker, &filler[..]].concat()),
        )
        .unwrap();
        std::fs::write(f.dir.join("agent-x86_64"), synthetic_elf(Target::X86_64Musl.elf(), marker)).unwrap();
        std::fs::write(f.dir.join("not-an-agent"), synthetic_elf(Target::Aarch64Musl.elf(), b"hello")).unwrap();
        f
    }

    fn p(&self, f: &str) -> String {
        self.dir.join(f).display().to_string()
    }

    /// The full command line of a good build; `change` swaps or drops flags for the bad-input cases.
    fn args(&self, out: &str) -> Vec<String> {
        [
            ["image", "build", "--target", "aarch64-unknown-linux-musl"].map(String::from).to_vec(),
            vec!["--agent".into(), self.p("agent-aarch64")],
            vec!["--controller".into(), "mqtts://fleet.example.com:8883".into()],
            vec!["--ca".into(), self.p("ca.pem")],
            vec!["--trust".into(), self.p("trust.policy")],
            vec!["--root-pub".into(), self.p("keys/root.pub")],
            vec!["--enroll-token".into(), "tok-3f9a1c".into()],
            vec!["--bundle".into(), self.p("digits-v1.obundle")],
            vec!["--labels".into(), "site=berlin,line=3".into()],
            vec!["--data-size".into(), "32M".into()],
            vec!["--out".into(), out.into()],
        ]
        .concat()
    }
}

fn build(args: &[String]) -> Output {
    outpost(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The rootfs archive's regular files (path → bytes, mode), directories and symlinks, all owned by root.
struct Unpacked {
    files: BTreeMap<String, (Vec<u8>, u32)>,
    dirs: Vec<String>,
    links: BTreeMap<String, String>,
}

fn unpack(path: &Path) -> Unpacked {
    // Capped like every decompression here: the archive is ours, but a bug must not fill the disk.
    let dec = zstd::stream::read::Decoder::new(std::fs::File::open(path).unwrap()).unwrap().take(256 << 20);
    let mut archive = tar::Archive::new(dec);
    let mut u = Unpacked { files: BTreeMap::new(), dirs: vec![], links: BTreeMap::new() };
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0), "owner of {:?}", e.path());
        let name = e.path().unwrap().display().to_string();
        // Relative in the archive (unpacked with `tar -C / -x`), absolute on the device.
        assert!(!name.starts_with('/') && !name.contains(".."), "{name}");
        let path = format!("/{}", name.trim_start_matches("./").trim_end_matches('/'));
        match h.entry_type() {
            tar::EntryType::Directory => u.dirs.push(path),
            tar::EntryType::Symlink => {
                u.links.insert(path, e.link_name().unwrap().unwrap().display().to_string());
            }
            tar::EntryType::Regular => {
                let mut bytes = Vec::new();
                e.read_to_end(&mut bytes).unwrap();
                u.files.insert(path, (bytes, h.mode().unwrap()));
            }
            other => panic!("unexpected {other:?} entry {name}"),
        }
    }
    u
}

fn debugfs(image: &Path, request: &str) -> String {
    let out = Command::new(find_tool("debugfs").unwrap()).args(["-R", request]).arg(image).output().unwrap();
    assert!(out.status.success(), "debugfs {request}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn debugfs_dump(image: &Path, path: &str, to: &Path) -> Vec<u8> {
    debugfs(image, &format!("dump {path} {}", to.display()));
    std::fs::read(to).unwrap_or_else(|e| panic!("debugfs dump {path}: {e}"))
}

/// Checks an image directory against its manifest, both images against each other; returns the manifest.
fn read_back(out: &Path, scratch: &Path) -> (ImageManifest, Unpacked) {
    let m: ImageManifest = serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let names: Vec<&str> = m.images.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(names, ["rootfs.tar.zst", "outpost-data.ext4"]);
    for f in &m.images {
        let bytes = std::fs::read(out.join(&f.path)).unwrap();
        assert_eq!((bytes.len() as u64, sha256_hex(&bytes)), (f.size, f.sha256.clone()), "{}", f.path);
    }
    let tree = unpack(&out.join("rootfs.tar.zst"));
    // The manifest lists exactly the archive's files, with their hashes, sizes and modes.
    let listed: BTreeMap<&str, _> = m.files.iter().map(|f| (f.path.as_str(), f)).collect();
    assert_eq!(listed.keys().copied().collect::<Vec<_>>(), tree.files.keys().map(String::as_str).collect::<Vec<_>>());
    for (path, (bytes, mode)) in &tree.files {
        let f = listed[path.as_str()];
        assert_eq!((f.size, &f.sha256), (bytes.len() as u64, &sha256_hex(bytes)), "{path}");
        assert_eq!(f.mode.as_deref(), Some(format!("{mode:04o}").as_str()), "{path}");
    }
    // The ext4 image holds the same tree: every file byte for byte, owned by root, same modes.
    let ext4 = out.join("outpost-data.ext4");
    for (i, (path, (bytes, mode))) in tree.files.iter().enumerate() {
        let got = debugfs_dump(&ext4, path, &scratch.join(format!("dump-{i}")));
        assert!(got == *bytes, "{path} differs between the tar and the ext4 image");
        let stat = debugfs(&ext4, &format!("stat {path}"));
        assert!(stat.contains(&format!("Mode:  {mode:04o}")), "{path}: {stat}");
        assert!(stat.contains("User:     0   Group:     0"), "{path}: {stat}");
    }
    let listing = debugfs(&ext4, "ls -l /var/lib");
    assert!(listing.lines().any(|l| l.ends_with(" outpost") && l.contains("40700")), "{listing}");
    let data_dir = debugfs(&ext4, "ls -l /var/lib/outpost");
    let names: Vec<&str> = data_dir.lines().filter_map(|l| l.split_whitespace().last()).collect();
    assert_eq!(names, [".", ".."], "the data directory starts empty: {data_dir}");
    let link = debugfs(&ext4, "stat /etc/systemd/system/multi-user.target.wants/outpost-agent.service");
    assert!(link.contains("Fast link dest: \"/usr/lib/systemd/system/outpost-agent.service\""), "{link}");
    (m, tree)
}

#[test]
fn an_aarch64_image_holds_the_agent_its_config_trust_and_first_bundle_in_both_forms() {
    let f = Fixture::new("read-back");
    let out = f.p("image");
    let stdout = build(&f.args(&out));
    assert!(stdout.status.success(), "{}", String::from_utf8_lossy(&stdout.stderr));
    let (m, tree) = read_back(Path::new(&out), &f.dir);

    assert_eq!(
        (m.target.as_str(), m.arch.as_str(), m.agent_version.as_str()),
        ("aarch64-unknown-linux-musl", "aarch64", "0.1.0")
    );
    assert_eq!(m.controller, "mqtts://fleet.example.com:8883");
    assert_eq!(m.labels, BTreeMap::from([("line".into(), "3".into()), ("site".into(), "berlin".into())]));
    let first = m.first_bundle.as_ref().expect("first bundle listed");
    assert_eq!(
        (first.model.as_str(), first.version.as_str(), first.path.as_str()),
        ("digits", "1.0.0", "/usr/share/outpost/first.obundle")
    );
    assert_eq!(m.data_size, 32 << 20);
    assert_eq!(std::fs::metadata(f.dir.join("image/outpost-data.ext4")).unwrap().len(), 32 << 20);

    let file = |p: &str| tree.files.get(p).unwrap_or_else(|| panic!("{p} missing")).clone();
    let read = |p: &str| std::fs::read(f.dir.join(p)).unwrap();
    assert_eq!(file("/usr/bin/outpost-agent"), (read("agent-aarch64"), 0o755));
    assert_eq!(file("/etc/outpost/trust.policy"), (read("trust.policy"), 0o644));
    assert_eq!(file("/etc/outpost/root.pub"), (read("keys/root.pub"), 0o644));
    assert_eq!(file("/etc/outpost/ca.pem"), (read("ca.pem"), 0o644));
    assert_eq!(file("/usr/share/outpost/first.obundle"), (read("digits-v1.obundle"), 0o644));
    assert_eq!(file("/etc/outpost/enroll-token"), (b"tok-3f9a1c\n".to_vec(), 0o600));
    let config: toml::Value = toml::from_str(std::str::from_utf8(&file("/etc/outpost/agent.toml").0).unwrap()).unwrap();
    assert_eq!(config["link"]["broker"].as_str(), Some("mqtts://fleet.example.com:8883"));
    assert_eq!(config["link"]["ca"].as_str(), Some("/etc/outpost/ca.pem"));
    assert_eq!(config["link"]["enroll_token"].as_str(), Some("/etc/outpost/enroll-token"));
    assert_eq!(config["link"]["labels"]["site"].as_str(), Some("berlin"));
    assert_eq!(config["trust"]["policy"].as_str(), Some("/etc/outpost/trust.policy"));
    assert_eq!(config["data_dir"].as_str(), Some("/var/lib/outpost"));
    let unit = String::from_utf8(file("/usr/lib/systemd/system/outpost-agent.service").0).unwrap();
    assert!(
        unit.contains("\nType=notify\n") && unit.contains("--if-no-model /usr/share/outpost/first.obundle"),
        "{unit}"
    );
    assert!(tree.dirs.contains(&"/var/lib/outpost".to_owned()), "{:?}", tree.dirs);
    assert_eq!(
        tree.links["/etc/systemd/system/multi-user.target.wants/outpost-agent.service"],
        "/usr/lib/systemd/system/outpost-agent.service"
    );

    // The same inputs at the same time give the same archive, byte for byte.
    let again = f.p("image-again");
    let args = f.args(&again);
    let first_tar = read("image/rootfs.tar.zst");
    let rebuilt = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(&args)
        .env("SOURCE_DATE_EPOCH", m.created.to_string())
        .output()
        .unwrap();
    assert!(rebuilt.status.success(), "{}", String::from_utf8_lossy(&rebuilt.stderr));
    assert!(read("image-again/rootfs.tar.zst") == first_tar, "rootfs.tar.zst is not reproducible");
    std::fs::remove_dir_all(&f.dir).unwrap();
}

#[test]
fn bad_input_is_refused_with_one_line_before_anything_is_written() {
    let f = Fixture::new("refusals");
    let out = f.p("image");
    let set = |flag: &str, value: &str| -> Vec<String> {
        let mut a = f.args(&out);
        let i = a.iter().position(|x| x == flag).unwrap();
        a[i + 1] = value.to_owned();
        a
    };
    let drop = |flag: &str| -> Vec<String> {
        let mut a = f.args(&out);
        let i = a.iter().position(|x| x == flag).unwrap();
        a.drain(i..i + 2);
        a
    };
    // A policy signed by a root the devices do not pin, and a bundle changed after signing.
    ok(&[
        "trust",
        "init",
        "--root-key",
        &f.p("keys/other-root.key"),
        "--release-pub",
        &f.p("keys/release.pub"),
        "--out",
        &f.p("foreign.policy"),
    ]);
    let mut tampered = std::fs::read(f.dir.join("digits-v1.obundle")).unwrap();
    let n = tampered.len();
    tampered[n - 10] ^= 1;
    std::fs::write(f.dir.join("tampered.obundle"), tampered).unwrap();
    std::fs::write(f.dir.join("not-a-key.pub"), "hello").unwrap();
    std::fs::write(f.dir.join("not-a-cert.pem"), "-----BEGIN PUBLIC KEY-----\nMCow\n-----END PUBLIC KEY-----\n")
        .unwrap();
    std::fs::write(f.dir.join("script"), "#!/bin/sh\n").unwrap();

    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        ("a missing agent binary", set("--agent", &f.p("nope")), "agent binary"),
        (
            "an x86_64 binary for aarch64",
            set("--agent", &f.p("agent-x86_64")),
            "x86_64 binary, but aarch64-unknown-linux-musl needs",
        ),
        ("a script, not a binary", set("--agent", &f.p("script")), "not an ELF executable"),
        ("an ELF that is not the agent", set("--agent", &f.p("not-an-agent")), "not an outpost-agent binary"),
        ("an unknown target", set("--target", "mips-unknown-linux-musl"), "unknown target"),
        ("an unreadable root key", set("--root-pub", &f.p("keys/missing.pub")), "missing.pub"),
        ("a root key that is not PEM", set("--root-pub", &f.p("not-a-key.pub")), "not-a-key.pub"),
        ("a policy not signed by the root", set("--trust", &f.p("foreign.policy")), "policy_not_signed_by_root"),
        ("an unreadable CA", set("--ca", &f.p("missing.pem")), "missing.pem"),
        ("a CA that is not a certificate", set("--ca", &f.p("not-a-cert.pem")), "no PEM certificate"),
        ("mqtts without a CA", drop("--ca"), "mqtts:// needs --ca"),
        ("an https URL", set("--controller", "https://fleet:8883"), "must start with mqtts://"),
        ("a URL with a path", set("--controller", "mqtts://fleet:8883/x"), "port must be"),
        ("a label without a value", set("--labels", "site"), "not key=value"),
        ("a label given twice", set("--labels", "a=1,a=2"), "given twice"),
        ("a data partition too small", set("--data-size", "1M"), "too small"),
        ("a size without meaning", set("--data-size", "lots"), "size \"lots\""),
        ("an empty enrollment token", set("--enroll-token", ""), "enrollment token"),
        ("a tampered first bundle", set("--bundle", &f.p("tampered.obundle")), "payload_digest_mismatch"),
        ("a missing first bundle", set("--bundle", &f.p("missing.obundle")), "missing.obundle"),
    ];
    for (what, args, expect) in cases {
        let o = build(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{what}: {err}");
        assert!(err.contains(expect), "{what}: expected {expect:?} in {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{what}: one line, got {err}");
        assert!(!Path::new(&out).exists(), "{what}: wrote {out}");
    }
    std::fs::remove_dir_all(&f.dir).unwrap();
}

/// With a real cross-built agent (OUTPOST_AARCH64_AGENT, set by .ci/run's cross step): the version is
/// read from the binary and the default 64 MiB partition fits it.
#[test]
fn a_real_aarch64_agent_builds_into_an_image() {
    let Some(agent) = std::env::var_os("OUTPOST_AARCH64_AGENT") else {
        eprintln!("OUTPOST_AARCH64_AGENT not set: the cross step of .ci/run runs this with a real binary");
        return;
    };
    let f = Fixture::new("real-agent");
    let out = f.p("image");
    let mut args = f.args(&out);
    let i = args.iter().position(|x| x == "--agent").unwrap();
    args[i + 1] = agent.to_string_lossy().into_owned();
    let i = args.iter().position(|x| x == "--data-size").unwrap();
    args.drain(i..i + 2);
    let o = build(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (m, tree) = read_back(Path::new(&out), &f.dir);
    assert_eq!(m.agent_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(m.data_size, 64 << 20);
    assert_eq!(tree.files["/usr/bin/outpost-agent"].0, std::fs::read(&agent).unwrap());
    std::fs::remove_dir_all(&f.dir).unwrap();
}
