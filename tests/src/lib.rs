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

/// `--probes BACKEND` when `GOVERNOR_PROBES` names one (the 6.12 VM runs the escape suite
/// with `lsm`, so a backend that does not load fails the run instead of falling back), else
/// nothing: governor's own default (`auto`).
pub fn probes_args() -> Vec<String> {
    match std::env::var("GOVERNOR_PROBES") {
        Ok(backend) if !backend.is_empty() => vec!["--probes".to_owned(), backend],
        _ => Vec::new(),
    }
}

/// How many opens the flood tests make: `GOVERNOR_FLOOD_OPENS`, else a million. The VMs run
/// under software emulation, where a million opens through the LSM backend take minutes;
/// they set a smaller flood, which still overruns the ring buffer of a stalled consumer.
pub fn flood_opens() -> u64 {
    std::env::var("GOVERNOR_FLOOD_OPENS").ok().and_then(|n| n.parse().ok()).unwrap_or(1_000_000)
}

/// Whether `tool` is a file in one of the directories of `PATH`.
pub fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
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
    /// fake home, and [`probes_args`] unless `extra` chooses the probes itself.
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
            .args(if extra.contains(&"--probes") { Vec::new() } else { probes_args() })
            .arg("--")
            .args(args)
            .env("HOME", &self.home)
            .env_remove("SUDO_UID");
        must(command.output(), "running governor")
    }

    /// Starts `governor ... run ...` (`governor` holds what comes before) on `sh -c script`
    /// in the workspace as agent `agent`, in the background, its output piped.
    pub fn spawn_script(&self, governor: &mut Command, agent: &str, script: &str) -> std::process::Child {
        governor
            .args(["--agent-id", agent, "--workspace"])
            .arg(&self.workspace)
            .args(["--", "sh", "-c", script])
            .env("HOME", &self.home)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        must(governor.spawn(), "starting governor run")
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

/// Polls `done` until it holds; fails the test naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: std::time::Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
}

/// Whether agent `agent`'s cgroup says `frozen 1` now.
pub fn frozen(agent: &str) -> bool {
    let events =
        fs::read_to_string(cgroup2_root().join("governor").join(agent).join("cgroup.events")).unwrap_or_default();
    events.lines().any(|line| line == "frozen 1")
}

/// Kills every process of agent `agent`'s cgroup (cleanup; an error is ignored).
pub fn kill_agent_cgroup(agent: &str) {
    let _ = fs::write(cgroup2_root().join("governor").join(agent).join("cgroup.kill"), "1");
}

