//! Shared helpers for the integration tests: where the golden etcd vectors live.
#![allow(dead_code)]

use std::path::PathBuf;

/// The etcd 3.4.23 golden vectors (`../shared/vectors/etcd-3.4.23` beside the checkout, or
/// `$RAFTHTTP_VECTORS`). Returns `None` (and says so) when they are absent outside CI; in
/// CI (`CI=true`) their absence fails the test.
pub fn vectors_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("RAFTHTTP_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors/etcd-3.4.23")
        });
    if dir.join("manifest.json").is_file() {
        return Some(dir);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "golden vectors not found at {} (CI must have them)",
            dir.display()
        );
    }
    eprintln!("SKIPPED: golden vectors not found at {}", dir.display());
    None
}

/// Every file in `dir/sub` whose name ends with `suffix`, sorted.
pub fn files(dir: &std::path::Path, sub: &str, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join(sub))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().ends_with(suffix))
        .collect();
    v.sort();
    v
}
