//! Harness for the end-to-end tests: the real `governor` binary, a scratch machine layout
//! (a fake home with secrets, a workspace, a directory outside both) and the `attempt` helper
//! copied into the workspace so that every ring may execute it.

use std::{
    ffi::OsStr,
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// The governor binary under test: `GOVERNOR_BIN`, else the workspace's debug build.
pub fn governor_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("GOVERNOR_BIN") {
        return PathBuf::from(bin);
    }
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/governor");
    assert!(bin.exists(), "{} is missing: build it first (`cargo xtask test` does)", bin.display());
    bin
}

/// Whether this process can run governor for real (root: cgroups, setuid, /etc/shadow). When
/// it cannot, prints why the calling test is skipped.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!(
            "skipping {test}: needs root (cgroup creation, user switching); run through `cargo xtask test` as root"
        );
        return false;
    }
    true
}

/// The running kernel's Landlock ABI (0 when Landlock is off).
pub fn landlock_abi() -> i32 {
    // SAFETY: LANDLOCK_CREATE_RULESET_VERSION only returns the version.
    let abi = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, std::ptr::null::<u8>(), 0usize, 1u32) };
    i32::try_from(abi).unwrap_or(0).max(0)
}

/// Like [`privileged`], and also requires Landlock ABI `abi` (6 brings the scopes every ring
/// below admin uses).
pub fn kernel_ready(test: &str, abi: i32) -> bool {
    if !privileged(test) {
        return false;
    }
    let have = landlock_abi();
    if have < abi {
        println!("skipping {test}: needs Landlock ABI {abi}, this kernel has {have}");
        return false;
    }
    true
}

/// A [`Scene`] with this test crate's `attempt` helper (usable in integration tests, where
/// cargo sets `CARGO_BIN_EXE_attempt`).
#[macro_export]
macro_rules! scene {
    () => {
        $crate::Scene::new(env!("CARGO_BIN_EXE_attempt"))
    };
}

/// Returns from the calling test (after saying why) unless it runs as root on a kernel with
/// Landlock ABI 6, which every ring below admin needs.
#[macro_export]
macro_rules! require {
    ($name:expr) => {
        if !$crate::kernel_ready($name, 6) {
            return;
        }
    };
}

/// A scratch layout for one test.
pub struct Scene {
    _root: tempfile::TempDir,
    pub root: PathBuf,
    pub home: PathBuf,
    pub workspace: PathBuf,
    pub outside: PathBuf,
    /// The `attempt` helper, inside the workspace.
    pub attempt: PathBuf,
}

fn must<T, E: std::fmt::Display>(result: Result<T, E>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(error) => panic!("{what}: {error}"),
    }
}

impl Scene {
    /// `attempt` is the helper binary: `env!("CARGO_BIN_EXE_attempt")` in a test.
    pub fn new(attempt: &str) -> Scene {
        let dir = must(tempfile::Builder::new().prefix("governor-test-").tempdir(), "tempdir");
        let root = must(dir.path().canonicalize(), "canonicalize");
        let home = root.join("home");
        let workspace = root.join("workspace");
        let outside = root.join("outside");
        for path in [&home.join(".ssh"), &home.join(".aws"), &home.join("projects"), &workspace, &outside] {
            must(fs::create_dir_all(path), "mkdir");
        }
        must(fs::write(home.join(".ssh/id_ed25519"), "-----BEGIN OPENSSH PRIVATE KEY-----\n"), "write");
        must(fs::write(home.join(".aws/credentials"), "[default]\naws_secret_access_key=x\n"), "write");
        must(fs::write(home.join("notes.txt"), "hello from home\n"), "write");
        must(fs::write(outside.join("file"), "outside\n"), "write");
        // Other users (tests run agents as nobody) must be able to traverse the layout.
        for path in [&root, &home, &workspace, &outside] {
            must(fs::set_permissions(path, fs::Permissions::from_mode(0o755)), "chmod");
        }
        let helper = workspace.join("attempt");
        // The VM (tests/tests/lsm.rs) has the helper elsewhere than where it was built.
        let attempt = std::env::var_os("GOVERNOR_ATTEMPT_BIN").map_or_else(|| PathBuf::from(attempt), PathBuf::from);
        must(fs::copy(&attempt, &helper), "copy attempt");
        let attempt = helper;
        Scene { _root: dir, root, home, workspace, outside, attempt }
    }

    /// `governor run --trust TRUST --workspace WS EXTRA... -- ARGS...` with `HOME` set to the
    /// fake home.
    pub fn governor<I, S>(&self, trust: &str, extra: &[&str], args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(governor_bin());
        command
            .args(["run", "--trust", trust, "--workspace"])
            .arg(&self.workspace)
            .args(extra)
            .arg("--")
            .args(args)
            .env("HOME", &self.home)
            .env_remove("SUDO_UID");
        must(command.output(), "running governor")
    }

    /// Runs `attempt OP ARGS...` in ring `trust`; returns the word it printed and the exit code.
    pub fn attempt(&self, trust: &str, op: &[&str]) -> (String, i32) {
        let mut args = vec![self.attempt.as_os_str().to_owned()];
        args.extend(op.iter().map(|arg| arg.into()));
        let output = self.governor(trust, &[], args);
        let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !stdout.is_empty() || output.status.code() != Some(0),
            "attempt {op:?} printed nothing; stderr: {stderr}"
        );
        (stdout, output.status.code().unwrap_or(-1))
    }
}

/// Text of a process's stdout.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Text of a process's stderr.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The cgroup v2 mount point, from mountinfo.
pub fn cgroup2_root() -> PathBuf {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mountinfo
        .lines()
        .find_map(|line| {
            let (fields, rest) = line.split_once(" - ")?;
            rest.starts_with("cgroup2 ").then(|| fields.split_whitespace().nth(4).map(PathBuf::from)).flatten()
        })
        .unwrap_or_else(|| panic!("no cgroup2 mount"))
}

/// Whether any agent cgroup under `<cgroup2>/governor` has a process in it.
pub fn agents_running() -> bool {
    let Ok(agents) = fs::read_dir(cgroup2_root().join("governor")) else {
        return false;
    };
    agents
        .filter_map(Result::ok)
        .filter(|entry| entry.path().is_dir())
        .any(|entry| fs::read_to_string(entry.path().join("cgroup.procs")).is_ok_and(|procs| !procs.trim().is_empty()))
}