/// Waits until agent `id`'s cgroup says `frozen 1`; whether it did within `timeout`.
pub fn wait_frozen(id: &str, timeout: std::time::Duration) -> bool {
    let events = cgroup2_root().join("governor").join(id).join("cgroup.events");
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if fs::read_to_string(&events).is_ok_and(|text| text.contains("frozen 1")) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
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

/// A 16 MiB tmpfs mounted at `dir` (made here) for a store to fill up; unmounted when dropped.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(dir: &Path) -> Tmpfs {
        must(fs::create_dir(dir), "mkdir");
        let mounted =
            must(Command::new("mount").args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"]).arg(dir).status(), "mount");
        assert!(mounted.success(), "mounting a tmpfs at {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }

    /// Fills the tmpfs (dd stops at ENOSPC); returns the file to remove to make room again.
    pub fn fill(&self) -> PathBuf {
        let filler = self.0.join("filler");
        let _ = Command::new("dd")
            .arg("if=/dev/zero")
            .arg(format!("of={}", filler.display()))
            .arg("bs=64k")
            .stderr(std::process::Stdio::null())
            .status();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A `governor daemon` started for one test, with its socket in `/run/governor` (where the
/// agents' mount namespace masks it) and its store and state in a directory of the test's.
/// Stopped with SIGTERM when dropped.
pub struct Daemon {
    pub child: Option<std::process::Child>,
    pub socket: PathBuf,
    pub audit_db: PathBuf,
    pub log: PathBuf,
    pub rings: Option<PathBuf>,
}

impl Daemon {
    /// Starts a daemon whose store lives in `dir`, and waits until it says it is ready.
    pub fn start(dir: &Path, name: &str, extra: &[&str]) -> Daemon {
        Daemon::start_with(dir, name, None, extra)
    }

    pub fn start_with(dir: &Path, name: &str, rings: Option<&Path>, extra: &[&str]) -> Daemon {
        let socket = PathBuf::from(format!("/run/governor/test-{name}-{}.sock", std::process::id()));
        Daemon::start_at(dir, &socket, rings, extra, &[])
    }

    /// A daemon listening on `socket`, wherever that is, with `envs` set.
    pub fn start_at(dir: &Path, socket: &Path, rings: Option<&Path>, extra: &[&str], envs: &[(&str, &str)]) -> Daemon {
        let socket = socket.to_path_buf();
        let audit_db = dir.join("audit.db");
        let log = dir.join(format!("daemon-{}.log", fs::read_dir(dir).map(Iterator::count).unwrap_or(0)));
        let mut command = Command::new(governor_bin());
        command.arg("--socket").arg(&socket).arg("--audit-db").arg(&audit_db);
        if let Some(rings) = rings {
            command.arg("--rings").arg(rings);
        }
        command
            .arg("daemon")
            .args(extra)
            .envs(envs.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(must(fs::File::create(&log), "daemon log"));
        let child = must(command.spawn(), "starting governor daemon");
        let mut daemon = Daemon { child: Some(child), socket, audit_db, log, rings: rings.map(Path::to_path_buf) };
        daemon.wait_for_log("governor daemon ready", std::time::Duration::from_secs(20));
        daemon
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log has `needle` (panics with the log after `timeout`, or when the
    /// daemon has exited).
    pub fn wait_for_log(&mut self, needle: &str, timeout: std::time::Duration) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self.log_text().contains(needle) {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("governor daemon exited ({status}) before '{needle}':\n{}", self.log_text());
            }
            assert!(std::time::Instant::now() < deadline, "no '{needle}' in the daemon's log:\n{}", self.log_text());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// `governor --socket S --audit-db D ARGS...` (with the daemon's ring directory).
    pub fn governor(&self) -> Command {
        let mut command = Command::new(governor_bin());
        command.arg("--socket").arg(&self.socket).arg("--audit-db").arg(&self.audit_db);
        if let Some(rings) = &self.rings {
            command.arg("--rings").arg(rings);
        }
        command
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |child| child.id() as i32)
    }

    /// SIGKILL: no chance to say anything or clean up.
    pub fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.pid(), signal) };
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
        let _ = fs::remove_file(&self.socket);
    }
}

/// The Prometheus text exposition format (0.0.4), parsed strictly enough to catch a
/// malformed endpoint: every sample's metric has a `# TYPE` first, names and labels are
/// well formed, values are numbers, histogram buckets never decrease and end with `+Inf`
/// equal to `_count`.
pub mod prometheus {
    use std::collections::BTreeMap;

    /// Samples by `name{labels}` as written.
    pub type Samples = BTreeMap<String, f64>;

    fn valid_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    pub fn parse(text: &str) -> Result<Samples, String> {
        let mut types: BTreeMap<String, String> = BTreeMap::new();
        let mut samples = Samples::new();
        for (number, line) in text.lines().enumerate() {
            let at = |why: &str| format!("line {}: {why}: {line}", number + 1);
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').ok_or_else(|| at("TYPE without a type"))?;
                if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                    return Err(at("unknown type"));
                }
                types.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').ok_or_else(|| at("no value"))?;
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                value => value.parse().map_err(|_| at("value is not a number"))?,
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, Some(labels.strip_suffix('}').ok_or_else(|| at("unclosed labels"))?)),
                None => (series, None),
            };
            if !valid_name(name) {
                return Err(at("bad metric name"));
            }
            for pair in labels.into_iter().flat_map(|labels| labels.split("\",")).filter(|pair| !pair.is_empty()) {
                let (label, quoted) = pair.split_once('=').ok_or_else(|| at("label without ="))?;
                if !valid_name(label) || !quoted.starts_with('"') {
                    return Err(at("bad label"));
                }
            }
            // OpenMetrics: a counter `NAME` is sampled as `NAME_total`.
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    name.strip_suffix(suffix).filter(|base| types.get(*base).is_some_and(|t| t == "histogram"))
                })
                .or_else(|| name.strip_suffix("_total").filter(|base| types.get(*base).is_some_and(|t| t == "counter")))
                .unwrap_or(name);
            if !types.contains_key(family) {
                return Err(at("sample before its # TYPE"));
            }
            if samples.insert(series.to_owned(), value).is_some() {
                return Err(at("duplicate series"));
            }
        }
        for (name, kind) in &types {
            if kind != "histogram" {
                continue;
            }
            let buckets: Vec<(&String, &f64)> =
                samples.iter().filter(|(series, _)| series.starts_with(&format!("{name}_bucket{{"))).collect();
            let mut bounded: Vec<(f64, f64)> = buckets
                .iter()
                .map(|(series, value)| {
                    let bound = series.split("le=\"").nth(1).and_then(|rest| rest.split('"').next()).unwrap_or("");
                    (if bound == "+Inf" { f64::INFINITY } else { bound.parse().unwrap_or(f64::NAN) }, **value)
                })
                .collect();
            bounded.sort_by(|a, b| a.0.total_cmp(&b.0));
            if bounded.windows(2).any(|pair| pair[1].1 < pair[0].1) {
                return Err(format!("{name}: buckets decrease"));
            }
            let inf = bounded.last().filter(|(bound, _)| bound.is_infinite()).map(|(_, value)| *value);
            if inf.is_none() || inf != samples.get(&format!("{name}_count")).copied() {
                return Err(format!("{name}: +Inf bucket missing or not equal to _count"));
            }
        }
        Ok(samples)
    }

    /// GETs `http://ADDR/metrics` and returns the body.
    pub fn scrape(addr: &str) -> String {
        use std::io::{Read as _, Write as _};
        let mut stream = std::net::TcpStream::connect(addr).unwrap_or_else(|error| panic!("{addr}: {error}"));
        let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: governor\r\nConnection: close\r\n\r\n");
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP response: {response}"));
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.to_lowercase().contains("content-type: application/openmetrics-text; version=1.0.0"), "{head}");
        assert!(body.ends_with("# EOF\n"), "{body}");
        body.to_owned()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn malformed_text_is_refused() {
            assert!(parse("# TYPE a counter\na 1\n").is_ok());
            assert!(parse("a 1\n").is_err(), "no TYPE");
            assert!(parse("# TYPE a counter\na one\n").is_err());
            assert!(parse("# TYPE a counter\na{x=1} 1\n").is_err(), "unquoted label");
            let histogram = "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n";
            assert!(parse(histogram).is_err(), "decreasing buckets");
            let histogram = "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n";
            assert!(parse(histogram).is_ok());
        }
    }
}

