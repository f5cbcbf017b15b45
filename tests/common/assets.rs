//! Fetched assets and the Python reference interpreter, for tests that compare against them.
//! Missing ones skip the test, except with CI=true, where they fail it.
#![allow(dead_code)] // each test crate uses its own part

use std::path::PathBuf;
use std::process::Command;

/// Panics under CI=true; otherwise says why the test is skipped.
pub fn skip_or_fail(msg: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but {msg}");
    }
    eprintln!("skipping: {msg}");
}

/// `$SPECTUNE_CACHE`, else ~/.cache/spectune (where scripts/fetch-assets.sh puts them).
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("SPECTUNE_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/spectune"),
    }
}

/// A fetched file, by its path under the cache.
pub fn cached(relative: &str) -> Option<PathBuf> {
    let path = cache_dir().join(relative);
    if path.is_file() {
        return Some(path);
    }
    skip_or_fail(&format!(
        "{} is missing; run scripts/fetch-assets.sh",
        path.display()
    ));
    None
}

/// `$SPECTUNE_PYTHON`, else the repo's .venv python, if it can run `imports`.
pub fn python(imports: &str) -> Option<String> {
    let python = std::env::var("SPECTUNE_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").into());
    match Command::new(&python).args(["-c", imports]).output() {
        Ok(out) if out.status.success() => Some(python),
        other => {
            let problem = match other {
                Ok(out) => String::from_utf8_lossy(&out.stderr)
                    .trim()
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .to_string(),
                Err(e) => e.to_string(),
            };
            skip_or_fail(&format!(
                "{python} cannot run `{imports}` ({problem}); run scripts/setup.sh"
            ));
            None
        }
    }
}

/// Runs a script of tests/python with `args`; its stdout parsed as JSON.
pub fn run_python(python: &str, script: &str, args: &[String]) -> serde_json::Value {
    let path = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(python).arg(&path).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
