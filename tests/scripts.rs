//! The scripts of a fresh machine under `sudo`: root has no cargo (sudo
//! drops ~/.cargo/bin from PATH), so the toolchain of the user who called
//! sudo builds, as that user; one older than Cargo.toml's rust-version is
//! refused with a message that names both. The user is made for the test
//! (with a stand-in cargo that says who ran it) and removed after.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct User {
    name: String,
    home: PathBuf,
}

impl User {
    fn new(tag: &str) -> User {
        let name = format!("pt{}{tag}", std::process::id() % 100000);
        // Under /tmp, which every user can reach.
        let home = std::env::temp_dir().join(&name);
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(home.join(".cargo/bin")).unwrap();
        let ok = Command::new("useradd")
            .args(["--no-create-home", "--home-dir"])
            .arg(&home)
            .args(["--shell", "/bin/sh", &name])
            .status()
            .unwrap();
        assert!(ok.success(), "useradd {name}");
        let user = User { name, home };
        let _ = Command::new("chown")
            .arg("-R")
            .arg(&user.name)
            .arg(&user.home)
            .status();
        user
    }

    /// A cargo that reports `version`, says who ran it, and builds nothing.
    fn cargo(&self, version: &str) {
        let path = self.home.join(".cargo/bin/cargo");
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\nid -un >> \"$HOME/ran-as\"\ncase \"$1\" in\n\
                 --version) echo \"cargo {version} (stand-in)\" ;;\n\
                 -vV) echo \"host: x86_64-unknown-linux-gnu\" ;;\nesac\n"
            ),
        )
        .unwrap();
        let ok = Command::new("chmod")
            .arg("755")
            .arg(&path)
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// `scripts/build` as root under sudo: no cargo on PATH, SUDO_USER set.
    fn build(&self) -> Output {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        Command::new(repo.join("scripts/build"))
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("SUDO_USER", &self.name)
            .current_dir(repo)
            .output()
            .unwrap()
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).status();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

#[test]
fn under_sudo_the_callers_toolchain_builds_as_the_caller() {
    let user = User::new("rb");
    user.cargo("1.95.0");
    let out = user.build();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout
            .trim()
            .ends_with("target/x86_64-unknown-linux-gnu/release/plumb"),
        "{stdout}"
    );
    let ran = std::fs::read_to_string(user.home.join("ran-as")).unwrap();
    assert!(
        ran.lines().all(|who| who == user.name) && ran.lines().count() >= 3,
        "cargo ran as {ran:?}, not only as {}",
        user.name
    );
}

#[test]
fn a_toolchain_older_than_the_minimum_is_refused_by_name() {
    let user = User::new("ro");
    user.cargo("1.80.0");
    let out = user.build();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let minimum = include_str!("../Cargo.toml")
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .unwrap()
        .trim_end_matches('"');
    assert!(err.contains(minimum) && err.contains("1.80.0"), "{err}");
}
