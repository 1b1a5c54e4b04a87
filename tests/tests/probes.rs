//! The probes on this machine's kernel: what `governor run --trace` reports for an agent, what
//! it does not report (processes outside), what the cgroup socket hooks refuse, and that no
//! event is lost silently under a flood. The BPF LSM backend is tested in the VM
//! (`cargo xtask vm-test`), since this kernel cannot load LSM programs.

use std::{
    fs,
    net::TcpListener,
    process::{Command, Stdio},
};

use governor_tests::{governor_bin, require, scene, stderr, stdout};
use serde_json::Value;

/// The JSON events `--trace` printed on stderr.
fn events(stderr: &str) -> Vec<Value> {
    stderr.lines().filter(|line| line.starts_with('{')).filter_map(|line| serde_json::from_str(line).ok()).collect()
}

/// Whether `event` is a syscall's own report (raw syscall tracepoints, or fexit on the syscall
/// functions where the kernel runs BPF trampolines), not a hook's decision.
fn from_syscall(event: &Value) -> bool {
    event["source"] == "tracepoint" || event["source"] == "fentry"
}

/// The closing summary: (produced, delivered, dropped).
fn summary(stderr: &str) -> Option<(u64, u64, u64)> {
    let line = stderr.lines().find(|line| line.starts_with("governor: probes ("))?;
    let number = |word: &str| -> Option<u64> {
        let before = line.split(word).next()?;
        before.rsplit(|c: char| !c.is_ascii_digit()).find(|part| !part.is_empty())?.parse().ok()
    };
    Some((number(" events produced")?, number(" delivered")?, number(" dropped")?))
}

#[test]
fn an_agent_s_exec_open_and_connect_are_reported_with_their_results() {
    require!("an_agent_s_exec_open_and_connect_are_reported_with_their_results");
    let scene = scene!();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|error| panic!("{error}"));
    let port = listener.local_addr().map(|addr| addr.port()).unwrap_or(0);
    let file = scene.workspace.join("notes.md");
    fs::write(&file, "hello").unwrap_or_else(|error| panic!("{error}"));
    let secret = scene.home.join(".ssh/id_ed25519");
    let deep = governor_tests::relative_dir(&scene);
    let script = format!(
        "echo $$; /bin/true; cd {deep} && cat relative.md >/dev/null; cd /; cat {file} >/dev/null; \
         cat {secret} 2>/dev/null; exec {attempt} tcp-connect {port}",
        deep = deep.display(),
        file = file.display(),
        secret = secret.display(),
        attempt = scene.attempt.display(),
    );
    let output = scene.governor("high", &["--trace", "--verbose"], ["sh", "-c", &script]);
    let err = stderr(&output);
    let shell: u64 = stdout(&output).lines().next().and_then(|pid| pid.parse().ok()).unwrap_or_else(|| panic!("{err}"));
    let events = events(&err);
    let find = |kind: &str, path: &str| {
        events.iter().find(|event| event["kind"] == kind && event["path"].as_str() == Some(path) && from_syscall(event))
    };

    let exec = find("exec", "/bin/true").unwrap_or_else(|| panic!("no exec of /bin/true in {err}"));
    assert_eq!(exec["result"], "ok");
    assert_eq!(exec["argv"][0], "/bin/true");
    let open =
        find("open", &file.to_string_lossy()).unwrap_or_else(|| panic!("no open of the workspace file in {err}"));
    assert_eq!(open["result"], "ok");
    let denied = find("open", &secret.to_string_lossy()).unwrap_or_else(|| panic!("no open of the secret in {err}"));
    // Landlock refused it; the syscall's exit reports the errno the agent saw.
    assert_eq!(denied["result"], "EACCES");
    assert_ne!(denied["pid"].as_u64(), Some(shell), "cat runs in a child of the shell");
    governor_tests::assert_walked(&events, &deep, &err);
    let connect = events
        .iter()
        .find(|event| event["kind"] == "connect" && event["port"].as_u64() == Some(u64::from(port)))
        .unwrap_or_else(|| panic!("no connect to port {port} in {err}"));
    assert_eq!((connect["addr"].as_str(), connect["result"].as_str()), (Some("127.0.0.1"), Some("ok")));
    // The connect came from the exec'd attempt, which kept the shell's pid.
    assert_eq!(connect["pid"].as_u64(), Some(shell));
    // Every event is the agent's: one cgroup.
    let cgroup = exec["cgroup_id"].as_u64();
    assert!(events.iter().all(|event| event["cgroup_id"].as_u64() == cgroup), "{err}");
    let (produced, delivered, dropped) = summary(&err).unwrap_or_else(|| panic!("no summary in {err}"));
    assert_eq!((delivered, dropped), (produced, 0));
    assert_eq!(delivered as usize, events.len());
}

