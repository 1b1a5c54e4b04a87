//! Secrets an agent below admin must not reach, run through the real `governor` binary: a
//! credential created in another user's home while the agent runs, the credential files of
//! common tools, set-id files made with a creating syscall's mode, and secret-looking
//! environment variables.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use governor_tests::{require, scene, stderr, stdout};

fn must<T, E: std::fmt::Display>(result: Result<T, E>, what: &str) -> T {
    result.unwrap_or_else(|error| panic!("{what}: {error}"))
}

/// A user added to the passwd database for one test (home given, not created), removed when
/// dropped.
struct PasswdUser {
    name: String,
    uid: u32,
}

impl PasswdUser {
    fn add(home: &Path, index: usize) -> PasswdUser {
        let name = format!("govtest{}x{index}", std::process::id());
        // No group of its own (-N -g nogroup) and no home made by useradd: the test makes it.
        let added = must(
            Command::new("useradd")
                .args(["-M", "-N", "-g", "65534", "-s", "/usr/sbin/nologin", "-d"])
                .arg(home)
                .arg(&name)
                .output(),
            "useradd",
        );
        assert!(added.status.success(), "useradd {name}: {}", stderr(&added));
        let id = must(Command::new("id").args(["-u", &name]).output(), "id");
        let uid = must(stdout(&id).trim().parse::<u32>(), "uid of the new user");
        PasswdUser { name, uid }
    }
}

impl Drop for PasswdUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).output();
    }
}

/// Waits for `path` to appear (the agent saying it has started).
fn wait_for(path: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        assert!(Instant::now() < deadline, "{} did not appear", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Writes `text` to `path` (making its parents), owned by `uid`, mode 0644, its new parent
/// directories 0755, as that user's tools would.
fn write_as(uid: u32, home: &Path, path: &Path, text: &str) {
    let parent = path.parent().unwrap_or(home);
    must(fs::create_dir_all(parent), "mkdir");
    for dir in parent.ancestors().take_while(|dir| dir.starts_with(home) && *dir != home) {
        must(std::os::unix::fs::chown(dir, Some(uid), None), "chown");
        must(fs::set_permissions(dir, fs::Permissions::from_mode(0o755)), "chmod");
    }
    must(fs::write(path, text), "write");
    must(std::os::unix::fs::chown(path, Some(uid), None), "chown");
    must(fs::set_permissions(path, fs::Permissions::from_mode(0o644)), "chmod");
}

#[test]
fn a_secret_created_later_in_another_users_home_stays_unreadable() {
    require!("a_secret_created_later_in_another_users_home_stays_unreadable");
    let scene = scene!();
    // Two other users' homes, 0755 like useradd -m makes them. At launch `bare` holds only an
    // ordinary file (no ~/.aws, ~/.kube or ~/.config at all), `aws` also an empty ~/.aws.
    let mut homes = Vec::new();
    let mut users = Vec::new();
    for (index, name) in ["bare", "aws"].into_iter().enumerate() {
        let home = scene.root.join(name);
        must(fs::create_dir(&home), "mkdir");
        let user = PasswdUser::add(&home, index);
        must(std::os::unix::fs::chown(&home, Some(user.uid), None), "chown");
        must(fs::set_permissions(&home, fs::Permissions::from_mode(0o755)), "chmod");
        write_as(user.uid, &home, &home.join("projects/readme"), "public\n");
        homes.push(home);
        users.push(user);
    }
    let aws_dir = homes[1].join(".aws");
    must(fs::create_dir(&aws_dir), "mkdir");
    must(std::os::unix::fs::chown(&aws_dir, Some(users[1].uid), None), "chown");

    let later: Vec<(u32, &Path, PathBuf)> = vec![
        (users[0].uid, &homes[0], homes[0].join(".aws/credentials")),
        (users[0].uid, &homes[0], homes[0].join(".kube/config")),
        (users[0].uid, &homes[0], homes[0].join(".config/gh/hosts.yml")),
        (users[1].uid, &homes[1], homes[1].join(".aws/credentials")),
    ];
    let started = scene.workspace.join("started");
    let ready = scene.workspace.join("ready");
    let mut script = format!(
        "touch {started}; while [ ! -e {ready} ]; do sleep 0.01; done; {attempt} read {readme}",
        started = started.display(),
        ready = ready.display(),
        attempt = scene.attempt.display(),
        readme = homes[0].join("projects/readme").display(),
    );
    for (_, _, path) in &later {
        script.push_str(&format!("; {} read {}", scene.attempt.display(), path.display()));
    }
    let child = must(
        Command::new(governor_tests::governor_bin())
            .args(["run", "--trust", "high", "--workspace"])
            .arg(&scene.workspace)
            .args(["--", "sh", "-c", &script])
            .env("HOME", &scene.home)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn(),
        "governor",
    );
    wait_for(&started, Duration::from_secs(20));
    for (uid, home, path) in &later {
        write_as(*uid, home, path, "secret\n");
    }
    must(fs::write(&ready, ""), "write");
    let output = must(child.wait_with_output(), "governor");
    let lines: Vec<String> = stdout(&output).lines().map(str::to_owned).collect();
    // The rest of that home stays readable: the carve-out is exact.
    assert_eq!(lines, ["ok", "EACCES", "EACCES", "EACCES", "EACCES"], "{later:?}; stderr: {}", stderr(&output));
}
