//! The BPF LSM backend, on a kernel that runs BPF LSM programs: `cargo xtask vm-test` boots
//! Debian's 6.1 kernel (lsm=landlock,bpf) and runs this file there. On a kernel where the LSM
//! programs do not load (this repository's CI host: BPF trampolines are refused) every test
//! says so and skips; the VM run is where they count.
//!
//! That kernel has Landlock ABI 2 (no TCP rules, no scopes), so the rings run with
//! `--best-effort`; what is tested here is what the LSM hooks add.

use std::{
    fs,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use governor_tests::{Scene, governor_bin, scene, stderr, stdout};
use serde_json::Value;

/// Whether `--probes lsm` loads here; prints why the calling test skips when not.
fn lsm_loads(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipping {test}: needs root");
        return false;
    }
    let output = Command::new(governor_bin())
        .args(["run", "--probes", "lsm", "--best-effort", "--workspace", "/tmp", "--", "true"])
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    if output.status.code() == Some(2) && stderr(&output).contains("--probes lsm:") {
        println!("skipping {test}: {}", stderr(&output).trim().trim_start_matches("governor: "));
        return false;
    }
    true
}

macro_rules! require_lsm {
    ($name:expr) => {
        if !lsm_loads($name) {
            return;
        }
    };
}

fn events(stderr: &str) -> Vec<Value> {
    stderr.lines().filter(|line| line.starts_with('{')).filter_map(|line| serde_json::from_str(line).ok()).collect()
}

fn run(scene: &Scene, extra: &[&str], args: &[&str]) -> Output {
    let mut all = vec!["--probes", "lsm", "--best-effort", "--trace"];
    all.extend_from_slice(extra);
    scene.governor("low", &all, args)
}

#[test]
fn lsm_backend_reports_exec_open_and_a_landlock_denial() {
    require_lsm!("lsm_backend_reports_exec_open_and_a_landlock_denial");
    let scene = scene!();
    let secret = scene.home.join(".ssh/id_ed25519");
    let script = format!("/bin/true; cat {} 2>/dev/null; exit 0", secret.display());
    let output = run(&scene, &["--verbose"], &["sh", "-c", &script]);
    let err = stderr(&output);
    assert!(err.contains("probes: lsm backend") || err.contains("probes: lsm+fentry backend"), "{err}");
    let events = events(&err);
    assert!(events.iter().any(|e| e["kind"] == "exec" && e["result"] == "ok" && e["argv"][0] == "/bin/true"), "{err}");
    let denied = events.iter().find(|e| e["kind"] == "open" && e["path"].as_str() == Some(&*secret.to_string_lossy()));
    assert_eq!(denied.map(|e| e["result"].clone()), Some(Value::from("EACCES")), "{err}");
}

