//! `outpost-data.ext4`: the image tree as an ext4 filesystem image, made without root or a loop mount:
//! the tree is staged in a scratch directory, `mke2fs -d` copies it into a fresh filesystem, and
//! `debugfs -w` sets every inode's owner to root (the staged files belong to whoever ran the build).

use super::plan::{Entry, Node};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    #[error("{tool} not found (install e2fsprogs, which has mke2fs and debugfs)")]
    MissingTool { tool: &'static str },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{tool} failed: {message}")]
    Tool { tool: &'static str, message: String },
}

/// e2fsprogs lives in /sbin on Debian, which is not on an ordinary user's PATH.
pub fn find_tool(tool: &'static str) -> Result<PathBuf, Ext4Error> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .ok_or(Ext4Error::MissingTool { tool })
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Ext4Error + '_ {
    move |source| Ext4Error::Io { path: path.to_owned(), source }
}

/// Copies `tree` under `root` (which must exist), with the tree's permissions.
fn stage(tree: &[Entry], root: &Path) -> Result<(), Ext4Error> {
    use std::os::unix::fs::PermissionsExt;
    for e in tree {
        let p = root.join(e.path.trim_start_matches('/'));
        match &e.node {
            Node::Dir => std::fs::create_dir_all(&p).map_err(io(&p))?,
            Node::File(bytes) => std::fs::write(&p, bytes).map_err(io(&p))?,
            Node::Symlink(target) => std::os::unix::fs::symlink(target, &p).map_err(io(&p))?,
        }
        if !matches!(e.node, Node::Symlink(_)) {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(e.mode)).map_err(io(&p))?;
        }
    }
    Ok(())
}

fn run(tool: &'static str, cmd: &mut Command) -> Result<String, Ext4Error> {
    let out = cmd.output().map_err(|e| Ext4Error::Tool { tool, message: e.to_string() })?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output").trim().to_owned();
        return Err(Ext4Error::Tool { tool, message: format!("{} ({last})", out.status) });
    }
    Ok(text)
}

/// Writes an ext4 image of `size` bytes holding `tree` to `out`, using `scratch` (created and removed
/// here) for staging.
pub fn write(tree: &[Entry], size: u64, label: &str, scratch: &Path, out: &Path) -> Result<(), Ext4Error> {
    let mke2fs = find_tool("mke2fs")?;
    let debugfs = find_tool("debugfs")?;
    let _ = std::fs::remove_dir_all(scratch);
    let root = scratch.join("root");
    std::fs::create_dir_all(&root).map_err(io(&root))?;
    let result = (|| {
        stage(tree, &root)?;
        let _ = std::fs::remove_file(out);
        let blocks = size / 4096;
        run(
            "mke2fs",
            Command::new(&mke2fs)
                .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-L", label, "-E", "root_owner=0:0", "-d"])
                .arg(&root)
                .arg(out)
                .arg(blocks.to_string()),
        )?;
        let mut script = String::new();
        for e in tree {
            script += &format!("sif {0} uid 0\nsif {0} gid 0\n", e.path);
        }
        let script_path = scratch.join("chown.debugfs");
        std::fs::write(&script_path, script).map_err(io(&script_path))?;
        let said = run("debugfs", Command::new(&debugfs).arg("-w").arg("-f").arg(&script_path).arg(out))?;
        // debugfs reports a bad command on stderr and still exits 0.
        if let Some(l) = said.lines().find(|l| l.contains("not found") || l.contains("Couldn't")) {
            return Err(Ext4Error::Tool { tool: "debugfs", message: l.trim().to_owned() });
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(scratch);
    result
}
