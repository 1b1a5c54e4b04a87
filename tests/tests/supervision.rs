//! The agent never outlives its supervision: governor's own output cannot end it (a reader
//! that goes away, a terminal the agent stopped), and when a standalone governor dies anyway
//! (SIGKILL from outside) its warden kills the agent's cgroup, removes it and records the loss.

use std::{
    fs,
    io::Read as _,
    os::fd::{FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use governor_tests::{Scene, cgroup2_root, governor_bin, require, scene};

fn store(scene: &Scene) -> PathBuf {
    scene.root.join("audit.db")
}

/// `governor --audit-db STORE run --trust TRUST --agent-id ID EXTRA... -- ARGS...`, not started.
fn run(scene: &Scene, id: &str, trust: &str, extra: &[&str], args: &[&str]) -> Command {
    let mut command = Command::new(governor_bin());
    command
        .arg("--audit-db")
        .arg(store(scene))
        .args(["run", "--standalone", "--trust", trust, "--agent-id", id, "--workspace"])
        .arg(&scene.workspace)
        .args(extra)
        .arg("--")
        .args(args)
        .env("HOME", &scene.home)
        .env_remove("SUDO_UID");
    command
}

/// The agent's actions in the store, as `action actor why` lines.
fn actions(scene: &Scene, id: &str) -> Vec<serde_json::Value> {
    let output = Command::new(governor_bin())
        .arg("--audit-db")
        .arg(store(scene))
        .args(["audit", "actions", "--agent", id, "--format", "json"])
        .output()
        .unwrap_or_else(|error| panic!("governor audit actions: {error}"));
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("{error}: {}", String::from_utf8_lossy(&output.stderr)))
}

fn cgroup_of(id: &str) -> PathBuf {
    cgroup2_root().join("governor").join(id)
}

/// Waits until `done` holds, up to `timeout`; says whether it did.
fn within(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

/// The pids of the agent's cgroup (empty once it is gone).
fn procs(cgroup: &Path) -> Vec<i32> {
    fs::read_to_string(cgroup.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

/// Processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " ").contains(needle))
        })
        .collect()
}

/// Kills what a failed test left behind.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = fs::write(self.0.join("cgroup.kill"), "1");
        std::thread::sleep(Duration::from_millis(100));
        let _ = fs::remove_dir(&self.0);
    }
}

