//! The `notify` backend: no syscall tracepoint, so the host pays nothing while an agent
//! runs. Landlock's refusals come from its audit records (Landlock ABI 7), execs from
//! `sched_process_exec`; each is reported as the tracepoint backend reports it, so the
//! trace, the audit rows and the rules see the same facts.

use std::{
    fs,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use governor_tests::{Daemon, governor_bin, kernel_ready, scene, stderr, syscall_tracepoint_links};
use serde_json::Value;

#[test]
fn landlock_refusals_are_reported_without_a_syscall_tracepoint() {
    if !kernel_ready("landlock_refusals_are_reported_without_a_syscall_tracepoint", 7) {
        return;
    }
    let scene = scene!();
    let store = scene.root.join("audit.db");
    let id = format!("notify-{}", std::process::id());
    // A file that no ring below admin may read, refused by Landlock itself (the secrets of
    // the home and /etc are masked in the agent's mount namespace, a refusal of the file
    // permissions that Landlock never sees: not reported by this backend).
    let refused = tempfile::Builder::new()
        .prefix("governor-notify-")
        .tempfile_in("/var/log")
        .unwrap_or_else(|error| panic!("{error}"));
    let key = refused.path().to_path_buf();
    let program = scene.outside.join("prog");
    fs::copy("/bin/true", &program).unwrap_or_else(|error| panic!("{error}"));
    let attempt = scene.attempt.display().to_string();
    let script = format!(
        "echo > ready; while [ ! -e go ]; do sleep 0.05; done; cat {key}; {attempt} exec {program}; \
         {attempt} tcp-connect 9; {attempt} mkdir {dir}; cat /etc/hostname",
        key = key.display(),
        program = program.display(),
        dir = scene.outside.join("new").display(),
    );
    let child = start_ready(Command::new(governor_bin()).arg("--audit-db").arg(&store), &scene, &id, &script);
    // The agent runs: its supervisor holds no syscall tracepoint.
    assert_eq!(syscall_tracepoint_links(child.id() as i32), 0);
    fs::write(scene.workspace.join("go"), "").unwrap_or_else(|error| panic!("{error}"));
    let out = child.wait_with_output().unwrap_or_else(|error| panic!("{error}"));
    let text = stderr(&out);
    let events: Vec<Value> = text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
    let find = |kind: &str, what: &dyn Fn(&Value) -> bool| {
        events
            .iter()
            .find(|event| event["kind"] == kind && what(event))
            .unwrap_or_else(|| panic!("no {kind} event: {text}"))
            .clone()
    };
    let open = find("open", &|event| event["path"] == key.display().to_string());
    assert_eq!((open["result"].as_str(), open["source"].as_str()), (Some("EACCES"), Some("landlock-audit")), "{open}");
    let exec = find("exec", &|event| event["path"] == program.display().to_string());
    assert_eq!(exec["result"], "EACCES", "{exec}");
    let connect = find("connect", &|event| event["port"] == 9);
    assert_eq!(
        (connect["result"].as_str(), connect["addr"].as_str()),
        (Some("EACCES"), Some("127.0.0.1")),
        "{connect}"
    );
    let mkdir = find("mkdir", &|event| event["path"] == scene.outside.display().to_string());
    assert_eq!(mkdir["result"], "EACCES", "{mkdir}");
    // Allowed execs come from sched_process_exec.
    let cat = find("execed", &|event| event["path"].as_str().is_some_and(|path| path.ends_with("/cat")));
    assert_eq!(cat["result"], "ok", "{cat}");
    // The refused open is an audit row like the tracepoint backend's.
    let query = Command::new(governor_bin())
        .arg("--audit-db")
        .arg(&store)
        .args(["audit", "query", "--agent", &id, "--kind", "open", "--format", "jsonl"])
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(query.status.code(), Some(0), "{}", stderr(&query));
    let rows: Vec<Value> =
        String::from_utf8_lossy(&query.stdout).lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
    assert!(rows.iter().any(|row| row["path"] == key.display().to_string() && row["result"] == "EACCES"), "{rows:?}");
}

#[test]
fn allowed_opens_and_connects_are_reported_by_the_process_that_made_them() {
    if !kernel_ready("allowed_opens_and_connects_are_reported_by_the_process_that_made_them", 7) {
        return;
    }
    let scene = scene!();
    let id = format!("notify-opens-{}", std::process::id());
    fs::write(scene.workspace.join("input"), "data").unwrap_or_else(|error| panic!("{error}"));
    let attempt = scene.attempt.display().to_string();
    // The agent reads one file and writes another, from a child process of its shell, and
    // connects to port 443 (allowed; nothing listens there).
    let script = format!(
        "echo > ready; while [ ! -e go ]; do sleep 0.05; done; cat input > /dev/null; \
         sh -c 'echo $$ > pid; echo out > output'; {attempt} tcp-connect 443; \
         echo > done"
    );
    let mut governor = Command::new(governor_bin());
    governor.arg("--audit-db").arg(scene.root.join("audit.db"));
    let child = start_ready(&mut governor, &scene, &id, &script);
    assert_eq!(syscall_tracepoint_links(child.id() as i32), 0);
    // A process that is not the agent opens a file in the same directory meanwhile: the
    // marks are on the agent's own mounts, so it is not the agent's event.
    let out = go_beside_an_outsider(&scene, child);
    let text = stderr(&out);
    let events: Vec<Value> = text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
    let path = |name: &str| scene.workspace.join(name).display().to_string();
    let opens = |name: &str| -> Vec<&Value> {
        events.iter().filter(|event| event["kind"] == "open" && event["path"] == path(name)).collect()
    };
    let input = opens("input");
    assert!(!input.is_empty(), "the allowed read was not reported: {text}");
    assert_eq!((input[0]["result"].as_str(), input[0]["source"].as_str()), (Some("ok"), Some("fanotify")));
    // The write is reported as one (O_WRONLY), by the process that wrote it.
    let writer: u64 = fs::read_to_string(scene.workspace.join("pid"))
        .unwrap_or_else(|error| panic!("{error}"))
        .trim()
        .parse()
        .unwrap_or_else(|error| panic!("{error}"));
    let output = opens("output");
    assert!(
        output
            .iter()
            .any(|event| event["flags"].as_u64().is_some_and(|flags| flags & 3 != 0) && event["pid"] == writer),
        "no write open of output by pid {writer}: {text}"
    );
    assert!(opens("outsider").is_empty(), "another process's open was reported as the agent's: {text}");
    let connect = events
        .iter()
        .find(|event| event["kind"] == "connect" && event["port"] == 443)
        .unwrap_or_else(|| panic!("the allowed connect was not reported: {text}"));
    assert_eq!((connect["source"].as_str(), connect["verdict"].as_str()), (Some("cgroup-sock-addr"), Some("observed")));
    // What was read in userspace counts as produced: produced = delivered + dropped.
    let summary = text.lines().find(|line| line.contains("events produced")).unwrap_or_else(|| panic!("{text}"));
    let numbers: Vec<u64> = summary.split(' ').filter_map(|word| word.trim_end_matches(',').parse().ok()).collect();
    assert_eq!(numbers[0], numbers[1] + numbers[2], "{summary}");
}

#[test]
fn refusals_by_file_mode_are_reported_with_the_process_that_met_them() {
    if !kernel_ready("refusals_by_file_mode_are_reported_with_the_process_that_met_them", 7) {
        return;
    }
    let scene = scene!();
    let id = format!("notify-mode-{}", std::process::id());
    // In the workspace, which the ring may read, but the file's mode keeps the agent (uid
    // 0 without capabilities) out: a refusal Landlock does not make.
    let private = private_file(&scene);
    let refused = tempfile::Builder::new()
        .prefix("governor-notify-pid-")
        .tempfile_in("/var/log")
        .unwrap_or_else(|error| panic!("{error}"));
    // Each refusal by a process of its own, which writes its pid first (exec keeps it).
    // And an exec and a UNIX connect, which have no other source on this backend: the
    // session records them with their arguments and result.
    let script = format!(
        "echo > ready; sh -c 'echo $$ > mode-pid; exec cat private'; \\
         sh -c 'echo $$ > landlock-pid; exec cat {}'; {} unix-connect {}/no-socket; true",
        refused.path().display(),
        scene.attempt.display(),
        scene.workspace.display()
    );
    let mut governor = Command::new(governor_bin());
    governor.arg("--audit-db").arg(scene.root.join("audit.db"));
    let child = start_ready(&mut governor, &scene, &id, &script);
    let out = child.wait_with_output().unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stderr(&out);
    let events: Vec<Value> = text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
    let pid = |file: &str| -> u64 {
        fs::read_to_string(scene.workspace.join(file))
            .unwrap_or_else(|error| panic!("{error}"))
            .trim()
            .parse()
            .unwrap_or_else(|error| panic!("{error}"))
    };
    let open = |path: String| {
        events
            .iter()
            .find(|event| event["kind"] == "open" && event["path"] == path && event["result"] == "EACCES")
            .unwrap_or_else(|| panic!("no refused open of {path}: {text}"))
            .clone()
    };
    let mode = open(private.display().to_string());
    assert_eq!(
        (mode["source"].as_str(), mode["pid"].as_u64()),
        (Some("syscall-audit"), Some(pid("mode-pid"))),
        "{mode}"
    );
    let landlock = open(refused.path().display().to_string());
    assert_eq!(
        (landlock["source"].as_str(), landlock["pid"].as_u64()),
        (Some("landlock-audit"), Some(pid("landlock-pid"))),
        "{landlock}"
    );
    let exec = events
        .iter()
        .find(|event| event["kind"] == "exec" && event["argv"][1] == "unix-connect")
        .unwrap_or_else(|| panic!("no exec with its arguments: {text}"));
    assert_eq!((exec["source"].as_str(), exec["result"].as_str()), (Some("syscall-audit"), Some("ok")), "{exec}");
    assert!(
        events
            .iter()
            .any(|event| event["kind"] == "connect" && event["family"] == "unix" && event["result"] == "ENOENT"),
        "no UNIX connect: {text}"
    );
}

#[test]
fn a_daemon_on_the_notify_backend_records_opens_refusals_and_connects_without_a_syscall_tracepoint() {
    if !kernel_ready(
        "a_daemon_on_the_notify_backend_records_opens_refusals_and_connects_without_a_syscall_tracepoint",
        7,
    ) {
        return;
    }
    let scene = scene!();
    let daemon = Daemon::start(&scene.root, "notify", &["--probes", "notify"]);
    let id = format!("notify-daemon-{}", std::process::id());
    fs::write(scene.workspace.join("input"), "data").unwrap_or_else(|error| panic!("{error}"));
    // /etc/shadow is masked in the agent's mount namespace: the mask is refused by Landlock,
    // whose record reports it. ~/.ssh is masked by an empty mode-000 tmpfs, which refuses
    // the path walk by its mode: the agent's audit session records that refusal.
    let key = scene.home.join(".ssh/id_ed25519");
    let script = format!(
        "echo > ready; while [ ! -e go ]; do sleep 0.05; done; cat input > /dev/null; cat /etc/shadow; \
         cat {key}; {attempt} tcp-connect 443; echo out > output",
        key = key.display(),
        attempt = scene.attempt.display()
    );
    // Through the daemon (no --probes, no --trace): the daemon's backend.
    let child = start_ready(&mut daemon.governor(), &scene, &id, &script);
    // An agent is watched, and neither the daemon nor its governor run holds a syscall
    // tracepoint: the rest of the host stays on the fast syscall path.
    assert_eq!(syscall_tracepoint_links(daemon.pid()), 0, "{}", daemon.log_text());
    assert_eq!(syscall_tracepoint_links(child.id() as i32), 0);
    let out = go_beside_an_outsider(&scene, child);
    let query = daemon
        .governor()
        .args(["audit", "query", "--agent", &id, "--format", "jsonl"])
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(query.status.code(), Some(0), "{}", stderr(&query));
    let text = String::from_utf8_lossy(&query.stdout).into_owned();
    let rows: Vec<Value> = text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
    let path = |name: &str| scene.workspace.join(name).display().to_string();
    let has = |what: &dyn Fn(&Value) -> bool| rows.iter().any(what);
    assert!(has(&|row| row["kind"] == "open" && row["path"] == path("input") && row["result"] == "ok"), "{text}");
    assert!(has(&|row| row["kind"] == "open" && row["path"] == path("output") && row["result"] == "ok"), "{text}");
    assert!(has(&|row| row["kind"] == "open" && row["path"] == "/etc/shadow" && row["result"] == "EACCES"), "{text}");
    let key = key.display().to_string();
    assert!(has(&|row| row["kind"] == "open" && row["path"] == key && row["result"] == "EACCES"), "{text}");
    // The key's content never reached the agent.
    assert!(!String::from_utf8_lossy(&out.stdout).contains("PRIVATE KEY"), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(has(&|row| row["kind"] == "connect" && row["destination"] == "127.0.0.1:443"), "{text}");
    assert!(!has(&|row| row["path"] == path("outsider")), "another process's open was recorded as the agent's: {text}");
}

#[test]
fn a_network_tool_after_a_secret_is_held_until_a_notify_daemon_suspends_the_agent() {
    if !kernel_ready("a_network_tool_after_a_secret_is_held_until_a_notify_daemon_suspends_the_agent", 7) {
        return;
    }
    let scene = scene!();
    let daemon = Daemon::start(&scene.root, "notify-held", &["--probes", "notify"]);
    let id = format!("notify-held-{}", std::process::id());
    let tool = scene.workspace.join("nc");
    fs::copy(&scene.attempt, &tool).unwrap_or_else(|error| panic!("{error}"));
    let (ran, after) = (scene.workspace.join("ran"), scene.workspace.join("after"));
    // The secret's refusal comes through the audit socket, the tool's exec through the ring
    // buffer, possibly first: the held exec waits for the refusal before it is decided.
    let script = format!(
        "cat {key} 2>/dev/null; {tool} write {ran}; echo > {after}",
        key = scene.home.join(".ssh/id_ed25519").display(),
        tool = tool.display(),
        ran = ran.display(),
        after = after.display(),
    );
    let child = scene.spawn_script(daemon.governor().args(["run", "--trust", "medium"]), &id, &script);
    let events = governor_tests::cgroup2_root().join("governor").join(&id).join("cgroup.events");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !fs::read_to_string(&events).is_ok_and(|text| text.contains("frozen 1")) {
        assert!(Instant::now() < deadline, "not suspended: {}", daemon.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(!ran.exists(), "the tool ran before the suspension: {}", daemon.log_text());
    assert!(!after.exists(), "the agent went on: {}", daemon.log_text());
    let killed = daemon.governor().args(["kill", &id]).output().unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(killed.status.code(), Some(0), "{}", stderr(&killed));
    let _ = child.wait_with_output();
    let log = daemon.log_text();
    assert!(log.contains("stopped in the kernel at the exec"), "{log}");
}

#[test]
fn a_restarted_notify_daemon_takes_the_agents_opens_and_session_again() {
    if !kernel_ready("a_restarted_notify_daemon_takes_the_agents_opens_and_session_again", 7) {
        return;
    }
    let scene = scene!();
    let mut daemon = Daemon::start(&scene.root, "notify-restart", &["--probes", "notify"]);
    let id = format!("notify-restart-{}", std::process::id());
    fs::write(scene.workspace.join("input"), "data").unwrap_or_else(|error| panic!("{error}"));
    let private = private_file(&scene);
    let script = "echo > ready; while [ ! -e go ]; do sleep 0.05; done; cat input > /dev/null; cat private; true";
    let child = start_ready(&mut daemon.governor(), &scene, &id, script);
    // The daemon that took the agent's fanotify group goes; a new one adopts the agent, and
    // takes the group again from its governor run when that attaches.
    daemon.kill_hard();
    std::thread::sleep(Duration::from_millis(300));
    let mut daemon = Daemon::start(&scene.root, "notify-restart", &["--probes", "notify"]);
    daemon.wait_for_log("its governor run is attached again", Duration::from_secs(20));
    fs::write(scene.workspace.join("go"), "").unwrap_or_else(|error| panic!("{error}"));
    let out = child.wait_with_output().unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let query = daemon
        .governor()
        .args(["audit", "query", "--agent", &id, "--format", "jsonl"])
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    let text = String::from_utf8_lossy(&query.stdout).into_owned();
    let rows: Vec<Value> = text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
    let input = scene.workspace.join("input").display().to_string();
    let private = private.display().to_string();
    assert!(rows.iter().any(|row| row["kind"] == "open" && row["path"] == input && row["result"] == "ok"), "{text}");
    assert!(
        rows.iter().any(|row| row["kind"] == "open" && row["path"] == private && row["result"] == "EACCES"),
        "{text}"
    );
}

#[test]
fn landlock_records_of_another_process_are_not_the_agents() {
    if !kernel_ready("landlock_records_of_another_process_are_not_the_agents", 7) {
        return;
    }
    let scene = scene!();
    let refused = |name: &str| {
        tempfile::Builder::new().prefix(name).tempfile_in("/var/log").unwrap_or_else(|error| panic!("{error}"))
    };
    let (mine, theirs) = (refused("governor-notify-mine-"), refused("governor-notify-theirs-"));
    // Two agents read the same audit multicast group; each must get only its own refusal.
    let spawn = |file: &std::path::Path, gate: &str| {
        Command::new(governor_bin())
            .arg("--audit-db")
            .arg(scene.root.join(format!("{gate}.db")))
            .args(["run", "--trust", "medium", "--probes", "notify", "--trace", "--workspace"])
            .arg(&scene.workspace)
            .args(["--", "sh", "-c", &format!("while [ ! -e {gate} ]; do sleep 0.05; done; cat {}", file.display())])
            .env("HOME", &scene.home)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("{error}"))
    };
    let first = spawn(mine.path(), "first");
    let second = spawn(theirs.path(), "second");
    std::thread::sleep(Duration::from_millis(500));
    fs::write(scene.workspace.join("first"), "").unwrap_or_else(|error| panic!("{error}"));
    fs::write(scene.workspace.join("second"), "").unwrap_or_else(|error| panic!("{error}"));
    for (child, own, other) in [(first, mine.path(), theirs.path()), (second, theirs.path(), mine.path())] {
        let out = child.wait_with_output().unwrap_or_else(|error| panic!("{error}"));
        let text = stderr(&out);
        let paths: Vec<String> = text
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|event| event["kind"] == "open" && event["result"] == "EACCES")
            .filter_map(|event| event["path"].as_str().map(str::to_owned))
            .collect();
        assert!(paths.contains(&own.display().to_string()), "{text}");
        assert!(!paths.contains(&other.display().to_string()), "another agent's refusal: {text}");
    }
}

/// `governor run --trust medium` of `script` (`governor` holds the global options), back
/// once the script has written `ready`: standalone with `--probes notify --trace`, else
/// through the daemon `governor` names, on its backend.
#[test]
fn a_run_killed_with_sigkill_leaves_no_audit_rule_of_its_own() {
    use std::io::BufRead as _;
    if !kernel_ready("a_run_killed_with_sigkill_leaves_no_audit_rule_of_its_own", 7) {
        return;
    }
    let scene = scene!();
    let store = scene.root.join("audit.db");
    let mut governor = Command::new(governor_bin());
    governor.arg("--audit-db").arg(&store).args(["run", "--trust", "medium", "--probes", "notify", "--verbose"]);
    let mut child = scene.spawn_script(&mut governor, "killed-run", "echo > ready; sleep 60");
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap_or_else(|| panic!("no stderr"))).lines();
    let session = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| {
            line.strip_prefix("governor: probes: audit session ")
                .and_then(|rest| rest.split(' ').next())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("no audit session named"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !scene.workspace.join("ready").exists() {
        assert!(Instant::now() < deadline, "the agent did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let audit_line = || {
        let out = Command::new(governor_bin()).arg("check").output().unwrap_or_else(|error| panic!("{error}"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find(|line| line.starts_with("audit: "))
            .unwrap_or_else(|| panic!("no audit line: {text}"))
            .to_owned()
    };
    let names = |line: &str| line.split(|c: char| !c.is_ascii_digit()).any(|word| word == session);
    // The agent's syscalls are recorded by the rules of the agents' login uid, which stay in
    // the kernel: none is its session's, so nothing is left for a killed run to delete.
    let running = audit_line();
    assert!(running.contains("exit rules for agents (login uid 2147483646) in"), "{running}");
    assert!(!names(&running), "session {session} has rules of its own: {running}");
    child.kill().unwrap_or_else(|error| panic!("{error}"));
    let _ = child.wait();
    // governor's warden kills the agent: then no process is in the session.
    let in_session = || {
        fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .any(|entry| fs::read_to_string(entry.path().join("sessionid")).is_ok_and(|id| id.trim() == session))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while in_session() {
        assert!(Instant::now() < deadline, "the killed run's agent is still running");
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = audit_line();
    assert!(!names(&after), "session {session} has rules after its run was killed: {after}");
    assert!(after.contains("exit rules for agents (login uid 2147483646) in"), "{after}");
    // And a later run's refusal by a file's mode is still recorded (the rules are shared).
    let private = private_file(&scene);
    let out = Command::new(governor_bin())
        .arg("--audit-db")
        .arg(&store)
        .args(["run", "--trust", "medium", "--probes", "notify", "--trace", "--workspace"])
        .arg(&scene.workspace)
        .args(["--", "cat"])
        .arg(&private)
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    let text = stderr(&out);
    let path = private.display().to_string();
    assert!(
        text.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .any(|event| event["path"] == path && event["source"] == "syscall-audit" && event["result"] == "EACCES"),
        "no syscall-audit refusal of {path}: {text}"
    );
}

fn start_ready(governor: &mut Command, scene: &governor_tests::Scene, id: &str, script: &str) -> std::process::Child {
    governor.args(["run", "--trust", "medium"]);
    if !governor.get_args().any(|arg| arg == "--socket") {
        governor.args(["--probes", "notify", "--trace"]);
    }
    let child = scene.spawn_script(governor, id, script);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !scene.workspace.join("ready").exists() {
        assert!(Instant::now() < deadline, "the agent did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// A file of the workspace that the ring may read but whose mode keeps the agent (uid 0
/// without capabilities) out: owned by nobody, mode 0600.
fn private_file(scene: &governor_tests::Scene) -> std::path::PathBuf {
    let private = scene.workspace.join("private");
    fs::write(&private, "not yours").unwrap_or_else(|error| panic!("{error}"));
    std::os::unix::fs::chown(&private, Some(65534), None).unwrap_or_else(|error| panic!("{error}"));
    fs::set_permissions(&private, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .unwrap_or_else(|error| panic!("{error}"));
    private
}

/// Lets the waiting agent go while a process that is not the agent writes and reads
/// `outsider` in the same workspace; the agent's output, once it has exited with 0.
fn go_beside_an_outsider(scene: &governor_tests::Scene, child: std::process::Child) -> std::process::Output {
    let outsider = scene.workspace.join("outsider");
    fs::write(&outsider, "not the agent").unwrap_or_else(|error| panic!("{error}"));
    fs::write(scene.workspace.join("go"), "").unwrap_or_else(|error| panic!("{error}"));
    let out = child.wait_with_output().unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let _ = fs::read(&outsider).unwrap_or_else(|error| panic!("{error}"));
    out
}