#[test]
fn an_exec_denied_binary_is_refused_in_the_kernel_under_any_name() {
    require_lsm!("an_exec_denied_binary_is_refused_in_the_kernel_under_any_name");
    let scene = scene!();
    let tool = scene.workspace.join("tool");
    fs::copy(&scene.attempt, &tool).unwrap_or_else(|error| panic!("{error}"));
    // The same inode under another name.
    fs::hard_link(&tool, scene.workspace.join("renamed")).unwrap_or_else(|error| panic!("{error}"));
    let overlay = scene.root.join("deny.toml");
    fs::write(&overlay, format!("[[deny_exec]]\npath = \"{}\"\nreason = \"not for agents\"\n", tool.display()))
        .unwrap_or_else(|error| panic!("{error}"));
    let overlay = overlay.to_string_lossy().into_owned();
    for name in ["tool", "renamed"] {
        let path = scene.workspace.join(name);
        let output = run(&scene, &["--policy", &overlay], &[&path.to_string_lossy(), "ids"]);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(126), "{name}: {err}");
        let decisions: Vec<Value> = events(&err).into_iter().filter(|e| e["source"] == "lsm").collect();
        assert_eq!(decisions.len(), 1, "{name}: one LSM decision: {err}");
        assert_eq!((decisions[0]["kind"].as_str(), decisions[0]["verdict"].as_str()), (Some("exec"), Some("denied")));
    }
    // Without the rule it runs.
    let output = run(&scene, &[], &[&tool.to_string_lossy(), "ids"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

#[test]
fn a_secret_hard_linked_into_the_workspace_is_refused_by_inode() {
    require_lsm!("a_secret_hard_linked_into_the_workspace_is_refused_by_inode");
    let scene = scene!();
    let secret = scene.home.join(".ssh/id_ed25519");
    let link = scene.workspace.join("innocent.txt");
    // Planted before the agent starts, by someone outside: Landlock allows the workspace, so
    // only the inode says what this is.
    fs::hard_link(&secret, &link).unwrap_or_else(|error| panic!("{error}"));
    let output = run(&scene, &[], &[&scene.attempt.to_string_lossy(), "read", &link.to_string_lossy()]);
    let err = stderr(&output);
    assert_eq!(stdout(&output).trim(), "EPERM", "{err}");
    let decisions: Vec<Value> = events(&err).into_iter().filter(|e| e["source"] == "lsm").collect();
    assert_eq!(decisions.len(), 1, "one LSM decision: {err}");
    assert_eq!((decisions[0]["kind"].as_str(), decisions[0]["verdict"].as_str()), (Some("open"), Some("denied")));
    assert_eq!(decisions[0]["path"].as_str(), Some(&*link.to_string_lossy()), "{err}");
    // In observe mode the same read goes through, reported as would-deny.
    let output = run(&scene, &["--observe"], &[&scene.attempt.to_string_lossy(), "read", &link.to_string_lossy()]);
    let err = stderr(&output);
    assert_eq!(stdout(&output).trim(), "ok", "{err}");
    let decision = events(&err).into_iter().find(|e| e["source"] == "lsm").unwrap_or_else(|| panic!("{err}"));
    assert_eq!(decision["verdict"], "would-deny", "{err}");
    // An ordinary workspace file is not affected.
    let plain = scene.workspace.join("plain.txt");
    fs::write(&plain, "x").unwrap_or_else(|error| panic!("{error}"));
    let output = run(&scene, &[], &[&scene.attempt.to_string_lossy(), "read", &plain.to_string_lossy()]);
    assert_eq!(stdout(&output).trim(), "ok", "{}", stderr(&output));
}

#[test]
fn an_earlier_programs_denial_is_respected() {
    require_lsm!("an_earlier_programs_denial_is_respected");
    let scene = scene!();
    let secret = scene.home.join(".ssh/id_ed25519");
    let link = scene.workspace.join("innocent.txt");
    fs::hard_link(&secret, &link).unwrap_or_else(|error| panic!("{error}"));
    let marker = scene.workspace.join("second-started");
    // First governor: its agent waits until a second governor has attached its own LSM
    // programs after the first's, then opens the linked secret. The first's file_open denies
    // it; the second's comes later in the chain, for a process that is not its agent. On
    // x86-64 the BPF trampoline stops at the first non-zero return (invoke_bpf_mod_ret in
    // arch/x86/net/bpf_jit_comp.c), so the programs' own check of the previous verdict is a
    // second line; what this asserts is the outcome: the denial stands with both loaded.
    let script = format!(
        "while [ ! -e {marker} ]; do sleep 0.05; done; exec {attempt} read {link}",
        marker = marker.display(),
        attempt = scene.attempt.display(),
        link = link.display()
    );
    let first = Command::new(governor_bin())
        .args(["run", "--trust", "low", "--probes", "lsm", "--best-effort", "--workspace"])
        .arg(&scene.workspace)
        .args(["--", "sh", "-c", &script])
        .env("HOME", &scene.home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("{error}"));
    // Wait until the first agent runs (its programs are attached), then start the second.
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && !governor_tests::agents_running() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = Command::new(governor_bin())
        .args(["run", "--trust", "low", "--probes", "lsm", "--best-effort", "--workspace"])
        .arg(&scene.workspace)
        .args(["--", "sh", "-c"])
        .arg(format!("touch {}; sleep 2", marker.display()))
        .env("HOME", &scene.home)
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    let first = first.wait_with_output().unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert_eq!(stdout(&first).trim(), "EPERM", "{}", stderr(&first));
}

#[test]
fn lsm_backend_flood_loses_nothing_silently() {
    require_lsm!("lsm_backend_flood_loses_nothing_silently");
    let scene = scene!();
    let opens = governor_tests::flood_opens();
    let target = scene.workspace.join("flood.txt");
    fs::write(&target, "x").unwrap_or_else(|error| panic!("{error}"));
    let output = scene.governor(
        "low",
        &["--probes", "lsm", "--best-effort", "--verbose"],
        [scene.attempt.as_os_str(), "flood".as_ref(), target.as_os_str(), opens.to_string().as_ref()],
    );
    let err = stderr(&output);
    let line = err.lines().find(|line| line.starts_with("governor: probes (lsm")).unwrap_or_else(|| panic!("{err}"));
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|part| !part.is_empty())
        .filter_map(|part| part.parse().ok())
        .collect();
    let [produced, delivered, dropped, ..] = numbers[..] else { panic!("{line}") };
    assert!(produced > opens, "{line}");
    assert_eq!(delivered + dropped, produced, "{line}");
    let reported: u64 = events(&err).iter().filter(|e| e["kind"] == "lost").filter_map(|e| e["count"].as_u64()).sum();
    assert_eq!(reported, dropped, "{err}");
    println!("lsm flood: {line}");
}

#[test]
fn a_policy_deny_rule_on_files_is_enforced_by_inode_in_the_kernel() {
    require_lsm!("a_policy_deny_rule_on_files_is_enforced_by_inode_in_the_kernel");
    let scene = scene!();
    let private = scene.workspace.join("private");
    fs::create_dir_all(private.join("deep")).unwrap_or_else(|error| panic!("{error}"));
    let notes = private.join("deep/notes.txt");
    fs::write(&notes, "x").unwrap_or_else(|error| panic!("{error}"));
    // The same file under a name the rule's pattern does not cover.
    let alias = scene.workspace.join("alias.txt");
    fs::hard_link(&notes, &alias).unwrap_or_else(|error| panic!("{error}"));
    let plain = scene.workspace.join("plain.txt");
    fs::write(&plain, "x").unwrap_or_else(|error| panic!("{error}"));
    let policy = scene.root.join("rules.toml");
    fs::write(
        &policy,
        format!(
            "[[rule]]\nid = \"private-notes\"\nkind = \"open\"\npath = [\"{}/**\"]\naction = \"deny\"\n\
             severity = \"medium\"\nreason = \"not for agents\"\n",
            private.display()
        ),
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let policy = policy.to_string_lossy().into_owned();
    let attempt = scene.attempt.to_string_lossy().into_owned();
    for (path, expected) in [(&notes, "EPERM"), (&alias, "EPERM"), (&plain, "ok")] {
        let output = run(&scene, &["--policy", &policy, "--verbose"], &[&attempt, "read", &path.to_string_lossy()]);
        let err = stderr(&output);
        assert_eq!(stdout(&output).trim(), expected, "{}: {err}", path.display());
        // The directory under it and the file, in the LSM's map.
        assert!(err.contains("deny rules enforced in the kernel: 0 destinations, 2 files"), "{err}");
        if expected == "EPERM" {
            let decision = events(&err).into_iter().find(|e| e["source"] == "lsm").unwrap_or_else(|| panic!("{err}"));
            assert_eq!((decision["kind"].as_str(), decision["verdict"].as_str()), (Some("open"), Some("denied")));
            // The engine names the rule where the path matches it; the alias is refused by
            // its inode alone.
            if path == &notes {
                assert_eq!(decision["rule"], "private-notes", "{err}");
            }
        }
    }
}

#[test]
fn a_daemon_with_bpf_lsm_denies_by_inode_and_replaces_its_deny_rules_on_reload() {
    require_lsm!("a_daemon_with_bpf_lsm_denies_by_inode_and_replaces_its_deny_rules_on_reload");
    let scene = scene!();
    let rings = scene.root.join("rings");
    fs::create_dir_all(&rings).unwrap_or_else(|error| panic!("{error}"));
    // The shipped rings, compiled into this test (the VM has the test binaries, not the
    // repository), with a rules.toml of the test's own beside them.
    for (name, text) in [
        ("low", include_str!("../../policies/rings/low.toml")),
        ("medium", include_str!("../../policies/rings/medium.toml")),
        ("high", include_str!("../../policies/rings/high.toml")),
        ("admin", include_str!("../../policies/rings/admin.toml")),
        ("secrets", include_str!("../../policies/rings/secrets.toml")),
    ] {
        fs::write(rings.join(format!("{name}.toml")), text).unwrap_or_else(|error| panic!("{error}"));
    }
    let private = scene.workspace.join("private");
    fs::create_dir_all(&private).unwrap_or_else(|error| panic!("{error}"));
    let notes = private.join("notes.txt");
    fs::write(&notes, "x").unwrap_or_else(|error| panic!("{error}"));
    let rule = format!(
        "[[rule]]\nid = \"private-notes\"\nkind = \"open\"\npath = [\"{}/**\"]\naction = \"deny\"\n\
         severity = \"medium\"\nreason = \"not for agents\"\n",
        private.display()
    );
    fs::write(rings.join("rules.toml"), &rule).unwrap_or_else(|error| panic!("{error}"));
    let mut daemon = governor_tests::Daemon::start_with(&scene.root, "lsm", Some(&rings), &["--probes", "lsm"]);
    let attempt = scene.attempt.to_string_lossy().into_owned();
    let script = format!(
        "{attempt} read {notes}; while [ ! -e step ]; do sleep 0.05; done; {attempt} read {notes}",
        notes = notes.display()
    );
    let mut command = daemon.governor();
    command
        .args(["run", "--trust", "low", "--best-effort", "--agent-id", "lsm-daemon", "--workspace"])
        .arg(&scene.workspace)
        .args(["--", "sh", "-c", &script])
        .env("HOME", &scene.home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = command.spawn().unwrap_or_else(|error| panic!("{error}"));
    // The first read is refused by inode, in the kernel, for this daemon's agent.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = daemon
            .governor()
            .args(["audit", "query", "--agent", "lsm-daemon", "--format", "jsonl"])
            .output()
            .unwrap_or_else(|error| panic!("{error}"));
        let rows: Vec<Value> = stdout(&out).lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
        if rows.iter().any(|row| row["path"] == notes.to_string_lossy().as_ref() && row["rule"] == "private-notes") {
            break;
        }
        assert!(Instant::now() < deadline, "no denied open of {}: {}", notes.display(), daemon.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    // The rule goes: after a reload the kernel's map no longer holds the inode.
    fs::write(rings.join("rules.toml"), "").unwrap_or_else(|error| panic!("{error}"));
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_log("policy reloaded", Duration::from_secs(10));
    fs::write(scene.workspace.join("step"), "").unwrap_or_else(|error| panic!("{error}"));
    let out = child.wait_with_output().unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(stdout(&out), "EPERM\nok\n", "{}\n{}", stderr(&out), daemon.log_text());
}

#[test]
fn listen_on_an_unbound_socket_is_refused_where_the_ring_binds_no_port() {
    require_lsm!("listen_on_an_unbound_socket_is_refused_where_the_ring_binds_no_port");
    let scene = scene!();
    let attempt = scene.attempt.to_string_lossy().into_owned();
    // medium and high bind no TCP port: a listen before any bind would take one the kernel
    // picks, which Landlock's bind rules never see.
    for ring in ["medium", "high"] {
        let output = scene.governor(ring, &["--probes", "lsm", "--best-effort", "--trace"], [&*attempt, "tcp-listen"]);
        let err = stderr(&output);
        assert_eq!(stdout(&output).trim(), "EPERM", "{ring}: {err}");
        let decisions: Vec<Value> =
            events(&err).into_iter().filter(|e| e["source"] == "lsm" && e["kind"] == "listen").collect();
        assert_eq!(decisions.len(), 1, "{ring}: one LSM decision: {err}");
        assert_eq!(decisions[0]["verdict"], "denied", "{ring}: {err}");
        // A UNIX server in the workspace is no inet socket: it listens.
        let socket = scene.workspace.join(format!("{ring}.sock")).to_string_lossy().into_owned();
        let output = scene.governor(ring, &["--probes", "lsm", "--best-effort"], [&*attempt, "unix-listen", &socket]);
        assert_eq!(stdout(&output).trim(), "ok", "{ring}: {}", stderr(&output));
    }
    // admin binds any port: the same listen goes through.
    let output = scene.governor("admin", &["--probes", "lsm", "--best-effort"], [&*attempt, "tcp-listen"]);
    assert_eq!(stdout(&output).trim(), "ok", "{}", stderr(&output));
}

/// Runs `sh -c SCRIPT` in ring `trust` under the LSM backend (traced), calling `bind` only
/// once the agent runs, and the script only after that: what `bind` makes is bound after
/// launch, when the mount namespace's masks are already made.
fn run_then_bind(scene: &Scene, trust: &str, extra: &[&str], script: &str, bind: impl FnOnce()) -> Output {
    let started = scene.workspace.join("started");
    let go = scene.workspace.join("go");
    let _ = fs::remove_file(&started);
    let _ = fs::remove_file(&go);
    let script = format!("touch started; while [ ! -e go ]; do sleep 0.05; done; {script}");
    let mut governor = Command::new(governor_bin());
    governor.args(["run", "--trust", trust, "--probes", "lsm", "--best-effort", "--trace"]).args(extra);
    let child = scene.spawn_script(&mut governor, &format!("bound-later-{trust}"), &script);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !started.exists() {
        assert!(Instant::now() < deadline, "the agent did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    bind();
    fs::write(&go, "").unwrap_or_else(|error| panic!("{error}"));
    child.wait_with_output().unwrap_or_else(|error| panic!("{error}"))
}

#[test]
fn a_unix_socket_bound_after_launch_is_refused_unless_the_agent_may_reach_it() {
    require_lsm!("a_unix_socket_bound_after_launch_is_refused_unless_the_agent_may_reach_it");
    use std::os::unix::{
        fs::PermissionsExt as _,
        net::{UnixDatagram, UnixListener},
    };
    let scene = scene!();
    let attempt = scene.attempt.to_string_lossy().into_owned();
    let run = std::path::PathBuf::from("/run");
    let name = |what: &str| run.join(format!("governor-{what}-{}.sock", std::process::id()));
    let (stream, dgram, listed) = (name("later"), name("later-dgram"), name("listed"));
    for path in [&stream, &dgram, &listed] {
        let _ = fs::remove_file(path);
    }
    // Bound before launch and listed by the policy: reachable, by its inode.
    let _listed = UnixListener::bind(&listed).unwrap_or_else(|error| panic!("{error}"));
    let policy = scene.root.join("unix.toml");
    fs::write(&policy, format!("[[unix.connect]]\npath = \"{}\"\nreason = \"a listed service\"\n", listed.display()))
        .unwrap_or_else(|error| panic!("{error}"));
    let policy = policy.to_string_lossy().into_owned();
    let mut bound = Vec::new();
    // A host service's socket bound while the agent runs, mode 0666 (no file permission
    // stands in the way): refused by its path, and by a symlink in the workspace.
    let output = run_then_bind(
        &scene,
        "low",
        &["--policy", &policy],
        &format!(
            "{attempt} unix-connect {}; {attempt} unix-connect link; {attempt} unix-connect {}",
            stream.display(),
            listed.display()
        ),
        || {
            let listener = UnixListener::bind(&stream).unwrap_or_else(|error| panic!("{error}"));
            fs::set_permissions(&stream, fs::Permissions::from_mode(0o666)).unwrap_or_else(|error| panic!("{error}"));
            std::os::unix::fs::symlink(&stream, scene.workspace.join("link")).unwrap_or_else(|error| panic!("{error}"));
            bound.push(listener);
        },
    );
    let err = stderr(&output);
    assert_eq!(stdout(&output), "EACCES\nEACCES\nok\n", "{err}");
    let refusals: Vec<Value> =
        events(&err).into_iter().filter(|e| e["source"] == "lsm" && e["family"] == "unix").collect();
    assert_eq!(refusals.len(), 2, "one LSM refusal per connect: {err}");
    for event in &refusals {
        assert_eq!(
            (event["kind"].as_str(), event["verdict"].as_str(), event["result"].as_str(), event["path"].as_str()),
            (Some("connect"), Some("denied"), Some("EACCES"), stream.to_str()),
            "{err}"
        );
    }
    // A datagram to a socket bound after launch; the agent's own sockets work.
    let output = run_then_bind(
        &scene,
        "low",
        &[],
        &format!("{attempt} unix-send {}; {attempt} unix-self own.sock", dgram.display()),
        || {
            let socket = UnixDatagram::bind(&dgram).unwrap_or_else(|error| panic!("{error}"));
            fs::set_permissions(&dgram, fs::Permissions::from_mode(0o666)).unwrap_or_else(|error| panic!("{error}"));
            std::mem::forget(socket);
        },
    );
    let err = stderr(&output);
    assert_eq!(stdout(&output), "EACCES\nok\n", "{err}");
    assert!(
        events(&err)
            .iter()
            .any(|e| e["source"] == "lsm" && e["kind"] == "sendmsg" && e["path"] == dgram.to_str().unwrap_or("")),
        "the refused datagram is reported: {err}"
    );
    // admin is not restricted.
    let output = scene.governor(
        "admin",
        &["--probes", "lsm", "--best-effort"],
        [&*attempt, "unix-connect", &stream.to_string_lossy()],
    );
    assert_eq!(stdout(&output).trim(), "ok", "{}", stderr(&output));
    for path in [&stream, &dgram, &listed] {
        let _ = fs::remove_file(path);
    }
}
