//! `governor explain --agent ID` explains with what that agent really ran with: its ring, the
//! `--policy` files of its run (as their text was at launch) and its registration with the
//! daemon. An explicit `--policy` adds to them; an unknown agent is a usage error.

use std::{fs, path::Path, process::Command};

use governor_tests::{Daemon, governor_bin, require, scene, stderr, stdout};

/// `governor --audit-db STORE explain --workspace WS ARGS...`: exit code and stdout.
fn explain(store: &Path, workspace: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(governor_bin())
        .arg("--audit-db")
        .arg(store)
        .arg("explain")
        .arg("--workspace")
        .arg(workspace)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("running governor explain: {error}"));
    (output.status.code(), stdout(&output), stderr(&output))
}

fn grant(file: &Path, dir: &Path, access: &str, reason: &str) {
    let text = format!("[[landlock.path]]\npath = {:?}\naccess = {access}\nreason = {reason:?}\n", dir.display());
    fs::write(file, text).unwrap_or_else(|error| panic!("writing {}: {error}", file.display()));
}

#[test]
fn explain_agent_applies_the_policy_files_its_run_applied() {
    require!("explain_agent_applies_the_policy_files_its_run_applied");
    let scene = scene!();
    let store = scene.root.join("audit.db");
    let policy = scene.root.join("grant.toml");
    grant(&policy, &scene.outside, r#"["read", "write", "create"]"#, "the build writes its output here");
    let id = format!("explain-policy-{}", std::process::id());
    let target = scene.outside.join("new.txt");
    let run = Command::new(governor_bin())
        .arg("--audit-db")
        .arg(&store)
        .args(["run", "--standalone", "--trust", "medium", "--agent-id", &id, "--workspace"])
        .arg(&scene.workspace)
        .arg("--policy")
        .arg(&policy)
        .args(["--", "sh", "-c", &format!("echo made > '{}'", target.display())])
        .env("HOME", &scene.home)
        .output()
        .unwrap_or_else(|error| panic!("running governor: {error}"));
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    assert_eq!(fs::read_to_string(&target).ok().as_deref(), Some("made\n"), "the policy let the agent write");

    let target = target.display().to_string();
    let (code, out, err) = explain(&store, &scene.workspace, &["--agent", &id, "--op", "write", &target]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with(&format!("write {target} in ring medium: allow")), "{out}");
    assert!(out.contains(&format!("--policy {}", policy.display())), "names the policy file: {out}");
    assert!(
        out.contains(&format!("from {} (the build writes its output here)", scene.outside.display())),
        "names the policy line that allows it: {out}"
    );
    // The ring alone refuses it.
    let (code, out, _) = explain(&store, &scene.workspace, &["--trust", "medium", "--op", "write", &target]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("in ring medium: deny") && out.contains("[[landlock.path]]"), "{out}");

    // The file changed after the run: the text the agent ran with still decides.
    fs::write(&policy, "").unwrap_or_else(|error| panic!("{error}"));
    let (code, out, err) = explain(&store, &scene.workspace, &["--agent", &id, "--op", "write", &target]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("(as recorded)") && out.contains("changed or is gone since the agent's run"), "{out}");

    // An explicit --policy adds to what the agent ran with.
    let extra_dir = scene.root.join("extra");
    fs::create_dir_all(&extra_dir).unwrap_or_else(|error| panic!("{error}"));
    let extra = scene.root.join("extra.toml");
    grant(&extra, &extra_dir, r#"["read"]"#, "reference data");
    let file = extra_dir.join("data").display().to_string();
    let (code, out, _) = explain(&store, &scene.workspace, &["--agent", &id, &file]);
    assert_eq!(code, Some(1), "not granted by the agent's own policy: {out}");
    let policy_arg = extra.display().to_string();
    let (code, out, err) = explain(&store, &scene.workspace, &["--agent", &id, "--policy", &policy_arg, &file]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("(reference data)"), "{out}");
    let (code, out, _) =
        explain(&store, &scene.workspace, &["--agent", &id, "--policy", &policy_arg, "--op", "write", &target]);
    assert_eq!(code, Some(0), "the agent's own policy still applies: {out}");
}

#[test]
fn explain_agent_applies_its_registration_with_the_daemon() {
    require!("explain_agent_applies_its_registration_with_the_daemon");
    let scene = scene!();
    let daemon = Daemon::start(&scene.root, "explain", &[]);
    let id = format!("explain-registered-{}", std::process::id());
    let outside = scene.outside.display().to_string();
    let registered = daemon
        .governor()
        .args(["agents", "register", &id, "--trust", "medium", "--allow-path", &outside, "--reason", "the fixtures"])
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(registered.status.code(), Some(0), "{}", stderr(&registered));
    let file = scene.outside.join("file").display().to_string();

    // Registered, not run yet: the registration's ring and overlay.
    let (code, out, err) = explain(&daemon.audit_db, &scene.workspace, &["--agent", &id, &file]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("in ring medium: allow") && out.contains("registration overlay"), "{out}");
    assert!(out.contains("(the fixtures)"), "names the registration's line: {out}");
    let (code, out, _) = explain(&daemon.audit_db, &scene.workspace, &["--trust", "medium", &file]);
    assert_eq!(code, Some(1), "the ring alone refuses it: {out}");

    // Run through the daemon: the run records the overlay it applied.
    let run = daemon
        .governor()
        .args(["run", "--agent-id", &id, "--workspace"])
        .arg(&scene.workspace)
        .args(["--", "cat", &file])
        .env("HOME", &scene.home)
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    assert_eq!(stdout(&run), "outside\n");
    let (code, out, err) = explain(&daemon.audit_db, &scene.workspace, &["--agent", &id, &file]);
    assert_eq!(code, Some(0), "{out}{err}");
    let overlay = daemon.audit_db.parent().map(|dir| dir.join("registered").join(format!("{id}.toml")));
    let overlay = overlay.and_then(|path| path.canonicalize().ok()).unwrap_or_default();
    assert!(out.contains(&format!("--policy {}", overlay.display())), "the run's recorded overlay: {out}");
    assert!(!out.contains("registration overlay"), "applied once, as the run recorded it: {out}");
}

#[test]
fn explain_an_unknown_agent_is_a_usage_error() {
    require!("explain_an_unknown_agent_is_a_usage_error");
    let scene = scene!();
    let store = scene.root.join("audit.db");
    let (code, out, err) = explain(&store, &scene.workspace, &["--agent", "no-such-agent", "/etc/passwd"]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("unknown agent 'no-such-agent'"), "{err}");
    assert!(!store.exists(), "explaining created an audit store");
}

#[test]
fn validate_through_the_daemon_decides_with_a_finished_agent_s_recorded_policy() {
    require!("validate_through_the_daemon_decides_with_a_finished_agent_s_recorded_policy");
    let scene = scene!();
    let daemon = Daemon::start(&scene.root, "validate-recorded", &[]);
    let policy = scene.root.join("grant.toml");
    grant(&policy, &scene.outside, r#"["read", "write", "create"]"#, "the build writes its output here");
    let id = format!("validate-recorded-{}", std::process::id());
    let target = scene.outside.join("new.txt");
    let run = daemon
        .governor()
        .args(["run", "--trust", "medium", "--agent-id", &id, "--workspace"])
        .arg(&scene.workspace)
        .arg("--policy")
        .arg(&policy)
        .args(["--", "sh", "-c", &format!("echo made > '{}'", target.display())])
        .env("HOME", &scene.home)
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    assert_eq!(fs::read_to_string(&target).ok().as_deref(), Some("made\n"));
    // The agent has ended: the daemon answers from what the store recorded of its run.
    let validate = |agent: &str| {
        daemon
            .governor()
            .args(["validate", "--agent-id", agent, "--workspace"])
            .arg(&scene.workspace)
            .args(["--format", "json", "write"])
            .arg(&target)
            .output()
            .unwrap_or_else(|error| panic!("{error}"))
    };
    let known = validate(&id);
    assert_eq!(known.status.code(), Some(0), "{}{}", stdout(&known), stderr(&known));
    let answer: serde_json::Value = serde_json::from_str(&stdout(&known)).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!((answer["allowed"].as_bool(), answer["trust"].as_str()), (Some(true), Some("medium")), "{answer}");
    // An id the daemon never saw is decided at low, which refuses it.
    let unknown = validate("never-seen-here");
    assert_eq!(unknown.status.code(), Some(1), "{}{}", stdout(&unknown), stderr(&unknown));
}
