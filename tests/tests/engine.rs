//! The policy engine on real kernel events: the shipped rules suspend an agent by freezing
//! its cgroup, `governor resume` and `governor kill` act on it from outside.

use std::{
    fs,
    path::Path,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use governor_tests::{Scene, cgroup2_root, governor_bin, require, scene, stderr, stdout};
use serde_json::Value;

fn start(scene: &Scene, trust: &str, id: &str, script: &str) -> Child {
    Command::new(governor_bin())
        .args(["run", "--trust", trust, "--agent-id", id, "--workspace"])
        .arg(&scene.workspace)
        .args(["--", "sh", "-c", script])
        .env("HOME", &scene.home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("{error}"))
}

fn events_file(id: &str) -> std::path::PathBuf {
    cgroup2_root().join("governor").join(id).join("cgroup.events")
}

/// Waits until the agent's `cgroup.events` says `frozen 1`.
fn wait_frozen(id: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if fs::read_to_string(events_file(id)).is_ok_and(|events| events.contains("frozen 1")) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn control(command: &str, id: &str) -> Output {
    Command::new(governor_bin()).args([command, id]).output().unwrap_or_else(|error| panic!("{error}"))
}

fn incidents(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter(|line| line.starts_with('{'))
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|value| value["kind"] == "incident")
        .collect()
}

#[test]
fn repeated_denials_suspend_the_agent_until_it_is_resumed() {
    require!("repeated_denials_suspend_the_agent_until_it_is_resumed");
    let scene = scene!();
    let id = format!("probing-{}", std::process::id());
    let key = scene.home.join(".ssh/id_ed25519");
    let progress = scene.workspace.join("progress");
    // Five tries at a secret (the fifth suspends; a sixth, in flight before the freeze on a
    // slow machine, would raise a second incident after the resume and freeze the agent
    // again), then a counter that keeps growing while the agent runs.
    let script = format!(
        "for i in 1 2 3 4 5; do cat {key} 2>/dev/null; sleep 0.2; done; \
         for i in $(seq 1 50); do echo $i >> {progress}; sleep 0.1; done",
        key = key.display(),
        progress = progress.display()
    );
    let child = start(&scene, "low", &id, &script);
    assert!(wait_frozen(&id), "the agent was not frozen");
    // Frozen: no progress at all.
    let before = fs::read_to_string(&progress).unwrap_or_default();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(fs::read_to_string(&progress).unwrap_or_default(), before, "a frozen agent made progress");
    assert!(before.lines().count() < 3, "frozen too late: {before:?}");

    let resumed = control("resume", &id);
    assert_eq!(resumed.status.code(), Some(0), "{}", stderr(&resumed));
    // A second suspension would leave the agent frozen for good: fail, do not hang.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut child = child;
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let events = fs::read_to_string(events_file(&id)).unwrap_or_default();
            let _ = control("kill", &id);
            let output = child.wait_with_output().unwrap_or_else(|error| panic!("{error}"));
            panic!("the agent did not finish after the resume ({events:?}): {}", stderr(&output));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap_or_else(|error| panic!("{error}"));
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{err}");
    assert_eq!(fs::read_to_string(&progress).unwrap_or_default().lines().count(), 50, "it finished after resume");
    let incidents = incidents(&err);
    assert_eq!(incidents.len(), 1, "one incident: {err}");
    assert_eq!(incidents[0]["rule"], "repeated-kernel-denials");
    assert_eq!((incidents[0]["action"].as_str(), incidents[0]["severity"].as_str()), (Some("suspend"), Some("high")));
    assert_eq!(incidents[0]["event"]["result"], "EACCES");
    assert!(err.contains(&format!("`governor resume {id}` thaws it")), "{err}");
}

#[test]
fn a_network_tool_after_a_secret_suspends_and_kill_ends_the_agent() {
    require!("a_network_tool_after_a_secret_suspends_and_kill_ends_the_agent");
    let scene = scene!();
    let id = format!("exfil-{}", std::process::id());
    let tool = scene.workspace.join("nc");
    fs::copy(&scene.attempt, &tool).unwrap_or_else(|error| panic!("{error}"));
    let script = format!(
        "cat {key} 2>/dev/null; {tool} ids; sleep 30",
        key = scene.home.join(".ssh/id_ed25519").display(),
        tool = tool.display()
    );
    let child = start(&scene, "medium", &id, &script);
    assert!(wait_frozen(&id), "the agent was not frozen");
    let killed = control("kill", &id);
    assert_eq!(killed.status.code(), Some(0), "{}", stderr(&killed));
    let output = child.wait_with_output().unwrap_or_else(|error| panic!("{error}"));
    let err = stderr(&output);
    // The shell died of SIGKILL.
    assert_eq!(output.status.code(), Some(128 + 9), "{err}");
    let incidents = incidents(&err);
    assert_eq!(incidents.len(), 1, "{err}");
    assert_eq!(incidents[0]["rule"], "network-tool-after-secret");
    assert_eq!(incidents[0]["severity"], "critical");
    assert_eq!(incidents[0]["event"]["path"].as_str(), Some(&*tool.to_string_lossy()));
    assert!(!Path::new(&events_file(&id)).exists(), "the cgroup is removed after the kill");
    let _ = stdout(&output);
}

#[test]
fn a_network_tool_after_a_secret_runs_no_instruction_before_the_suspension() {
    require!("a_network_tool_after_a_secret_runs_no_instruction_before_the_suspension");
    let scene = scene!();
    let id = format!("held-{}", std::process::id());
    let tool = scene.workspace.join("nc");
    fs::copy(&scene.attempt, &tool).unwrap_or_else(|error| panic!("{error}"));
    let (first, ran, after) =
        (scene.workspace.join("first"), scene.workspace.join("ran"), scene.workspace.join("after"));
    // The tool before any secret: held at its exec, decided, and let go on. After the
    // secret: held, and the agent frozen before the tool's first instruction.
    let script = format!(
        "{tool} write {first}; cat {key} 2>/dev/null; {tool} write {ran}; echo > {after}; sleep 30",
        tool = tool.display(),
        first = first.display(),
        key = scene.home.join(".ssh/id_ed25519").display(),
        ran = ran.display(),
        after = after.display(),
    );
    let child = start(&scene, "medium", &id, &script);
    assert!(wait_frozen(&id), "the agent was not frozen");
    assert!(first.exists(), "the tool ran before the secret was tried");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!ran.exists(), "the tool ran after the secret, before the freeze");
    assert!(!after.exists(), "the agent went on after the tool");
    // Thawed, the tool runs from its first instruction.
    let resumed = control("resume", &id);
    assert_eq!(resumed.status.code(), Some(0), "{}", stderr(&resumed));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !after.exists() {
        assert!(Instant::now() < deadline, "the agent did not go on after the resume");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ran.exists(), "the tool ran once resumed");
    let killed = control("kill", &id);
    assert_eq!(killed.status.code(), Some(0), "{}", stderr(&killed));
    let output = child.wait_with_output().unwrap_or_else(|error| panic!("{error}"));
    let err = stderr(&output);
    assert!(err.contains("stopped in the kernel at the exec"), "{err}");
    let incidents = incidents(&err);
    assert_eq!(incidents.len(), 1, "{err}");
    assert_eq!(incidents[0]["rule"], "network-tool-after-secret");
    assert_eq!(incidents[0]["event"]["verdict"], "stopped", "{err}");
}