/// How many raw tracepoint links on `sys_enter` or `sys_exit` process `pid` holds (from its
/// `/proc/PID/fdinfo`): while any process holds one, every task of the machine takes the
/// kernel's slow syscall path.
pub fn syscall_tracepoint_links(pid: i32) -> usize {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return 0 };
    fds.flatten()
        .filter(|fd| {
            fs::read_to_string(fd.path()).is_ok_and(|info| {
                info.contains("link_type:\traw_tracepoint")
                    && info.lines().any(|line| line == "tp_name:\tsys_enter" || line == "tp_name:\tsys_exit")
            })
        })
        .count()
}

/// A directory of the workspace with a file to open by a relative path (`relative.md`), for
/// the kernel's working-directory walk: `cd DIR && cat relative.md` in an agent's script.
/// cat is gone before procfs could be asked where it was, so the directory must come from
/// the walk.
pub fn relative_dir(scene: &Scene) -> PathBuf {
    let dir = scene.workspace.join("a/b");
    std::fs::create_dir_all(&dir).unwrap_or_else(|error| panic!("{error}"));
    std::fs::write(dir.join("relative.md"), "hello").unwrap_or_else(|error| panic!("{error}"));
    dir
}

/// That `--trace --verbose` (`err`, its JSON `events`) shows the walk of `dir` reported
/// before the relative open of `relative.md`, and the open resolved against it.
pub fn assert_walked(events: &[serde_json::Value], dir: &Path, err: &str) {
    let walked = events.iter().position(|event| event["kind"] == "cwd" && event["path"] == *dir.to_string_lossy());
    let relative = events.iter().position(|event| event["kind"] == "open" && event["path"] == "relative.md");
    assert!(
        matches!((walked, relative), (Some(walked), Some(relative)) if walked < relative),
        "no kernel walk of {} before the relative open: {err}",
        dir.display()
    );
    let resolved = relative.map(|index| events[index]["aka"].clone());
    assert_eq!(resolved, Some(serde_json::json!([dir.join("relative.md").to_string_lossy()])), "{err}");
    assert!(!err.contains("working-directory walk"), "the kernel walk did not load: {err}");
}
