//! The commit plumb is built from, for `plumb --version`: git's, or the
//! PLUMB_COMMIT a package build sets (a source tarball has no .git).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=PLUMB_COMMIT");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    let commit = std::env::var("PLUMB_COMMIT").ok().or_else(|| {
        let out = Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()?;
        let hash = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (out.status.success() && !hash.is_empty()).then_some(hash)
    });
    println!(
        "cargo:rustc-env=PLUMB_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
}
