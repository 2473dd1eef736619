//! The README's operator section is real output: its tables have the columns the CLI prints today.

use super::support::*;

/// Column names of a table's header line (columns are two or more spaces apart).
fn columns(header: &str) -> Vec<String> {
    header.split("  ").map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned).collect()
}

/// The first line after `$ outpost CMD` in the README's console block.
fn readme_header(readme: &str, cmd: &str) -> String {
    let at = readme.find(&format!("$ outpost {cmd}\n")).unwrap_or_else(|| panic!("README shows `outpost {cmd}`"));
    readme[at..].lines().nth(1).unwrap().to_owned()
}

#[test]
fn the_readme_operator_section_has_the_columns_the_cli_prints() {
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let section = &readme[readme.find("## Operating the fleet").expect("README has an operator section")..];
    let dir = tempdir("operator-readme");
    let (_broker, mqtt) = mosquitto(&dir);
    let ctl = Controller::with_broker(&dir, mqtt);
    for (cmd, args) in [
        ("devices list", &["devices", "list"][..]),
        ("rollout history", &["rollout", "history"][..]),
        ("audit --limit 2", &["audit", "--limit", "2"][..]),
    ] {
        let printed = ctl.run(args);
        let header = printed.lines().next().unwrap_or_default();
        assert_eq!(columns(&readme_header(section, cmd)), columns(header), "`outpost {cmd}` in the README");
    }
    let status = readme_header(section, "rollout status digits-2.1.0");
    assert!(status.starts_with("rollout   digits-2.1.0"), "{status}");
}
