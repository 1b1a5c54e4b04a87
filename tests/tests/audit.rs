//! The audit store as a user relies on it: every event of an agent, with its decision, the
//! incident that suspended it, a chain that catches an edit, and no agent without a store.

use std::{
    fs,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use governor_tests::{cgroup2_root, governor_bin, require, scene, stderr, stdout};
use serde_json::Value;

fn audit(store: &str, args: &[&str]) -> std::process::Output {
    Command::new(governor_bin())
        .args(["--audit-db", store, "audit"])
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("{error}"))
}

#[test]
fn denials_are_recorded_and_the_chain_catches_an_edit() {
    require!("denials_are_recorded_and_the_chain_catches_an_edit");
    let scene = scene!();
    let store = scene.root.join("audit.db").to_string_lossy().into_owned();
    let id = format!("audited-{}", std::process::id());
    let key = scene.home.join(".ssh/id_ed25519");
    let script = format!("for i in 1 2 3 4 5 6; do cat {} 2>/dev/null; sleep 0.2; done; true", key.display());
    let child = Command::new(governor_bin())
        .args(["--audit-db", &store, "run", "--trust", "low", "--agent-id", &id, "--workspace"])
        .arg(&scene.workspace)
        .args(["--", "sh", "-c", &script])
        .env("HOME", &scene.home)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("{error}"));
    // The fifth denial suspends it; resume it once frozen.
    let events = cgroup2_root().join("governor").join(&id).join("cgroup.events");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && !fs::read_to_string(&events).is_ok_and(|text| text.contains("frozen 1")) {
        std::thread::sleep(Duration::from_millis(20));
    }
    // `governor status` shows it suspended, with its ring and its denials.
    let agent_status = || {
        let status = Command::new(governor_bin())
            .args(["--audit-db", &store, "status", "--format", "json"])
            .output()
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(status.status.code(), Some(0), "{}", stderr(&status));
        let document: Value = serde_json::from_str(&stdout(&status)).unwrap_or_else(|error| panic!("{error}"));
        let agent = document["agents"].as_array().and_then(|agents| agents.iter().find(|a| a["agent"] == id.as_str()));
        (agent.cloned().unwrap_or_else(|| panic!("{id} not in {document}")), document["compliance"].clone())
    };
    let (frozen, compliance) = agent_status();
    assert_eq!((frozen["state"].as_str(), frozen["trust"].as_str()), (Some("suspended"), Some("low")), "{frozen}");
    assert!(frozen["denials"].as_i64().is_some_and(|denials| denials >= 5), "{frozen}");
    assert!(compliance["agents_suspended"].as_i64().is_some_and(|n| n >= 1), "{compliance}");
    assert!(compliance["violations_last_hour"].as_i64().is_some_and(|n| n >= 1), "{compliance}");
    assert!(compliance["compliance_score"].as_f64().is_some_and(|score| score < 100.0), "{compliance}");

    let resumed = Command::new(governor_bin())
        .args(["--audit-db", &store, "resume", &id, "--reason", "checked: a test probing on purpose"])
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(resumed.status.code(), Some(0), "{}", stderr(&resumed));
    let output = child.wait_with_output().unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let (exited, _) = agent_status();
    assert_eq!((exited["state"].as_str(), exited["denials"].as_i64()), (Some("exited"), Some(6)), "{exited}");

    // Who suspended it, who resumed it and why, and how it ended.
    let actions = audit(&store, &["actions", "--agent", &id, "--format", "jsonl"]);
    let actions: Vec<(String, String, String)> = stdout(&actions)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .map(|row| {
            let field = |name: &str| row[name].as_str().unwrap_or_default().to_owned();
            (field("action"), field("actor"), field("why"))
        })
        .collect();
    let names: Vec<&str> = actions.iter().map(|(action, _, _)| action.as_str()).collect();
    assert_eq!(names, ["start", "suspend", "resume", "exit"], "{actions:?}");
    assert_eq!(actions[1].1, "rule repeated-kernel-denials");
    assert!(actions[2].1.starts_with("root (uid 0"), "{actions:?}");
    assert_eq!(actions[2].2, "checked: a test probing on purpose");
    assert_eq!(actions[3].2, "exit status 0");

    let query = audit(&store, &["query", "--agent", &id, "--decision", "deny", "--format", "json"]);
    assert_eq!(query.status.code(), Some(0), "{}", stderr(&query));
    let rows: Vec<Value> =
        serde_json::from_str(&stdout(&query)).unwrap_or_else(|error| panic!("{error}: {}", stdout(&query)));
    assert_eq!(rows.len(), 6, "exactly the six denials: {rows:?}");
    for row in &rows {
        assert_eq!(
            (row["path"].as_str(), row["result"].as_str(), row["kind"].as_str()),
            (Some(&*key.to_string_lossy()), Some("EACCES"), Some("open"))
        );
    }
    assert_eq!(rows.iter().filter(|row| row["rule"] == "repeated-kernel-denials").count(), 1);
    // The process context: what ran (from the kernel's exec events) ...
    for row in &rows {
        assert!(row["exe"].as_str().is_some_and(|exe| exe.ends_with("/cat")), "{row}");
        assert_eq!(row["cmdline"].as_str(), Some(format!("cat {}", key.display()).as_str()), "{row}");
    }
    // ... and from procfs, for the processes still there to be read: the shell, root but
    // with no capability left.
    let all = audit(&store, &["query", "--agent", &id, "--format", "jsonl"]);
    let all: Vec<Value> = stdout(&all).lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
    let shell = all
        .iter()
        .find(|row| row["exe"].as_str().is_some_and(|exe| exe.ends_with("/sh")) && row["ppid"].as_i64() > Some(0))
        .unwrap_or_else(|| panic!("no event of the shell with its context: {all:?}"));
    assert_eq!((shell["euid"].as_i64(), shell["caps"].as_str()), (Some(0), Some("0000000000000000")), "{shell}");

    let incidents = audit(&store, &["incidents", "--agent", &id, "--format", "jsonl"]);
    let incidents: Vec<Value> = stdout(&incidents).lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
    assert_eq!(incidents.len(), 1);
    assert_eq!(
        (incidents[0]["rule"].as_str(), incidents[0]["action"].as_str()),
        (Some("repeated-kernel-denials"), Some("suspend"))
    );

    let verify = audit(&store, &["verify"]);
    assert_eq!(verify.status.code(), Some(0), "{}", stderr(&verify));
    // Change one recorded denial into something harmless.
    let seq = rows[2]["seq"].as_i64().unwrap_or(0);
    let edit = Command::new("sqlite3")
        .arg(&store)
        .arg(format!("UPDATE events SET path = '/etc/hostname', result = 'ok' WHERE seq = {seq}"))
        .status()
        .unwrap_or_else(|error| panic!("sqlite3: {error}"));
    assert!(edit.success());
    let verify = audit(&store, &["verify"]);
    assert_eq!(verify.status.code(), Some(1));
    assert!(stderr(&verify).contains(&format!("events row {seq}")), "{}", stderr(&verify));
}

