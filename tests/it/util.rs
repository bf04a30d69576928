//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The repository root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A path under the repository root.
pub fn repo(rel: &str) -> PathBuf {
    root().join(rel)
}

/// Runs the binary with `args` in the repository root and returns its output.
pub fn smd(args: &[&str]) -> Output {
    smd_env(args, &[])
}

/// [`smd`] with extra environment variables.
pub fn smd_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_smd-onnx"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(root())
        .output()
        .expect("run smd-onnx")
}

/// `o`, after checking that its command succeeded (its stderr in the message if not).
#[track_caller]
pub fn ok(o: Output) -> Output {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// The JSON object a successful command printed on stdout.
pub fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON object")
}

/// Exit code 2, exactly one stderr line `error: ...` containing every `needle`, no panic, and
/// nothing on stdout. Returns the line.
#[track_caller]
pub fn assert_one_line_error(out: &Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    assert!(err.starts_with("error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in error: {err}");
    }
    assert!(out.stdout.is_empty(), "no partial output");
    err
}

/// A path as `&str` (the tests' temporary paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Every entry under `dir` (hidden ones too), relative, sorted; empty when `dir` is absent.
pub fn entries(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if p.is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut v = Vec::new();
    walk(dir, dir, &mut v);
    v.sort();
    v
}

/// A hidden temporary file of the atomic writer (`.<name>.<random>.tmp`), given as a name or
/// as a path relative to the output folder (as [`entries`] lists them).
pub fn is_temp(entry: &str) -> bool {
    let name = Path::new(entry)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(entry);
    name.starts_with('.') && name.ends_with(".tmp")
}
