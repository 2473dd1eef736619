//! The `outpost` binary run as its users run it, and a scratch directory, for the CLI tests
//! (`#[path = "support/cli.rs"] mod cli;`).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// `outpost ARGS`, whatever its outcome.
pub fn outpost(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_outpost")).args(args).output().expect("run outpost")
}

/// `outpost ARGS`, which must succeed; its standard output.
pub fn ok(args: &[&str]) -> String {
    let out = outpost(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "outpost {args:?} failed: {}{stdout}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// `outpost ARGS`, which must fail; its exit code and standard error.
pub fn fails(args: &[&str]) -> (i32, String) {
    let out = outpost(args);
    assert!(!out.status.success(), "outpost {args:?} should fail but printed {}", String::from_utf8_lossy(&out.stdout));
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A fresh, empty `outpost-NAME-PID` in the system's temporary directory.
pub fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("outpost-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