#[test]
fn no_store_no_agent() {
    require!("no_store_no_agent");
    let scene = scene!();
    let blocker = scene.root.join("not-a-directory");
    fs::write(&blocker, "").unwrap_or_else(|error| panic!("{error}"));
    let store = blocker.join("audit.db").to_string_lossy().into_owned();
    let marker = scene.workspace.join("started");
    let output = Command::new(governor_bin())
        .args(["--audit-db", &store, "run", "--workspace"])
        .arg(&scene.workspace)
        .args(["--", "touch"])
        .arg(&marker)
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("does not run an agent it cannot audit"), "{}", stderr(&output));
    assert!(!marker.exists());
    let bad_time = audit(&store, &["query", "--since", "last tuesday"]);
    assert_eq!(bad_time.status.code(), Some(2));
    assert!(stderr(&bad_time).contains("neither a duration"), "{}", stderr(&bad_time));
}

#[test]
fn rows_committed_before_the_supervisor_is_killed_survive_and_verify() {
    require!("rows_committed_before_the_supervisor_is_killed_survive_and_verify");
    let scene = scene!();
    let store = scene.root.join("audit.db").to_string_lossy().into_owned();
    let id = format!("crash-{}", std::process::id());
    let target = scene.workspace.join("flood.txt");
    fs::write(&target, "x").unwrap_or_else(|error| panic!("{error}"));
    let mut child = Command::new(governor_bin())
        .args(["--audit-db", &store, "run", "--trust", "low", "--agent-id", &id, "--workspace"])
        .arg(&scene.workspace)
        .arg("--")
        .arg(&scene.attempt)
        .args(["flood"])
        .arg(&target)
        .arg("5000000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("{error}"));
    // Identical opens are aggregated (a row per second past the first few): count the
    // events the rows stand for.
    let count = || {
        // A busy timeout: the warden writes the supervisor's loss right after the kill.
        let count = Command::new("sqlite3")
            .args(["-cmd", ".timeout 10000"])
            .arg(&store)
            .arg("SELECT coalesce(sum(count), 0) FROM events")
            .output()
            .unwrap_or_else(|error| panic!("{error}"));
        stdout(&count).trim().parse::<u64>().unwrap_or(0)
    };
    // Killed once rows are being committed (a fixed delay is too short where loading the
    // probes alone takes seconds, as under software emulation).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while count() <= 1000 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = child.kill();
    let _ = child.wait();
    // Its warden kills the agent; for a supervisor older than that, end it here.
    let _ = Command::new(governor_bin()).args(["kill", &id]).output();
    let events = count();
    assert!(events > 1000, "events were being written: {events}");
    let verify = audit(&store, &["verify"]);
    assert_eq!(verify.status.code(), Some(0), "{}", stderr(&verify));
    // Remove the cgroup the killed supervisor could not.
    let deadline = Instant::now() + Duration::from_secs(10);
    let cgroup = cgroup2_root().join("governor").join(&id);
    while cgroup.exists() && Instant::now() < deadline {
        let _ = fs::remove_dir(&cgroup);
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_store_that_fills_up_freezes_the_agent_until_it_recovers_and_loses_nothing() {
    require!("a_store_that_fills_up_freezes_the_agent_until_it_recovers_and_loses_nothing");
    let scene = scene!();
    let disk = scene.root.join("disk");
    let disk_space = governor_tests::Tmpfs::mount(&disk);
    let store = disk.join("audit.db").to_string_lossy().into_owned();
    let id = format!("diskfull-{}", std::process::id());
    let progress = scene.workspace.join("progress");
    let script = "for i in $(seq 1 150); do cat /etc/hostname >/dev/null; echo $i >> progress; sleep 0.02; done";
    let child = Command::new(governor_bin())
        .args(["--audit-db", &store, "run", "--trust", "medium", "--agent-id", &id, "--workspace"])
        .arg(&scene.workspace)
        .args(["--", "sh", "-c", script])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("{error}"));
    let lines = || fs::read_to_string(&progress).unwrap_or_default().lines().count();
    let deadline = Instant::now() + Duration::from_secs(20);
    while lines() < 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Fill the disk under the store.
    let filler = disk_space.fill();
    let events = cgroup2_root().join("governor").join(&id).join("cgroup.events");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && !fs::read_to_string(&events).is_ok_and(|text| text.contains("frozen 1")) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(fs::read_to_string(&events).is_ok_and(|text| text.contains("frozen 1")), "not frozen on a full disk");
    let frozen_at = lines();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(lines(), frozen_at, "the agent made progress while its actions could not be recorded");
    assert!(frozen_at < 150, "frozen only after it finished");
    // Room again: the rows held back are written, and the agent goes on.
    fs::remove_file(&filler).unwrap_or_else(|error| panic!("{error}"));
    let output = child.wait_with_output().unwrap_or_else(|error| panic!("{error}"));
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{err}");
    assert_eq!(lines(), 150);
    assert!(err.contains("audit store failing (database or disk is full)"), "{err}");
    assert!(err.contains("thawed"), "{err}");

    let actions = audit(&store, &["actions", "--agent", &id, "--format", "jsonl"]);
    let actions: Vec<Value> = stdout(&actions).lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
    let names: Vec<&str> = actions.iter().filter_map(|row| row["action"].as_str()).collect();
    assert_eq!(names, ["start", "suspend", "resume", "exit"], "{actions:?}");
    assert_eq!(actions[1]["why"], "audit store failed: database or disk is full");
    // Not one event lost: every cat's open of /etc/hostname is there, and the chain holds.
    let opens = audit(&store, &["query", "--agent", &id, "--path", "/etc/hostname", "--format", "jsonl"]);
    let opens = stdout(&opens).lines().filter(|line| line.contains("\"kind\":\"open\"")).count();
    assert_eq!(opens, 150);
    let verify = audit(&store, &["verify"]);
    assert_eq!(verify.status.code(), Some(0), "{}", stderr(&verify));
}

#[test]
fn an_agent_chosen_path_cannot_forge_rows_or_reach_the_terminal() {
    require!("an_agent_chosen_path_cannot_forge_rows_or_reach_the_terminal");
    let scene = scene!();
    let store = scene.root.join("audit.db").to_string_lossy().into_owned();
    let id = format!("forger-{}", std::process::id());
    // A file name with a newline, a tab, an ANSI escape and an 8-bit CSI (U+009B): as a
    // table row it would end the row and start a forged one, and colour the reader's
    // terminal.
    let name = "x\n9999\tforged\tevil\t\x1b[31mred\u{9b}1m";
    let output = Command::new(governor_bin())
        .args(["--audit-db", &store, "run", "--trust", "medium", "--agent-id", &id, "--workspace"])
        .arg(&scene.workspace)
        .args(["--", "/usr/bin/python3", "-c", "import sys; open(sys.argv[1], 'w').write('x')", name])
        .env("HOME", &scene.home)
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let table = stdout(&audit(&store, &["query", "--agent", &id, "--kind", "open", "--path", "*forged*"]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "a header and one row: {table:?}");
    assert!(!table.contains('\x1b'), "an escape sequence reached the terminal: {table:?}");
    assert!(!table.contains('\u{9b}'), "an 8-bit CSI reached the terminal: {table:?}");
    assert!(lines[1].contains("x\\n9999\\tforged\\tevil\\t\\e[31mred\\x9b1m"), "{table:?}");
    assert_eq!(lines[1].split('\t').count(), lines[0].split('\t').count(), "a tab forged a column: {table:?}");
    // JSON keeps the value exact, with no raw control character in the text.
    let text =
        stdout(&audit(&store, &["query", "--agent", &id, "--kind", "open", "--path", "*forged*", "--format", "json"]));
    assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "a control character in the JSON text: {text:?}");
    let json: Value = serde_json::from_str(&text).unwrap_or_default();
    assert!(json[0]["path"].as_str().is_some_and(|path| path.ends_with(name)), "{json}");
}

#[test]
fn a_flood_of_identical_events_is_counted_not_written_row_by_row() {
    require!("a_flood_of_identical_events_is_counted_not_written_row_by_row");
    let scene = scene!();
    let store = scene.root.join("audit.db").to_string_lossy().into_owned();
    let id = format!("flood-{}", std::process::id());
    // 200,000 on a real machine, a tenth under emulation (GOVERNOR_FLOOD_OPENS).
    let opens = i64::try_from(governor_tests::flood_opens() / 5).unwrap_or(200_000);
    let output = Command::new(governor_bin())
        .args(["--audit-db", &store, "run", "--standalone", "--trust", "high", "--agent-id", &id, "--workspace"])
        .arg(&scene.workspace)
        .arg("--")
        .arg(&scene.attempt)
        .args(["flood", "/etc/hostname", &opens.to_string()])
        .env("HOME", &scene.home)
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let rows: Vec<Value> = serde_json::from_str(&stdout(&audit(
        &store,
        &[
            "query",
            "--agent",
            &id,
            "--kind",
            "open",
            "--path",
            "/etc/hostname",
            "--format",
            "json",
            "--limit",
            "1000000",
        ],
    )))
    .unwrap_or_default();
    let counted: i64 = rows.iter().map(|row| row["count"].as_i64().unwrap_or(1)).sum();
    // What the ring buffer had no room for is counted too (an events-lost action).
    let actions: Vec<Value> =
        serde_json::from_str(&stdout(&audit(&store, &["actions", "--agent", &id, "--format", "json"])))
            .unwrap_or_default();
    let lost: i64 = actions
        .iter()
        .filter(|row| row["action"] == "events-lost")
        .filter_map(|row| row["why"].as_str()?.split(' ').next()?.parse::<i64>().ok())
        .sum();
    assert!(rows.len() < 200, "{} rows for one repeated open", rows.len());
    assert!(counted <= opens && counted + lost >= opens, "{counted} counted + {lost} lost of {opens} opens");
    // The aggregate rows say when the repeats began and ended.
    assert!(
        rows.iter().any(|row| row["count"].as_i64().is_some_and(|count| count > 1)
            && row["last_time"].as_i64() > row["time"].as_i64()),
        "{rows:?}"
    );
    let verified = audit(&store, &["verify"]);
    assert_eq!(verified.status.code(), Some(0), "{}", stderr(&verified));
    let size = fs::metadata(&store).map(|meta| meta.len()).unwrap_or(0)
        + fs::metadata(format!("{store}-wal")).map(|meta| meta.len()).unwrap_or(0);
    println!("{opens} opens: {} rows, {counted} counted, {lost} lost, store {size} bytes", rows.len());
}

#[test]
fn pruning_by_age_and_size_keeps_the_chain_verifiable() {
    require!("pruning_by_age_and_size_keeps_the_chain_verifiable");
    let scene = scene!();
    let store = scene.root.join("audit.db").to_string_lossy().into_owned();
    for index in 0..3 {
        let output = Command::new(governor_bin())
            .args(["--audit-db", &store, "run", "--standalone", "--trust", "high", "--workspace"])
            .arg(&scene.workspace)
            .args([
                "--",
                "sh",
                "-c",
                &format!("for i in $(seq 50); do cat /etc/hostname{index}-$i 2>/dev/null; done; true"),
            ])
            .env("HOME", &scene.home)
            .output()
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    }
    let bad = audit(&store, &["prune"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    let bad = audit(&store, &["prune", "--max-size", "12 parsecs"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    let pruned = audit(&store, &["prune", "--max-size", "4096"]);
    assert_eq!(pruned.status.code(), Some(0), "{}", stderr(&pruned));
    assert!(stdout(&pruned).contains("events rows"), "{}", stdout(&pruned));
    let verified = audit(&store, &["verify"]);
    assert_eq!(verified.status.code(), Some(0), "{}", stdout(&verified));
    // An edit after the checkpoint is still found.
    let edit = Command::new("sqlite3")
        .arg(&store)
        .arg("UPDATE events SET path = '/nothing' WHERE seq = (SELECT max(seq) FROM events)")
        .status();
    assert!(edit.is_ok_and(|status| status.success()));
    assert_eq!(audit(&store, &["verify"]).status.code(), Some(1));
}

#[test]
fn a_store_of_the_previous_schema_is_migrated_and_still_verifies_and_catches_an_edit() {
    require!("a_store_of_the_previous_schema_is_migrated_and_still_verifies_and_catches_an_edit");
    let scene = scene!();
    let store = scene.root.join("audit.db").to_string_lossy().into_owned();
    let id = format!("migrated-{}", std::process::id());
    let key = scene.home.join(".ssh/id_ed25519");
    let output = Command::new(governor_bin())
        .args(["--audit-db", &store, "run", "--standalone", "--trust", "low", "--agent-id", &id, "--workspace"])
        .arg(&scene.workspace)
        .args(["--", "sh", "-c", &format!("cat {} 2>/dev/null; cat /etc/hostname >/dev/null; true", key.display())])
        .env("HOME", &scene.home)
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let status = || {
        let status = Command::new(governor_bin())
            .args(["--audit-db", &store, "status", "--all", "--format", "json"])
            .output()
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(status.status.code(), Some(0), "{}", stderr(&status));
        let document: Value = serde_json::from_str(&stdout(&status)).unwrap_or_else(|error| panic!("{error}"));
        let agent = document["agents"].as_array().and_then(|agents| agents.iter().find(|a| a["agent"] == id.as_str()));
        let agent = agent.cloned().unwrap_or_else(|| panic!("{id} not in {document}"));
        (agent["events"].as_i64(), agent["denials"].as_i64())
    };
    let before = status();
    let rows = audit(&store, &["query", "--agent", &id, "--format", "jsonl", "--limit", "100000"]);
    let rows: Vec<Value> = stdout(&rows).lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
    let denials = rows.iter().filter(|row| row["decision"] == "deny").count() as i64;
    assert_eq!(before, (Some(rows.len() as i64), Some(denials)), "status counts the rows query lists");
    assert!(denials >= 1, "the key was refused: {rows:?}");

    // The store as the previous schema wrote it: the same chained rows, no per-agent counts,
    // the kind and decision indexes without time.
    let downgrade = Command::new("sqlite3")
        .arg(&store)
        .arg(
            "DROP TABLE agent_counts; DROP TABLE policies; DROP INDEX events_kind_time; DROP INDEX events_decision_time; \
             CREATE INDEX events_kind ON events (kind); CREATE INDEX events_decision ON events (decision); \
             PRAGMA user_version = 3;",
        )
        .status();
    assert!(downgrade.is_ok_and(|status| status.success()));
    let verify = audit(&store, &["verify"]);
    assert_eq!(verify.status.code(), Some(0), "{}", stderr(&verify));
    let version = Command::new("sqlite3").arg(&store).arg("PRAGMA user_version").output();
    assert_eq!(version.map(|output| stdout(&output).trim().to_owned()).ok().as_deref(), Some("5"));
    assert_eq!(status(), before, "the migrated store counts what the old one held");

    // An edit of a migrated store is still found.
    let seq = rows[0]["seq"].as_i64().unwrap_or(0);
    let edit =
        Command::new("sqlite3").arg(&store).arg(format!("UPDATE events SET path = '/x' WHERE seq = {seq}")).status();
    assert!(edit.is_ok_and(|status| status.success()));
    let verify = audit(&store, &["verify"]);
    assert_eq!(verify.status.code(), Some(1));
    assert!(stderr(&verify).contains(&format!("events row {seq}")), "{}", stderr(&verify));
}

#[test]
fn an_edit_that_keeps_the_chains_whole_is_caught_by_the_recorded_heads() {
    require!("an_edit_that_keeps_the_chains_whole_is_caught_by_the_recorded_heads");
    let tamper = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("audit/tamper.py");
    if !tamper.exists() || !governor_tests::on_path("python3") {
        // The VMs' root has neither the source tree nor Python; the host runs this.
        println!(
            "skipping an_edit_that_keeps_the_chains_whole_is_caught_by_the_recorded_heads: no python3 or {} here",
            tamper.display()
        );
        return;
    }
    for (mode, problem) in [
        ("truncate", "missing from the store (newest rows were removed)"),
        ("rechain", "not the one recorded in the anchor file (the chain was rewritten)"),
    ] {
        let scene = scene!();
        let store = scene.root.join("audit.db").to_string_lossy().into_owned();
        for run in 0..2 {
            let output = Command::new(governor_bin())
                .args(["--audit-db", &store, "run", "--standalone", "--trust", "low", "--agent-id"])
                .arg(format!("anchored-{mode}-{run}-{}", std::process::id()))
                .arg("--workspace")
                .arg(&scene.workspace)
                .args(["--", "true"])
                .env("HOME", &scene.home)
                .output()
                .unwrap_or_else(|error| panic!("{error}"));
            assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        }
        let before = audit(&store, &["verify"]);
        assert_eq!(before.status.code(), Some(0), "{}", stderr(&before));
        assert!(stdout(&before).contains("heads recorded in"), "{}", stdout(&before));
        let edited = Command::new("python3").arg(&tamper).arg(mode).arg(&store).output();
        let edited = edited.unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(stdout(&edited).trim(), "tampered", "{}", stderr(&edited));
        let after = audit(&store, &["verify"]);
        assert_eq!(after.status.code(), Some(1), "{mode} not caught: {}", stdout(&after));
        assert!(stderr(&after).contains(problem), "{mode}: {}", stderr(&after));
        // Without the recorded heads the edit passes: what the anchor file adds.
        fs::remove_file(format!("{store}-anchor")).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(audit(&store, &["verify"]).status.code(), Some(0), "{mode}: the chains alone should hold");
    }
}