#[test]
fn control_commands_refuse_unknown_agents() {
    require!("control_commands_refuse_unknown_agents");
    for command in ["suspend", "resume", "kill"] {
        let output = control(command, "no-such-agent-here");
        assert_eq!(output.status.code(), Some(2), "{command}");
        assert!(stderr(&output).contains("unknown agent 'no-such-agent-here'"), "{}", stderr(&output));
        let bad = control(command, "../etc");
        assert_eq!(bad.status.code(), Some(2), "{command}");
    }
}

#[test]
fn a_policy_rule_with_an_impossible_condition_is_refused_with_its_file() {
    require!("a_policy_rule_with_an_impossible_condition_is_refused_with_its_file");
    let scene = scene!();
    let policy = scene.root.join("rules.toml");
    fs::write(
        &policy,
        "[[rule]]\nid = \"never\"\nkind = \"open\"\ntrust_at_least = \"high\"\ntrust_below = \"low\"\n\
         action = \"deny\"\nseverity = \"low\"\nreason = \"r\"\n",
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let policy = policy.to_string_lossy().into_owned();
    let output = scene.governor("low", &["--policy", &policy], ["true"]);
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(err.contains(&policy) && err.contains("rule 'never'") && err.contains("match no trust level"), "{err}");
    let glob = scene.root.join("glob.toml");
    fs::write(&glob, "[[rule]]\nid = \"g\"\nkind = \"open\"\npath = [\"a[\"]\naction = \"deny\"\nseverity = \"low\"\nreason = \"r\"\n")
        .unwrap_or_else(|error| panic!("{error}"));
    let glob = glob.to_string_lossy().into_owned();
    let output = scene.governor("low", &["--policy", &glob], ["true"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains(&format!("{glob}:4:8: invalid glob")), "{}", stderr(&output));
}

#[test]
fn a_policy_deny_rule_on_a_destination_is_enforced_in_the_kernel_and_recorded() {
    require!("a_policy_deny_rule_on_a_destination_is_enforced_in_the_kernel_and_recorded");
    let scene = scene!();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|error| panic!("{error}"));
    let port = listener.local_addr().map(|addr| addr.port()).unwrap_or(0).to_string();
    let store = scene.root.join("audit.db").to_string_lossy().into_owned();
    let connect = |extra: &[&str], id: &str| {
        let mut args = vec!["--audit-db", store.as_str(), "run", "--trust", "high", "--agent-id", id];
        args.extend_from_slice(extra);
        Command::new(governor_bin())
            .args(&args)
            .arg("--workspace")
            .arg(&scene.workspace)
            .arg("--")
            .arg(&scene.attempt)
            .args(["tcp-connect", &port])
            .output()
            .unwrap_or_else(|error| panic!("{error}"))
    };
    // high may connect anywhere: without the rule the listener answers.
    let open = connect(&[], &format!("open-{}", std::process::id()));
    assert_eq!(stdout(&open).trim(), "ok", "{}", stderr(&open));
    // A [[rule]] (not a ring's [[network.deny]]): the engine's deny goes into the cgroup
    // socket hook's map, so the connect fails with EPERM before any handshake.
    let policy = scene.root.join("rules.toml");
    fs::write(
        &policy,
        format!(
            "[[rule]]\nid = \"no-local-db\"\nkind = \"connect\"\ndestination = [\"127.0.0.1:{port}\"]\n\
             action = \"deny\"\nseverity = \"medium\"\nreason = \"the database is not for agents\"\n"
        ),
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let policy = policy.to_string_lossy().into_owned();
    let id = format!("ruled-{}", std::process::id());
    let output = connect(&["--policy", &policy, "--verbose"], &id);
    let err = stderr(&output);
    assert_eq!(stdout(&output).trim(), "EPERM", "{err}");
    assert!(err.contains("deny rules enforced in the kernel: 1 destinations"), "{err}");
    let incidents = incidents(&err);
    assert!(incidents.iter().all(|incident| incident["rule"] == "no-local-db"), "{err}");
    assert!(!incidents.is_empty(), "{err}");
    let rows = Command::new(governor_bin())
        .args(["--audit-db", &store, "audit", "query", "--agent", &id, "--kind", "connect", "--format", "jsonl"])
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    let rows: Vec<Value> = stdout(&rows).lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
    assert!(!rows.is_empty());
    for row in &rows {
        assert_eq!(
            (row["destination"].as_str(), row["result"].as_str(), row["decision"].as_str(), row["rule"].as_str()),
            (Some(format!("127.0.0.1:{port}").as_str()), Some("EPERM"), Some("deny"), Some("no-local-db")),
            "{row}"
        );
    }
    drop(listener);
}

#[test]
fn a_policy_whose_patterns_the_engine_cannot_compile_is_refused_not_ignored() {
    require!("a_policy_whose_patterns_the_engine_cannot_compile_is_refused_not_ignored");
    let scene = scene!();
    // Two rules whose wildcard patterns each compile, but not together: the engine puts all
    // the open rules' path patterns in one glob set, past the regex engine's size limit. An
    // engine built without them would never match either rule: fail open.
    let rule = |name: &str, offset: usize| {
        let patterns: Vec<String> = (offset..offset + 5000).map(|n| format!("\"**/x{n}*[a-z]?*y{n}*/**\"")).collect();
        format!(
            "[[rule]]\nid = \"{name}\"\nkind = \"open\"\npath = [{}]\naction = \"deny\"\nseverity = \"high\"\nreason = \"x\"\n",
            patterns.join(", ")
        )
    };
    let overlay = scene.root.join("huge.toml");
    fs::write(&overlay, format!("{}\n{}", rule("first-half", 0), rule("second-half", 5000)))
        .unwrap_or_else(|error| panic!("{error}"));
    let id = format!("huge-{}", std::process::id());
    let output = Command::new(governor_bin())
        .args(["run", "--agent-id", &id, "--policy"])
        .arg(&overlay)
        .args(["--workspace"])
        .arg(&scene.workspace)
        .args(["--", "true"])
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let message = stderr(&output);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(message.contains("rules first-half, second-half cannot be compiled together"), "{message}");
    assert!(!cgroup2_root().join("governor").join(&id).exists(), "nothing started");
}
