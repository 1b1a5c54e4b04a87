//! `governor daemon`: one daemon supervising many `governor run`s, surviving its own SIGKILL
//! without losing its agents, refusing whoever may not control it, reloading its policy on
//! SIGHUP, and serving metrics that move with the events.

use std::{
    fs,
    path::Path,
    process::{Child, Command, Output},
    time::{Duration, Instant},
};

use governor_tests::{
    Daemon, Scene, cgroup2_root, frozen, kill_agent_cgroup, prometheus, require, scene, stderr, stdout,
    syscall_tracepoint_links, wait_until,
};

fn output(command: &mut Command) -> Output {
    command.output().unwrap_or_else(|error| panic!("{error}"))
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|error| panic!("{error}: {text}"))
}

/// `governor run` through `daemon`, in the background.
fn spawn_run(daemon: &Daemon, scene: &Scene, trust: &str, agent: &str, script: &str) -> Child {
    scene.spawn_script(daemon.governor().args(["run", "--trust", trust]), agent, script)
}

/// Rows of `governor audit query --agent AGENT` (as JSON objects).
fn events_of(daemon: &Daemon, agent: &str) -> Vec<serde_json::Value> {
    let out =
        output(daemon.governor().args(["audit", "query", "--agent", agent, "--format", "jsonl", "--limit", "100000"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out).lines().map(json).collect()
}

fn incidents_of(daemon: &Daemon, agent: &str) -> Vec<serde_json::Value> {
    let out = output(daemon.governor().args(["audit", "incidents", "--agent", agent, "--format", "jsonl"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out).lines().map(json).collect()
}

fn actions_of(daemon: &Daemon, agent: &str) -> Vec<serde_json::Value> {
    let out = output(daemon.governor().args(["audit", "actions", "--agent", agent, "--format", "jsonl"]));
    if stderr(&out).contains("not in the audit store") {
        return Vec::new();
    }
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out).lines().map(json).collect()
}

/// Waits until the daemon has recorded the agent's start.
fn wait_registered(daemon: &Daemon, agent: &str) {
    wait_until("the agent registered", Duration::from_secs(20), || {
        actions_of(daemon, agent).iter().any(|row| row["action"] == "start")
    });
}

#[test]
fn twenty_concurrent_agents_of_mixed_trust_are_each_recorded_under_their_own_id() {
    require!("twenty_concurrent_agents_of_mixed_trust_are_each_recorded_under_their_own_id");
    let scene = scene!();
    let daemon = Daemon::start(&scene.root, "twenty", &[]);
    let rings = ["low", "medium", "high", "admin"];
    let id = |n: usize| format!("many-{}-{n}", std::process::id());
    for n in 0..20 {
        fs::write(scene.workspace.join(format!("marker-{n}")), "x").unwrap_or_else(|error| panic!("{error}"));
    }
    // Each agent reads its own marker, then waits for the test to have looked at it running:
    // blocked reading a line from a FIFO, which makes no events (a polling loop's execs
    // could fill the ring buffer while twenty agents start on a loaded machine).
    let release = scene.workspace.join("release");
    let fifo = std::ffi::CString::new(release.to_string_lossy().as_bytes()).unwrap_or_else(|error| panic!("{error}"));
    // SAFETY: mkfifo(3) with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o666) }, 0, "mkfifo");
    let children: Vec<Child> = (0..20)
        .map(|n| {
            let script = format!("cat marker-{n} >/dev/null; read line < release");
            spawn_run(&daemon, &scene, rings[n % 4], &id(n), &script)
        })
        .collect();
    let mut listed = serde_json::Value::Null;
    wait_until("20 running agents in governor status", Duration::from_secs(60), || {
        let out = output(daemon.governor().args(["status", "--format", "json"]));
        listed = json(&stdout(&out));
        let running = listed["agents"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|agent| {
                agent["state"] == "running" && agent["agent"].as_str().is_some_and(|a| a.starts_with("many-"))
            })
            .count();
        running == 20
    });
    for n in 0..20 {
        let entry = listed["agents"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|agent| agent["agent"] == id(n).as_str())
            .unwrap_or_else(|| panic!("{} not in status: {listed}", id(n)));
        assert_eq!(entry["trust"], rings[n % 4], "{entry}");
    }
    // One line each (the shell's read takes a pipe's bytes one at a time); the FIFO stays open
    // for writing until all have exited, so a late reader still finds its line.
    let mut writer = fs::OpenOptions::new().write(true).open(&release).unwrap_or_else(|error| panic!("{error}"));
    std::io::Write::write_all(&mut writer, "go\n".repeat(20).as_bytes()).unwrap_or_else(|error| panic!("{error}"));
    for (n, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(out.status.code(), Some(0), "agent {n}: {}", stderr(&out));
    }
    drop(writer);
    for n in 0..20 {
        let rows = events_of(&daemon, &id(n));
        let opened: Vec<String> = rows
            .iter()
            .filter(|row| row["kind"] == "open")
            .filter_map(|row| row["path"].as_str())
            .filter(|path| path.contains("marker-"))
            .map(|path| path.rsplit('/').next().unwrap_or(path).to_owned())
            .collect();
        assert_eq!(opened, [format!("marker-{n}")], "agent {n} has exactly its own open, under its own id");
        let actions = actions_of(&daemon, &id(n));
        let names: Vec<&str> = actions.iter().filter_map(|row| row["action"].as_str()).collect();
        assert_eq!(names, ["start", "exit"], "agent {n}");
        assert!(actions[0]["why"].as_str().is_some_and(|why| why.ends_with("(via governor daemon)")), "{actions:?}");
        assert_eq!(actions[1]["why"], "exit status 0", "{actions:?}");
    }
}

#[test]
fn a_restarted_daemon_readopts_running_agents_and_a_violation_still_suspends() {
    require!("a_restarted_daemon_readopts_running_agents_and_a_violation_still_suspends");
    let scene = scene!();
    let mut daemon = Daemon::start(&scene.root, "restart", &[]);
    let agent = format!("adopted-{}", std::process::id());
    // Five refusals in ten seconds suspend a medium agent (repeated-kernel-denials), once the
    // test says go: after the daemon that registered it is gone and a new one has started.
    // Exactly five: a sixth could be in flight before the freeze and raise a second incident.
    let script =
        "while [ ! -e go ]; do sleep 0.05; done; for i in 1 2 3 4 5; do cat /etc/shadow 2>/dev/null; done; sleep 60";
    let child = spawn_run(&daemon, &scene, "medium", &agent, script);
    wait_registered(&daemon, &agent);
    daemon.kill_hard();
    std::thread::sleep(Duration::from_millis(300));
    let mut daemon = Daemon::start(&scene.root, "restart", &[]);
    daemon.wait_for_log("agent adopted", Duration::from_secs(5));
    fs::write(scene.workspace.join("go"), "").unwrap_or_else(|error| panic!("{error}"));
    wait_until("the adopted agent frozen by its rule", Duration::from_secs(20), || frozen(&agent));
    wait_until("its incident recorded", Duration::from_secs(5), || incidents_of(&daemon, &agent).len() == 2);
    let incidents = incidents_of(&daemon, &agent);
    let rules: Vec<&str> = incidents.iter().filter_map(|row| row["rule"].as_str()).collect();
    assert_eq!(rules, ["supervisor-gap", "repeated-kernel-denials"], "{incidents:?}");
    assert!(incidents[0]["reason"].as_str().unwrap_or("").contains("no supervisor for"), "{incidents:?}");
    let out = output(daemon.governor().args(["status", "--format", "json"]));
    let status = json(&stdout(&out));
    let entry = status["agents"].as_array().into_iter().flatten().find(|row| row["agent"] == agent.as_str()).cloned();
    assert_eq!(entry.map(|row| row["state"].clone()), Some("suspended".into()), "{status}");
    // Still controllable through the new daemon, which records who did it.
    let out = output(daemon.governor().args(["kill", &agent, "--reason", "test over"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = child.wait_with_output().unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(out.status.code(), Some(137), "{}", stderr(&out));
    let actions: Vec<(String, String)> = actions_of(&daemon, &agent)
        .iter()
        .map(|row| (row["action"].as_str().unwrap_or("").to_owned(), row["actor"].as_str().unwrap_or("").to_owned()))
        .collect();
    let names: Vec<&str> = actions.iter().map(|(action, _)| action.as_str()).collect();
    assert_eq!(names, ["start", "adopt", "suspend", "kill", "exit"], "{actions:?}");
    assert!(actions[3].1.starts_with("root (uid 0, pid "), "{actions:?}");
}

#[test]
fn on_supervisor_loss_kill_kills_an_agent_left_alone_longer_than_the_grace() {
    require!("on_supervisor_loss_kill_kills_an_agent_left_alone_longer_than_the_grace");
    let scene = scene!();
    let config = scene.root.join("governor.toml");
    fs::write(&config, "on_supervisor_loss = \"kill\"\nloss_grace = \"1s\"\n")
        .unwrap_or_else(|error| panic!("{error}"));
    let config = config.to_string_lossy().into_owned();
    let mut daemon = Daemon::start(&scene.root, "loss", &["--config", &config]);
    let agent = format!("lost-{}", std::process::id());
    let child = spawn_run(&daemon, &scene, "medium", &agent, "sleep 60");
    wait_registered(&daemon, &agent);
    // No daemon comes back: the agent's `governor run` kills it after the grace period.
    let lost_at = Instant::now();
    daemon.kill_hard();
    let out = child.wait_with_output().unwrap_or_else(|error| panic!("{error}"));
    let waited = lost_at.elapsed();
    assert_eq!(out.status.code(), Some(137), "{}", stderr(&out));
    assert!(stderr(&out).contains("the governor daemon went away"), "{}", stderr(&out));
    assert!(stderr(&out).contains("without a supervisor (on_supervisor_loss = kill)"), "{}", stderr(&out));
    assert!(waited >= Duration::from_secs(1), "killed before the grace period was over: {waited:?}");
    // The next daemon records the end it could not see.
    let daemon = Daemon::start(&scene.root, "loss", &["--config", &config]);
    let actions = actions_of(&daemon, &agent);
    let names: Vec<&str> = actions.iter().filter_map(|row| row["action"].as_str()).collect();
    assert_eq!(names, ["start", "exit"], "{actions:?}");
    assert!(actions[1]["why"].as_str().unwrap_or("").contains("while no governor daemon ran"), "{actions:?}");
}

#[test]
fn on_supervisor_loss_keep_lets_the_agent_run_and_a_new_daemon_takes_its_exit() {
    require!("on_supervisor_loss_keep_lets_the_agent_run_and_a_new_daemon_takes_its_exit");
    let scene = scene!();
    let mut daemon = Daemon::start(&scene.root, "keep", &[]);
    let agent = format!("kept-{}", std::process::id());
    let child = spawn_run(&daemon, &scene, "medium", &agent, "while [ ! -e go ]; do sleep 0.05; done; exit 7");
    wait_registered(&daemon, &agent);
    daemon.kill_hard();
    std::thread::sleep(Duration::from_millis(1500));
    let mut daemon = Daemon::start(&scene.root, "keep", &[]);
    daemon.wait_for_log("its governor run is attached again", Duration::from_secs(10));
    fs::write(scene.workspace.join("go"), "").unwrap_or_else(|error| panic!("{error}"));
    let out = child.wait_with_output().unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(stderr(&out).contains("watches agent"), "{}", stderr(&out));
    let actions = actions_of(&daemon, &agent);
    let names: Vec<&str> = actions.iter().filter_map(|row| row["action"].as_str()).collect();
    assert_eq!(names, ["start", "adopt", "exit"], "{actions:?}");
    assert_eq!(actions[2]["why"], "exit status 7", "{actions:?}");
}

#[test]
fn non_root_clients_and_agents_are_refused() {
    require!("non_root_clients_and_agents_are_refused");
    let scene = scene!();
    let daemon = Daemon::start(&scene.root, "peers", &[]);
    let socket = daemon.socket.to_string_lossy().into_owned();
    let victim = format!("victim-{}", std::process::id());
    let child = spawn_run(&daemon, &scene, "medium", &victim, "sleep 30");
    wait_registered(&daemon, &victim);
    // nobody: the socket is root's, mode 0600.
    let as_nobody = |socket: &str, args: &[&str]| {
        output(
            Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(governor_tests::governor_bin())
                .args(["--socket", socket])
                .args(args),
        )
    };
    let out = as_nobody(&socket, &["kill", &victim]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("Permission denied"), "{}", stderr(&out));
    // An agent below admin cannot even reach the socket: /run/governor is masked for it.
    for ring in ["low", "medium", "high"] {
        let (result, _) = scene.attempt(ring, &["control-request", &socket, &victim]);
        assert_eq!(result, "EACCES", "{ring}");
    }
    kill_agent_cgroup(&victim);
    let _ = child.wait_with_output();
    drop(daemon);

    // A daemon with a control group, its socket opened to everyone (a misconfiguration):
    // SO_PEERCRED still decides. A stranger is refused, a member of the group may control
    // agents (and is recorded) but not launch them, and an admin agent, running as root but
    // inside an agent's cgroup, is refused.
    let state = scene.root.join("open");
    fs::create_dir_all(&state).unwrap_or_else(|error| panic!("{error}"));
    let config = scene.root.join("group.toml");
    fs::write(&config, "control_group = \"nogroup\"\n").unwrap_or_else(|error| panic!("{error}"));
    let config = config.to_string_lossy().into_owned();
    let open_socket = scene.root.join("open.sock");
    let daemon = Daemon::start_at(&state, &open_socket, None, &["--config", &config], &[]);
    use std::os::unix::fs::PermissionsExt as _;
    let mode = fs::metadata(&open_socket).map(|meta| meta.permissions().mode() & 0o777).unwrap_or(0);
    assert_eq!(mode, 0o660, "the control group's socket");
    fs::set_permissions(&open_socket, fs::Permissions::from_mode(0o666)).unwrap_or_else(|error| panic!("{error}"));
    let socket = open_socket.to_string_lossy().into_owned();
    let child = spawn_run(&daemon, &scene, "medium", &victim, "sleep 30");
    wait_registered(&daemon, &victim);
    let as_user = |ids: &[&str], args: &[&str]| {
        output(
            Command::new("setpriv")
                .args(ids)
                .arg("--clear-groups")
                .arg(governor_tests::governor_bin())
                .args(["--socket", &socket])
                .args(args)
                // The daemon's store, which only root may open, is read through the daemon.
                .env_remove("GOVERNOR_AUDIT_DB"),
        )
    };
    let stranger = ["--reuid=12345", "--regid=12345"];
    let out = as_user(&stranger, &["suspend", &victim]);
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("refused: uid 12345 is not root nor in the control group"), "{}", stderr(&out));
    let (result, _) = scene.attempt("admin", &["control-request", &socket, &victim]);
    assert_eq!(result, "refused");
    assert!(daemon.log_text().contains("cgroup; agents may not control governor"), "{}", daemon.log_text());
    // None of that touched the victim.
    assert!(!frozen(&victim));
    let names: Vec<String> =
        actions_of(&daemon, &victim).iter().map(|row| row["action"].as_str().unwrap_or("").to_owned()).collect();
    assert_eq!(names, ["start"]);
    let member = ["--reuid=65534", "--regid=65534"];
    // A member cannot launch: registering an agent makes the daemon read files as root.
    let register = r#"{"op":"register","agent":"intruder","trust":"admin","command":["true"],"user":"nobody","observe":false,"overlays":["/etc/shadow"],"plan":{"udp":null,"net_deny":[],"deny_open":[],"deny_exec":[]}}"#;
    let script = "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(sys.argv[2].encode()+b'\\n'); print(s.makefile().readline())";
    let out = output(Command::new("setpriv").args(member).arg("--clear-groups").args([
        "/usr/bin/python3",
        "-c",
        script,
        &socket,
        register,
    ]));
    assert!(stdout(&out).contains("only root may launch agents"), "{} {}", stdout(&out), stderr(&out));
    // A root client may not end the supervision of an agent that still runs.
    let mut exited = std::os::unix::net::UnixStream::connect(&open_socket).unwrap_or_else(|error| panic!("{error}"));
    let answer = {
        use std::io::{BufRead as _, Write as _};
        let request = format!("{{\"op\":\"exited\",\"agent\":\"{victim}\",\"code\":0}}\n");
        exited.write_all(request.as_bytes()).unwrap_or_else(|error| panic!("{error}"));
        let mut line = String::new();
        let _ = std::io::BufReader::new(&exited).read_line(&mut line);
        line
    };
    assert!(answer.contains("still has processes in its cgroup"), "{answer}");
    // A member reads the store through the daemon: it cannot open the file itself.
    let out = as_user(&member, &["audit", "actions", "--agent", &victim, "--format", "jsonl"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows: Vec<serde_json::Value> = stdout(&out).lines().map(json).collect();
    assert_eq!(rows.first().map(|row| row["action"].clone()), Some("start".into()), "{rows:?}");
    let out = as_user(&member, &["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains(&victim) && stdout(&out).contains("daemon: pid "), "{}", stdout(&out));
    let out = as_user(&member, &["audit", "query", "--agent", "nobody-knows"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("unknown agent 'nobody-knows'"), "{}", stderr(&out));
    let out = as_user(&stranger, &["audit", "actions"]);
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    let out = as_user(&member, &["kill", &victim, "--reason", "member"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = child.wait_with_output().unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(out.status.code(), Some(137));
    let actions = actions_of(&daemon, &victim);
    let kill = actions.iter().find(|row| row["action"] == "kill").unwrap_or_else(|| panic!("{actions:?}"));
    assert!(kill["actor"].as_str().unwrap_or("").starts_with("nobody (uid 65534, pid "), "{kill}");
}

/// The shipped rules plus `extra`, as the ring directory's rules.toml.
fn write_rules(dir: &Path, extra: &str) {
    let shipped = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/rules.toml"))
        .unwrap_or_else(|error| panic!("{error}"));
    fs::write(dir.join("rules.toml"), format!("{shipped}\n{extra}")).unwrap_or_else(|error| panic!("{error}"));
}

fn ring_dir(scene: &Scene) -> std::path::PathBuf {
    let rings = scene.root.join("rings");
    fs::create_dir_all(&rings).unwrap_or_else(|error| panic!("{error}"));
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/rings");
    for entry in fs::read_dir(shipped).unwrap_or_else(|error| panic!("{error}")).flatten() {
        fs::copy(entry.path(), rings.join(entry.file_name())).unwrap_or_else(|error| panic!("{error}"));
    }
    write_rules(&rings, "");
    rings
}

const MARKER_RULE: &str = r#"
[[rule]]
id = "marker-read"
priority = 300
kind = "open"
path = ["**/marker"]
action = "audit"
severity = "low"
reason = "the marker was read"
"#;

#[test]
fn sighup_changes_the_next_decision_and_a_broken_policy_keeps_the_one_in_force() {
    require!("sighup_changes_the_next_decision_and_a_broken_policy_keeps_the_one_in_force");
    let scene = scene!();
    let rings = ring_dir(&scene);
    let mut daemon = Daemon::start_with(&scene.root, "reload", Some(&rings), &[]);
    fs::write(scene.workspace.join("marker"), "x").unwrap_or_else(|error| panic!("{error}"));
    let agent = format!("reload-{}", std::process::id());
    // Reads the marker each time the test creates stepN, then says so with doneN.
    let script =
        "for n in 1 2 3; do while [ ! -e step$n ]; do sleep 0.05; done; cat marker >/dev/null; touch done$n; done";
    let child = spawn_run(&daemon, &scene, "medium", &agent, script);
    let step = |n: u32| {
        fs::write(scene.workspace.join(format!("step{n}")), "").unwrap_or_else(|error| panic!("{error}"));
        wait_until("the agent's step", Duration::from_secs(20), || scene.workspace.join(format!("done{n}")).exists());
    };
    let marker_incidents = |daemon: &Daemon| {
        // The record follows the decision within a tick or two.
        std::thread::sleep(Duration::from_millis(300));
        incidents_of(daemon, &agent).iter().filter(|row| row["rule"] == "marker-read").count()
    };
    step(1);
    assert_eq!(marker_incidents(&daemon), 0, "no such rule yet");

    write_rules(&rings, MARKER_RULE);
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_log("policy reloaded", Duration::from_secs(10));
    step(2);
    assert_eq!(marker_incidents(&daemon), 1, "the reloaded rule decides the next open");

    fs::write(rings.join("rules.toml"), "[[rule]]\nid = 3\n").unwrap_or_else(|error| panic!("{error}"));
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_log("policy reload refused", Duration::from_secs(10));
    let log = daemon.log_text();
    assert!(log.contains("rules.toml:2"), "the refusal names the file and line: {log}");
    let out = output(daemon.governor().args(["policy", "reload"]));
    assert_eq!(out.status.code(), Some(125), "{}", stdout(&out));
    assert!(stderr(&out).contains("rules.toml:2"), "{}", stderr(&out));
    step(3);
    assert_eq!(marker_incidents(&daemon), 2, "the policy in force stayed");

    write_rules(&rings, "");
    let out = output(daemon.governor().args(["policy", "reload"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The shipped rules: repeated-kernel-denials, scanning-unreadable-paths, network-tool-after-secret.
    assert!(stdout(&out).starts_with("policy reloaded: 3 rules"), "{}", stdout(&out));
    let out = child.wait_with_output().unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

fn metrics_addr(daemon: &Daemon) -> String {
    let log = daemon.log_text();
    let start = log.find("metrics=\"").unwrap_or_else(|| panic!("no metrics address: {log}")) + "metrics=\"".len();
    log[start..].split('"').next().unwrap_or("").to_owned()
}

#[test]
fn the_metrics_endpoint_parses_and_its_counters_move_with_the_events() {
    require!("the_metrics_endpoint_parses_and_its_counters_move_with_the_events");
    let scene = scene!();
    let daemon = Daemon::start(&scene.root, "metrics", &["--metrics", "127.0.0.1:0"]);
    let addr = metrics_addr(&daemon);
    let before = prometheus::parse(&prometheus::scrape(&addr)).unwrap_or_else(|error| panic!("{error}"));
    let get = |samples: &prometheus::Samples, series: &str| samples.get(series).copied().unwrap_or(0.0);
    fs::write(scene.workspace.join("marker"), "x").unwrap_or_else(|error| panic!("{error}"));
    let agent = format!("metrics-{}", std::process::id());
    let script = "for i in 1 2 3 4 5 6 7 8 9 10; do cat marker >/dev/null; done; for i in 1 2 3 4 5; do cat /etc/shadow 2>/dev/null; done; sleep 30";
    let child = spawn_run(&daemon, &scene, "medium", &agent, script);
    wait_until("the agent suspended", Duration::from_secs(20), || frozen(&agent));
    std::thread::sleep(Duration::from_millis(200));
    let text = prometheus::scrape(&addr);
    let after = prometheus::parse(&text).unwrap_or_else(|error| panic!("{error}\n{text}"));
    let opens = r#"governor_events_total{kind="open",decision="allow"}"#;
    let denied = r#"governor_events_total{kind="open",decision="deny"}"#;
    assert!(get(&after, opens) - get(&before, opens) >= 10.0, "{text}");
    assert!(get(&after, denied) - get(&before, denied) >= 5.0, "{text}");
    let high = r#"governor_incidents_total{severity="high"}"#;
    assert_eq!(get(&after, high) - get(&before, high), 1.0, "{text}");
    assert_eq!(get(&after, r#"governor_agents{state="suspended"}"#), 1.0, "{text}");
    let decisions = get(&after, "governor_decision_seconds_count") - get(&before, "governor_decision_seconds_count");
    assert!(decisions >= 15.0, "{text}");
    assert_eq!(get(&after, "governor_freeze_seconds_count") - get(&before, "governor_freeze_seconds_count"), 1.0);
    assert!(after.contains_key("governor_events_dropped_total"), "{text}");
    kill_agent_cgroup(&agent);
    let _ = child.wait_with_output();
    let text = prometheus::scrape(&addr);
    let last = prometheus::parse(&text).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(get(&last, r#"governor_agents{state="suspended"}"#), 0.0, "{text}");
}

#[test]
fn bad_daemon_input_is_refused_with_exit_2_and_a_second_daemon_does_not_start() {
    require!("bad_daemon_input_is_refused_with_exit_2_and_a_second_daemon_does_not_start");
    let scene = scene!();
    let daemon = Daemon::start(&scene.root, "twice", &[]);
    let out = output(daemon.governor().arg("daemon"));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("a governor daemon is already running"), "{}", stderr(&out));
    let config = scene.root.join("bad.toml");
    fs::write(&config, "on_supervisor_loss = \"maybe\"\n").unwrap_or_else(|error| panic!("{error}"));
    let out = output(
        Command::new(governor_tests::governor_bin())
            .args(["--socket", "/run/governor/test-never.sock", "daemon", "--config"])
            .arg(&config),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let message = stderr(&out);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(message.contains("bad.toml:1"), "{message}");
    assert!(!Path::new("/run/governor/test-never.sock").exists());
    // --socket naming no daemon is an error for run, not a silent standalone run.
    let out = output(Command::new(governor_tests::governor_bin()).args([
        "--socket",
        "/run/governor/test-nobody.sock",
        "run",
        "--",
        "true",
    ]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("test-nobody.sock"), "{}", stderr(&out));
}

#[test]
fn the_systemd_unit_verifies_and_the_daemon_speaks_sd_notify() {
    require!("the_systemd_unit_verifies_and_the_daemon_speaks_sd_notify");
    let scene = scene!();
    let unit = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/governor.service"))
        .unwrap_or_else(|error| panic!("{error}"));
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        println!(
            "skipping the unit check of the_systemd_unit_verifies_and_the_daemon_speaks_sd_notify: no systemd-analyze"
        );
    } else {
        let binary = governor_tests::governor_bin();
        let unit = unit.replace("ExecStart=/usr/local/bin/governor", &format!("ExecStart={}", binary.display()));
        let path = scene.root.join("governor.service");
        fs::write(&path, unit).unwrap_or_else(|error| panic!("{error}"));
        let out = output(Command::new("systemd-analyze").arg("verify").arg(&path));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stderr(&out), "", "systemd-analyze verify has complaints");
    }
    // Type=notify: READY=1 once the probes are attached and the socket listens, WATCHDOG=1
    // from the event loop at half of WATCHDOG_USEC, RELOADING=1/READY=1 around a reload,
    // STOPPING=1 on SIGTERM.
    let notify = scene.root.join("notify.sock");
    let listener = std::os::unix::net::UnixDatagram::bind(&notify).unwrap_or_else(|error| panic!("{error}"));
    listener.set_read_timeout(Some(Duration::from_secs(20))).unwrap_or_else(|error| panic!("{error}"));
    let notify = notify.to_string_lossy().into_owned();
    let socket = scene.root.join("notify-daemon.sock");
    let mut daemon =
        Daemon::start_at(&scene.root, &socket, None, &[], &[("NOTIFY_SOCKET", &notify), ("WATCHDOG_USEC", "200000")]);
    let next = || {
        let mut buffer = [0u8; 256];
        let count = listener.recv(&mut buffer).unwrap_or_else(|error| panic!("no notification: {error}"));
        // One state per line (sd_notify(3) takes newline-separated assignments).
        String::from_utf8_lossy(&buffer[..count]).lines().next().unwrap_or_default().to_owned()
    };
    assert_eq!(next(), "READY=1");
    assert_eq!(next(), "WATCHDOG=1");
    assert_eq!(next(), "WATCHDOG=1");
    daemon.signal(libc::SIGHUP);
    let mut seen = Vec::new();
    while seen.last().is_none_or(|last: &String| last != "READY=1") {
        seen.push(next());
    }
    assert!(seen.contains(&"RELOADING=1".to_owned()), "{seen:?}");
    daemon.signal(libc::SIGTERM);
    let mut last = next();
    while last == "WATCHDOG=1" {
        last = next();
    }
    assert_eq!(last, "STOPPING=1");
    let status = daemon.child.take().map(|mut child| child.wait().unwrap_or_else(|error| panic!("{error}")));
    assert_eq!(status.and_then(|status| status.code()), Some(0));
    assert!(!socket.exists(), "the socket is removed on the way out");
}

#[test]
fn a_daemon_whose_store_fills_up_freezes_its_agents_and_refuses_new_ones_until_it_recovers() {
    require!("a_daemon_whose_store_fills_up_freezes_its_agents_and_refuses_new_ones_until_it_recovers");
    let scene = scene!();
    let disk = scene.root.join("disk");
    let disk_space = governor_tests::Tmpfs::mount(&disk);
    let daemon = Daemon::start(&disk, "diskfull", &[]);
    let agent = format!("full-{}", std::process::id());
    let progress = scene.workspace.join("progress");
    let script = "for i in $(seq 1 100); do cat /etc/hostname >/dev/null; echo $i >> progress; sleep 0.02; done";
    let child = spawn_run(&daemon, &scene, "medium", &agent, script);
    let lines = || fs::read_to_string(&progress).unwrap_or_default().lines().count();
    wait_until("the agent under way", Duration::from_secs(20), || lines() >= 10);
    let filler = disk_space.fill();
    wait_until("the agent frozen on a full store", Duration::from_secs(20), || frozen(&agent));
    // A new agent is refused while the store fails: nothing of it is started or left.
    let refused = format!("refused-{}", std::process::id());
    let out = spawn_run(&daemon, &scene, "medium", &refused, "echo ran").wait_with_output();
    let out = out.unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("audit store failing"), "{}", stderr(&out));
    assert!(!stdout(&out).contains("ran"));
    assert!(!cgroup2_root().join("governor").join(&refused).exists());
    let frozen_at = lines();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lines(), frozen_at, "the agent made progress while its actions could not be recorded");
    // Room again: the first agent is thawed and finishes, with nothing lost.
    fs::remove_file(&filler).unwrap_or_else(|error| panic!("{error}"));
    let out = child.wait_with_output().unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(lines(), 100);
    let names: Vec<String> =
        actions_of(&daemon, &agent).iter().map(|row| row["action"].as_str().unwrap_or("").to_owned()).collect();
    assert_eq!(names, ["start", "suspend", "resume", "exit"]);
    let opens =
        events_of(&daemon, &agent).iter().filter(|row| row["kind"] == "open" && row["path"] == "/etc/hostname").count();
    assert_eq!(opens, 100);
    assert!(actions_of(&daemon, &refused).is_empty(), "the refused agent left no record");
}

#[test]
fn a_daemon_stopped_with_sigterm_leaves_its_agents_running_for_the_next_one() {
    require!("a_daemon_stopped_with_sigterm_leaves_its_agents_running_for_the_next_one");
    let scene = scene!();
    let mut daemon = Daemon::start(&scene.root, "stop", &[]);
    let agent = format!("stopped-{}", std::process::id());
    let child = spawn_run(&daemon, &scene, "medium", &agent, "while [ ! -e go ]; do sleep 0.1; done; exit 3");
    wait_registered(&daemon, &agent);
    // systemctl stop: SIGTERM. The daemon records what it stops watching and exits 0; the
    // agent runs on (KillMode=process: it is its governor run's child, not the daemon's).
    daemon.signal(libc::SIGTERM);
    let status = daemon.child.take().map(|mut child| child.wait().unwrap_or_else(|error| panic!("{error}")));
    assert_eq!(status.and_then(|status| status.code()), Some(0));
    assert!(cgroup2_root().join("governor").join(&agent).join("cgroup.procs").exists(), "the agent still runs");
    let names: Vec<String> =
        actions_of(&daemon, &agent).iter().map(|row| row["action"].as_str().unwrap_or("").to_owned()).collect();
    assert_eq!(names, ["start", "unwatched"]);
    let mut daemon = Daemon::start(&scene.root, "stop", &[]);
    daemon.wait_for_log("its governor run is attached again", Duration::from_secs(10));
    fs::write(scene.workspace.join("go"), "").unwrap_or_else(|error| panic!("{error}"));
    let out = child.wait_with_output().unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let actions = actions_of(&daemon, &agent);
    let names: Vec<&str> = actions.iter().filter_map(|row| row["action"].as_str()).collect();
    assert_eq!(names, ["start", "unwatched", "adopt", "exit"], "{actions:?}");
    assert_eq!(actions[3]["why"], "exit status 3");
}

#[test]
fn an_idle_daemon_holds_no_syscall_tracepoint_and_one_agent_brings_them_for_its_run() {
    require!("an_idle_daemon_holds_no_syscall_tracepoint_and_one_agent_brings_them_for_its_run");
    let scene = scene!();
    let daemon = Daemon::start(&scene.root, "idle", &[]);
    let notify = daemon.log_text().contains("backend=notify");
    // Nobody to watch: the host's syscalls stay on the fast path.
    assert_eq!(syscall_tracepoint_links(daemon.pid()), 0, "an idle daemon");
    let agent = format!("idle-{}", std::process::id());
    let child =
        spawn_run(&daemon, &scene, "medium", &agent, "cat /etc/hostname; while [ ! -e go ]; do sleep 0.1; done");
    wait_registered(&daemon, &agent);
    if !notify {
        assert_eq!(syscall_tracepoint_links(daemon.pid()), 2, "sys_enter and sys_exit while an agent runs");
    }
    fs::write(scene.workspace.join("go"), "").unwrap_or_else(|error| panic!("{error}"));
    let out = child.wait_with_output().unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The agent's events were reported while they were attached.
    let opened = events_of(&daemon, &agent).iter().any(|row| row["kind"] == "open" && row["path"] == "/etc/hostname");
    assert!(opened, "{:?}", events_of(&daemon, &agent));
    wait_until("the tracepoints released", Duration::from_secs(10), || syscall_tracepoint_links(daemon.pid()) == 0);
}

#[test]
fn the_probes_rules_hold_while_no_daemon_runs() {
    require!("the_probes_rules_hold_while_no_daemon_runs");
    let scene = scene!();
    let mut daemon = Daemon::start(&scene.root, "pins", &[]);
    let agent = format!("pinned-{}", std::process::id());
    let attempt = scene.attempt.display();
    // Medium narrows UDP to the resolvers' port 53: a datagram to port 5353 is EPERM while
    // the socket hooks are attached, and would go out once they lapse.
    let script = format!(
        "{attempt} udp-send 5353 > before; while [ ! -e go ]; do sleep 0.05; done; {attempt} udp-send 5353 > after; \
         while [ ! -e end ]; do sleep 0.05; done"
    );
    let child = spawn_run(&daemon, &scene, "medium", &agent, &script);
    wait_registered(&daemon, &agent);
    let pins = Path::new("/sys/fs/bpf/governor/agents").join(&agent);
    daemon.kill_hard();
    fs::write(scene.workspace.join("go"), "").unwrap_or_else(|error| panic!("{error}"));
    let after = scene.workspace.join("after");
    wait_until("the agent's datagram", Duration::from_secs(10), || {
        fs::read_to_string(&after).is_ok_and(|t| !t.is_empty())
    });
    assert_eq!(fs::read_to_string(scene.workspace.join("before")).unwrap_or_default().trim(), "EPERM");
    assert_eq!(fs::read_to_string(&after).unwrap_or_default().trim(), "EPERM", "UDP narrowing lapsed with the daemon");
    // connect4/6, sendmsg4/6 and the skb ingress hook.
    assert_eq!(fs::read_dir(&pins).map(Iterator::count).unwrap_or(0), 5, "the five cgroup hooks stay pinned");
    // A new daemon takes the agent over with links of its own; the old ones go.
    let mut daemon = Daemon::start(&scene.root, "pins", &[]);
    daemon.wait_for_log("agent adopted", Duration::from_secs(5));
    let names: Vec<String> = fs::read_dir(&pins)
        .map(|entries| entries.flatten().map(|entry| entry.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert_eq!(names.len(), 5, "{names:?}");
    assert!(names.iter().all(|name| name.starts_with(&format!("{}-", daemon.pid()))), "{names:?}");
    fs::write(scene.workspace.join("end"), "").unwrap_or_else(|error| panic!("{error}"));
    let out = child.wait_with_output().unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Its pins are gone with it.
    wait_until("the agent's pins removed", Duration::from_secs(10), || !pins.exists());
}

#[test]
fn forty_agents_flooding_at_once_lose_no_event() {
    require!("forty_agents_flooding_at_once_lose_no_event");
    let scene = scene!();
    // The ring buffer's capacity is what this measures: a backend that uses it (the notify
    // backend, auto's choice for a daemon without BPF LSM, takes opens from fanotify, whose
    // kernel queue merges repeated opens of one file).
    let probes = if governor_tests::landlock_abi() >= 7 { "tracepoint" } else { "auto" };
    let daemon = Daemon::start(&scene.root, "forty", &["--probes", probes]);
    let attempt = scene.attempt.display();
    // They wait on a FIFO (a polling loop's execs would be a flood of their own), then all
    // open one file 5,000 times at once: 200,000 events in a moment.
    let release = scene.workspace.join("release");
    let fifo = std::ffi::CString::new(release.to_string_lossy().as_bytes()).unwrap_or_else(|error| panic!("{error}"));
    // SAFETY: mkfifo(3) with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o666) }, 0, "mkfifo");
    let script = format!("read line < release; {attempt} flood /etc/hostname 5000 >/dev/null");
    // Forty on a real machine; under software emulation (the VMs set a smaller flood) eight.
    let agents = if governor_tests::flood_opens() < 1_000_000 { 8 } else { 40 };
    let ids: Vec<String> = (0..agents).map(|n| format!("forty-{}-{n}", std::process::id())).collect();
    let children: Vec<Child> = ids.iter().map(|id| spawn_run(&daemon, &scene, "high", id, &script)).collect();
    for id in &ids {
        wait_registered(&daemon, id);
    }
    let mut writer = fs::OpenOptions::new().write(true).open(&release).unwrap_or_else(|error| panic!("{error}"));
    std::io::Write::write_all(&mut writer, "go\n".repeat(agents).as_bytes()).unwrap_or_else(|error| panic!("{error}"));
    for child in children {
        let out = child.wait_with_output().unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    drop(writer);
    for id in &ids {
        let opens: i64 = events_of(&daemon, id)
            .iter()
            .filter(|row| row["kind"] == "open" && row["path"] == "/etc/hostname")
            .map(|row| row["count"].as_i64().unwrap_or(1))
            .sum();
        assert_eq!(opens, 5000, "agent {id}: {opens} of 5,000 opens recorded");
        let incidents = incidents_of(&daemon, id);
        assert!(incidents.iter().all(|row| row["rule"] != "events-lost"), "{incidents:?}");
    }
    assert!(!daemon.log_text().contains("events dropped"), "{}", daemon.log_text());
}