fn wait(child: &mut Child, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_exit_recorded(scene: &Scene, id: &str, code: i32) {
    let rows = actions(scene, id);
    let why = format!("exit status {code}");
    assert!(
        rows.iter().any(|row| row["action"] == "exit" && row["why"] == why.as_str()),
        "no '{why}' exit row: {rows:?}"
    );
}

#[test]
fn sigkill_of_a_standalone_governor_kills_its_agent() {
    require!("sigkill_of_a_standalone_governor_kills_its_agent");
    let scene = scene!();
    let id = format!("warden-kill-{}", std::process::id());
    let cgroup = cgroup_of(&id);
    let _cleanup = Cleanup(cgroup.clone());
    let marker = format!("sleep 3{}", std::process::id() % 1000);
    let script = format!("{marker} & {marker} & wait");
    let mut governor = run(&scene, &id, "medium", &[], &["sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(within(Duration::from_secs(10), || procs(&cgroup).len() >= 3), "the agent did not start");
    let agent = procs(&cgroup);
    let _ = governor.kill();
    let _ = governor.wait();
    let killed_at = Instant::now();
    assert!(
        within(Duration::from_secs(2), || !cgroup.exists() && processes_with(&marker).is_empty()),
        "2 s after governor's SIGKILL: cgroup {} exists: {}, agent processes {:?} (were {agent:?})",
        cgroup.display(),
        cgroup.exists(),
        processes_with(&marker)
    );
    println!("agent killed and cgroup removed {:?} after governor's SIGKILL", killed_at.elapsed());
    // The loss is in the store: who killed it and why, and the end of the agent.
    assert!(
        within(Duration::from_secs(2), || actions(&scene, &id).iter().any(|row| row["action"] == "exit")),
        "no exit row: {:?}",
        actions(&scene, &id)
    );
    let rows = actions(&scene, &id);
    assert!(
        rows.iter().any(|row| row["action"] == "kill"
            && row["actor"] == "governor-warden"
            && row["why"].as_str().is_some_and(|why| why.contains("ended without cleaning up"))),
        "{rows:?}"
    );
    let status = Command::new(governor_bin())
        .arg("--audit-db")
        .arg(store(&scene))
        .args(["status", "--format", "json"])
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap_or_default();
    let row = status["agents"].as_array().and_then(|agents| agents.iter().find(|agent| agent["agent"] == id.as_str()));
    assert_eq!(row.map(|row| row["state"].clone()), Some(serde_json::json!("exited")), "{status}");
    assert_eq!(row.map(|row| row["incidents"].clone()), Some(serde_json::json!(1)), "{status}");
    let verify = Command::new(governor_bin()).arg("--audit-db").arg(store(&scene)).args(["audit", "verify"]).output();
    assert!(verify.is_ok_and(|output| output.status.success()), "the warden's rows break the chain");
}

#[test]
fn a_reader_that_goes_away_does_not_end_governor() {
    require!("a_reader_that_goes_away_does_not_end_governor");
    let scene = scene!();
    let id = format!("epipe-{}", std::process::id());
    let _cleanup = Cleanup(cgroup_of(&id));
    let attempt = scene.attempt.display().to_string();
    // `governor run --trace ... 2>&1 | head -1`: the agent goes on making events (each a
    // trace line on a pipe nobody reads any more) and ends with 7.
    let script = format!("sleep 0.3; {attempt} flood /etc/hostname 3000 >/dev/null; exit 7");
    let mut governor = run(&scene, &id, "medium", &["--trace"], &["sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("{error}"));
    let mut stderr = governor.stderr.take().unwrap_or_else(|| panic!("no stderr"));
    let mut first = [0u8; 64];
    let read = stderr.read(&mut first).unwrap_or(0);
    assert!(read > 0, "governor printed nothing");
    drop(stderr);
    let code = wait(&mut governor, Duration::from_secs(60));
    assert_eq!(code, Some(7), "governor did not pass the agent's exit status through (101 is a panic)");
    assert!(!cgroup_of(&id).exists(), "the agent's cgroup was left behind");
    assert_exit_recorded(&scene, &id, 7);
    let rows = actions(&scene, &id);
    assert!(rows.iter().any(|row| row["action"] == "output-dropped"), "the dropped lines are not counted: {rows:?}");
}

#[test]
fn a_flood_with_stderr_closed_does_not_end_governor() {
    require!("a_flood_with_stderr_closed_does_not_end_governor");
    let scene = scene!();
    let id = format!("closed-{}", std::process::id());
    let _cleanup = Cleanup(cgroup_of(&id));
    let attempt = scene.attempt.display().to_string();
    // Thirty open loops fill the ring buffer; every line governor has to say (--verbose,
    // the "lost" reports, the summary) meets a pipe whose reader is gone (EPIPE).
    let script = format!("for i in $(seq 30); do {attempt} flood /etc/hostname 20000 >/dev/null & done; wait; exit 7");
    let (read, write) = pipe();
    drop(read);
    let mut governor = run(&scene, &id, "medium", &["--verbose"], &["sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(write))
        .spawn()
        .unwrap_or_else(|error| panic!("{error}"));
    let code = wait(&mut governor, Duration::from_secs(120));
    assert_eq!(code, Some(7), "governor did not pass the agent's exit status through (101 is a panic)");
    assert!(!cgroup_of(&id).exists(), "the agent's cgroup was left behind");
    assert_exit_recorded(&scene, &id, 7);
}

#[test]
fn an_agent_that_stops_the_shared_terminal_does_not_end_governor() {
    require!("an_agent_that_stops_the_shared_terminal_does_not_end_governor");
    let scene = scene!();
    let id = format!("tty-{}", std::process::id());
    let _cleanup = Cleanup(cgroup_of(&id));
    let (master, slave) = openpty();
    let attempt = scene.attempt.display().to_string();
    // The agent stops the terminal (and makes it non-blocking), then makes events that
    // --trace prints on it.
    let script = format!("{attempt} stop-terminal; {attempt} flood /etc/hostname 2000; exit 7");
    let tty = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap_or_else(|error| panic!("{error}")));
    let mut governor = run(&scene, &id, "medium", &["--trace"], &["sh", "-c", &script])
        .stdin(tty(&slave))
        .stdout(tty(&slave))
        .stderr(tty(&slave))
        .spawn()
        .unwrap_or_else(|error| panic!("{error}"));
    drop(slave);
    let code = wait(&mut governor, Duration::from_secs(60));
    drop(master);
    assert_eq!(code, Some(7), "governor did not pass the agent's exit status through (101 is a panic)");
    assert!(!cgroup_of(&id).exists(), "the agent's cgroup was left behind");
    assert_exit_recorded(&scene, &id, 7);
    let rows = actions(&scene, &id);
    assert!(rows.iter().any(|row| row["action"] == "output-dropped"), "the dropped lines are not counted: {rows:?}");
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors that we then own.
    let ret = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(ret, 0, "pipe2");
    // SAFETY: both descriptors are new and owned here.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn openpty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty fills two descriptors that we then own; no name, termios or size.
    let ret =
        unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
    assert_eq!(ret, 0, "openpty");
    // SAFETY: both descriptors are new and owned here.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

#[test]
fn a_drop_is_pinned_on_the_agent_that_flooded_and_pauses_it_until_the_backlog_is_read() {
    require!("a_drop_is_pinned_on_the_agent_that_flooded_and_pauses_it_until_the_backlog_is_read");
    let scene = scene!();
    let id = format!("dropper-{}", std::process::id());
    let _cleanup = Cleanup(cgroup_of(&id));
    let attempt = scene.attempt.display().to_string();
    let release = scene.workspace.join("release");
    let fifo = std::ffi::CString::new(release.to_string_lossy().as_bytes()).unwrap_or_else(|error| panic!("{error}"));
    // SAFETY: mkfifo(3) with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o666) }, 0, "mkfifo");
    // 200,000 opens while governor is stopped: the 16 MiB ring buffer (about 50,000 open
    // events) overflows for certain, whatever the machine's speed.
    let script =
        format!("read line < release; {attempt} flood /etc/hostname 200000 >/dev/null; : > flooded; sleep 2; exit 7");
    let mut governor = run(&scene, &id, "high", &[], &["sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("{error}"));
    let cgroup = cgroup_of(&id);
    assert!(within(Duration::from_secs(10), || !procs(&cgroup).is_empty()), "the agent did not start");
    let pid = governor.id() as i32;
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let mut writer = fs::OpenOptions::new().write(true).open(&release).unwrap_or_else(|error| panic!("{error}"));
    std::io::Write::write_all(&mut writer, b"go\n").unwrap_or_else(|error| panic!("{error}"));
    // The flood is over; the agent still runs (its sleep) when governor reads again.
    within(Duration::from_secs(20), || scene.workspace.join("flooded").exists());
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    drop(writer);
    let code = wait(&mut governor, Duration::from_secs(60));
    let mut err = String::new();
    if let Some(mut stderr) = governor.stderr.take() {
        let _ = stderr.read_to_string(&mut err);
    }
    // Paused, then thawed: the agent ran to its end.
    assert_eq!(code, Some(7), "{err}");
    let incidents = Command::new(governor_bin())
        .arg("--audit-db")
        .arg(store(&scene))
        .args(["audit", "incidents", "--agent", &id, "--format", "json"])
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    let incidents: Vec<serde_json::Value> = serde_json::from_slice(&incidents.stdout).unwrap_or_default();
    let lost: Vec<&serde_json::Value> = incidents.iter().filter(|row| row["rule"] == "events-lost").collect();
    assert!(!lost.is_empty(), "the ring buffer overflowed, and no drop was pinned on the agent: {err}");
    assert!(err.contains("paused until the backlog is read"), "{err}");
    assert!(lost.iter().all(|row| row["severity"] == "high"), "{lost:?}");
    // Every open is accounted for: recorded (in aggregates) or counted as lost.
    let rows = Command::new(governor_bin())
        .arg("--audit-db")
        .arg(store(&scene))
        .args(["audit", "query", "--agent", &id, "--path", "/etc/hostname", "--format", "json", "--limit", "100000"])
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&rows.stdout).unwrap_or_default();
    let recorded: i64 = rows.iter().map(|row| row["count"].as_i64().unwrap_or(1)).sum();
    let dropped: i64 = lost
        .iter()
        .filter_map(|row| serde_json::from_str::<serde_json::Value>(row["event"].as_str()?).ok())
        .filter_map(|event| event["lost"].as_i64())
        .sum();
    assert!(recorded + dropped >= 200_000, "{recorded} recorded + {dropped} dropped of 200,000");
}
