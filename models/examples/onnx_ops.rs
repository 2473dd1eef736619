//! Tries every case that `simulations/models/onnx_ops.py dump` wrote (one small model per ONNX operator case)
//! two ways: as tract reads ONNX (typed, decluttered) and as `outpost bundle create` converts it for devices
//! (NNEF with tract-core's operators only, loaded back). Writes DIR/results.tsv: case, typed (ok/err),
//! converted (ok/err), the conversion's refusal. `onnx_ops.py report` groups it by operator.
//!
//! `cargo run -p outpost-models --features onnx --example onnx_ops -- DIR`

use outpost_models::onnx;
use std::io::Write;

fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("usage: onnx_ops DIR"));
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .expect("DIR holds the dumped cases")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("model.onnx").is_file())
        .collect();
    cases.sort();
    let mut out = std::fs::File::create(dir.join("results.tsv")).expect("results.tsv");
    let (mut typed_ok, mut converted_ok) = (0, 0);
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(case.join("model.onnx")).unwrap();
        // Some cases make tract panic while reading; that is "tract does not read it", not a crash here.
        let typed = std::panic::catch_unwind(|| onnx::typed(&bytes))
            .unwrap_or_else(|_| Err(outpost_models::ModelError::Load("tract panicked reading it".into())));
        let (t, c, why) = match typed {
            Err(e) => ("err", "-", one_line(&e.to_string())),
            Ok(_) => match std::panic::catch_unwind(|| onnx::convert(&bytes)) {
                Ok(Ok(_)) => ("ok", "ok", String::new()),
                Ok(Err(e)) => ("ok", "err", one_line(&e.to_string())),
                Err(_) => ("ok", "err", "tract panicked converting it".into()),
            },
        };
        typed_ok += usize::from(t == "ok");
        converted_ok += usize::from(c == "ok");
        writeln!(out, "{name}\t{t}\t{c}\t{why}").unwrap();
    }
    println!("{} cases: tract reads {typed_ok}, of which {converted_ok} convert to NNEF", cases.len());
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\t'], " ").chars().take(300).collect()
}