#[test]
fn a_busy_process_outside_any_agent_yields_no_event() {
    require!("a_busy_process_outside_any_agent_yields_no_event");
    let scene = scene!();
    let mut outsider = Command::new("sh")
        .args(["-c", "while :; do cat /etc/hostname; done"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("{error}"));
    let output =
        scene.governor("low", &["--trace"], ["sh", "-c", "for i in 1 2 3 4 5 6 7 8; do cat /etc/hostname; done"]);
    let _ = outsider.kill();
    let _ = outsider.wait();
    let err = stderr(&output);
    let events = events(&err);
    let hostname_opens = events.iter().filter(|event| event["path"] == "/etc/hostname").count();
    assert_eq!(hostname_opens, 8, "the agent's own opens, and not one of the outsider's: {err}");
    let outsider_pid = u64::from(outsider.id());
    assert!(events.iter().all(|event| event["pid"].as_u64() != Some(outsider_pid)), "{err}");
}

#[test]
fn the_cgroup_socket_hooks_refuse_denied_destinations_with_eperm() {
    require!("the_cgroup_socket_hooks_refuse_denied_destinations_with_eperm");
    let scene = scene!();
    // UDP from medium to anything but the resolvers.
    let output = scene.governor("medium", &["--trace"], [scene.attempt.as_os_str(), "udp-send".as_ref(), "9".as_ref()]);
    assert_eq!(stdout(&output).trim(), "EPERM");
    let err = stderr(&output);
    let refused = events(&err).into_iter().find(|event| event["kind"] == "sendmsg").unwrap_or_else(|| panic!("{err}"));
    assert_eq!((refused["verdict"].as_str(), refused["result"].as_str()), (Some("denied"), Some("EPERM")));
    assert_eq!(
        (refused["addr"].as_str(), refused["port"].as_u64(), refused["type"].as_str()),
        (Some("127.0.0.1"), Some(9), Some("dgram"))
    );
    assert_eq!(refused["source"], "cgroup-sock-addr");
    // TCP from high (which may connect anywhere) to a destination a policy denies (the rings
    // deny the cloud metadata address this way; a loopback listener stands in for it here):
    // refused before the handshake, though the listener is there.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|error| panic!("{error}"));
    let port = listener.local_addr().map(|addr| addr.port()).unwrap_or(0);
    let overlay = scene.root.join("deny.toml");
    let rule = format!("[[network.deny]]\nto = \"127.0.0.1/32\"\nport = {port}\nreason = \"stand-in for metadata\"\n");
    fs::write(&overlay, rule).unwrap_or_else(|error| panic!("{error}"));
    let port = port.to_string();
    let open = scene.governor("high", &[], [scene.attempt.as_os_str(), "tcp-connect".as_ref(), port.as_ref()]);
    assert_eq!(stdout(&open).trim(), "ok", "without the rule the listener answers: {}", stderr(&open));
    let overlay = overlay.to_string_lossy().into_owned();
    // Which hook refuses depends on the backend. With BPF LSM, socket_connect runs first
    // (security_socket_connect in __sys_connect, before the protocol's connect runs the cgroup
    // hook: net/socket.c) and refuses it itself; the cgroup hook is what refuses it without.
    for (backend, source) in [("tracepoint", "cgroup-sock-addr"), ("lsm", "lsm")] {
        let output = scene.governor(
            "high",
            &["--trace", "--probes", backend, "--policy", &overlay],
            [scene.attempt.as_os_str(), "tcp-connect".as_ref(), port.as_ref()],
        );
        let err = stderr(&output);
        if backend == "lsm" && output.status.code() == Some(2) && err.contains("--probes lsm:") {
            println!("the LSM half is not run here (its programs do not load); the 6.12 VM runs it");
            continue;
        }
        assert_eq!(stdout(&output).trim(), "EPERM", "{backend}: {err}");
        let events = events(&err);
        let refused = events
            .iter()
            .find(|event| event["kind"] == "connect" && event["source"] == source)
            .unwrap_or_else(|| panic!("{backend}: {err}"));
        assert_eq!(
            (refused["addr"].as_str(), refused["verdict"].as_str()),
            (Some("127.0.0.1"), Some("denied")),
            "{err}"
        );
        if backend == "tracepoint" {
            // The LSM program reports no socket type (it reads no `struct socket` field).
            assert_eq!(refused["type"], "stream", "{err}");
        }
        // And the syscall's own report says what the agent saw.
        let syscall = events.iter().find(|event| event["kind"] == "connect" && from_syscall(event));
        assert_eq!(syscall.and_then(|event| event["result"].as_str()), Some("EPERM"), "{backend}: {err}");
    }
}

#[test]
fn observe_mode_reports_what_it_would_deny_and_allows_it() {
    require!("observe_mode_reports_what_it_would_deny_and_allows_it");
    let scene = scene!();
    let output = scene.governor(
        "medium",
        &["--trace", "--observe"],
        [scene.attempt.as_os_str(), "udp-send".as_ref(), "9".as_ref()],
    );
    let err = stderr(&output);
    assert_eq!(stdout(&output).trim(), "ok", "{err}");
    let event = events(&err).into_iter().find(|event| event["kind"] == "sendmsg").unwrap_or_else(|| panic!("{err}"));
    assert_eq!((event["verdict"].as_str(), event["result"].as_str()), (Some("would-deny"), Some("ok")));
}

#[test]
fn a_flood_of_opens_loses_nothing_silently() {
    require!("a_flood_of_opens_loses_nothing_silently");
    let scene = scene!();
    let opens = governor_tests::flood_opens();
    let output = Command::new(governor_bin())
        .args(["run", "--trust", "low", "--verbose", "--workspace"])
        .arg(&scene.workspace)
        .arg("--")
        .arg(&scene.attempt)
        .args(["flood", "/etc/hostname", &opens.to_string()])
        .env("HOME", &scene.home)
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    let err = stderr(&output);
    assert_eq!(stdout(&output).trim(), "ok", "{err}");
    let (produced, delivered, dropped) = summary(&err).unwrap_or_else(|| panic!("no summary in {err}"));
    // Every open produced an event (plus the loader's and the exec's own).
    assert!(produced > opens, "produced {produced}: {err}");
    assert!(produced < opens + 100, "produced {produced}: {err}");
    assert_eq!(delivered + dropped, produced, "{err}");
    // Each drop was reported as it was counted, on lines of its own.
    let reported: u64 =
        events(&err).iter().filter(|event| event["kind"] == "lost").filter_map(|event| event["count"].as_u64()).sum();
    assert_eq!(reported, dropped, "{err}");
    println!("flood: {produced} produced, {delivered} delivered, {dropped} dropped");
}

#[test]
fn a_stalled_consumer_counts_and_reports_every_dropped_event() {
    require!("a_stalled_consumer_counts_and_reports_every_dropped_event");
    let scene = scene!();
    let opens = governor_tests::flood_opens();
    let id = format!("stall-{}", std::process::id());
    // The agent floods only once governor (not the agent) is stopped, and governor goes on
    // only once the whole flood is done: every event after the ring buffer's first 16 MiB
    // must be dropped, counted and reported, however slow or loaded the machine. (Stopping
    // governor for a fixed time once the flood ran left it to the machine's speed whether
    // the buffer filled at all.)
    let go = scene.workspace.join("go");
    let script = format!(
        "while [ ! -e {go} ]; do sleep 0.01; done; exec {attempt} flood /etc/hostname {opens}",
        go = go.display(),
        attempt = scene.attempt.display(),
    );
    let child = Command::new(governor_bin())
        .args(["run", "--trust", "low", "--verbose", "--agent-id", &id, "--workspace"])
        .arg(&scene.workspace)
        .args(["--", "sh", "-c", &script])
        .env("HOME", &scene.home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("{error}"));
    let pid = i32::try_from(child.id()).unwrap_or(0);
    // Loading the probes can take seconds on a loaded machine: the wait is long.
    let procs = governor_tests::cgroup2_root().join("governor").join(&id).join("cgroup.procs");
    let agents = || fs::read_to_string(&procs).unwrap_or_default().lines().count();
    let waited = |done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !done() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        done()
    };
    if !waited(&|| agents() > 0) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        panic!("the agent did not start within 120 s");
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let released = fs::write(&go, "");
    // An exited task leaves cgroup.procs at once, reaped or not.
    let finished = released.is_ok() && waited(&|| agents() == 0);
    if !finished {
        // Neither a stopped governor nor its agent is left behind by a failure: killed
        // governor, its warden kills the agent.
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        panic!("the agent's flood did not end within 120 s ({released:?})");
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let output = child.wait_with_output().unwrap_or_else(|error| panic!("{error}"));
    let err = stderr(&output);
    assert_eq!(stdout(&output).trim(), "ok", "{err}");
    let (produced, delivered, dropped) = summary(&err).unwrap_or_else(|| panic!("no summary in {err}"));
    assert!(dropped > 0, "the ring buffer never filled: {err}");
    assert_eq!(delivered + dropped, produced, "{err}");
    let reported: u64 =
        events(&err).iter().filter(|event| event["kind"] == "lost").filter_map(|event| event["count"].as_u64()).sum();
    assert_eq!(reported, dropped, "every drop is reported: {err}");
    println!("stalled flood: {produced} produced, {delivered} delivered, {dropped} dropped and reported");
}
