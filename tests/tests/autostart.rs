//! The daemon on first use: a `governor run` that finds no daemon on root's default socket
//! starts one, later runs go through it, and a daemon with nothing to supervise stops by
//! itself (`--idle-exit`).

use std::{
    fs,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use governor_tests::{Daemon, governor_bin, on_path, probes_args, require, scene, stderr};

fn output(command: &mut Command) -> Output {
    command.output().unwrap_or_else(|error| panic!("{error}"))
}

/// The default socket and store are root's, shared by the machine: the runs happen in a
/// mount namespace of their own with empty `/run/governor` and `/var/lib/governor`, so the
/// daemon they start is seen by nothing else (other tests' runs included).
const SCRIPT: &str = r#"
set -eu
G="$1"; WS="$2"; OUT="$3"; shift 3
mount -t tmpfs -o mode=0700 tmpfs /run/governor
mount -t tmpfs -o mode=0700 tmpfs /var/lib/governor
set +e
"$G" run --trust medium --agent-id auto-first --workspace "$WS" "$@" -- /bin/true 2>"$OUT/first.err"
echo $? >"$OUT/first.code"
"$G" run --trust medium --agent-id auto-second --verbose --workspace "$WS" "$@" -- /bin/true 2>"$OUT/second.err"
echo $? >"$OUT/second.code"
"$G" audit actions --format jsonl >"$OUT/actions.jsonl" 2>"$OUT/actions.err"
cp /var/lib/governor/daemon.log "$OUT/daemon.log"
pid=$(sed -n 's/.*started the governor daemon (pid \([0-9]*\)).*/\1/p' "$OUT/first.err")
if [ -n "$pid" ]; then
    kill "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    echo gone >"$OUT/daemon.end"
fi
"#;

#[test]
fn the_first_run_starts_a_daemon_that_later_runs_go_through() {
    require!("the_first_run_starts_a_daemon_that_later_runs_go_through");
    if !on_path("unshare") {
        println!("skipping the_first_run_starts_a_daemon_that_later_runs_go_through: no unshare(1)");
        return;
    }
    let scene = scene!();
    let out_dir = scene.root.join("out");
    fs::create_dir_all(&out_dir).unwrap_or_else(|error| panic!("{error}"));
    for dir in ["/run/governor", "/var/lib/governor"] {
        fs::create_dir_all(dir).unwrap_or_else(|error| panic!("{dir}: {error}"));
    }
    let run = output(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", SCRIPT, "sh"])
            .arg(governor_bin())
            .arg(&scene.workspace)
            .arg(&out_dir)
            .args(probes_args())
            // Root's defaults: no store or socket named.
            .env_remove("GOVERNOR_AUDIT_DB")
            .env_remove("GOVERNOR_SOCKET")
            .env_remove("SUDO_UID")
            .env("HOME", &scene.home)
            .stdin(Stdio::null()),
    );
    let read = |name: &str| fs::read_to_string(out_dir.join(name)).unwrap_or_default();
    let log = read("daemon.log");
    assert_eq!(run.status.code(), Some(0), "{}\nlog:\n{log}", stderr(&run));
    let (first, second) = (read("first.err"), read("second.err"));
    assert_eq!(read("first.code").trim(), "0", "first run: {first}\nlog:\n{log}");
    assert_eq!(read("second.code").trim(), "0", "second run: {second}\nlog:\n{log}");

    // The first run started the daemon and said so; the second found it running.
    let pid = first
        .split_once("started the governor daemon (pid ")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(pid, _)| pid.to_owned())
        .unwrap_or_else(|| panic!("the first run did not start a daemon: {first}"));
    assert!(first.contains("log: /var/lib/governor/daemon.log"), "{first}");
    assert!(!second.contains("started the governor daemon"), "{second}");
    assert!(second.contains(&format!("backend of the governor daemon (pid {pid},")), "second run: {second}");
    assert!(log.contains("governor daemon ready"), "{log}");
    assert_eq!(read("daemon.end").trim(), "gone", "the daemon was not stopped: {first}");

    // Both agents are in the daemon's store (read through it), started and ended.
    let actions: Vec<serde_json::Value> = read("actions.jsonl")
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}")))
        .collect();
    for agent in ["auto-first", "auto-second"] {
        let of: Vec<(&str, &str)> = actions
            .iter()
            .filter(|row| row["agent"] == agent)
            .map(|row| (row["action"].as_str().unwrap_or(""), row["why"].as_str().unwrap_or("")))
            .collect();
        assert_eq!(of.len(), 2, "{agent}: {of:?}; {}", read("actions.err"));
        assert_eq!(of[0], ("start", "governor run --trust medium (via governor daemon)"), "{agent}");
        assert_eq!(of[1], ("exit", "exit status 0"), "{agent}");
    }
}

#[test]
fn an_idle_daemon_stops_by_itself_and_not_while_it_supervises() {
    require!("an_idle_daemon_stops_by_itself_and_not_while_it_supervises");
    let scene = scene!();
    let mut daemon = Daemon::start(&scene.root, "idle", &["--idle-exit", "1"]);
    // Longer than the idle time: the agent keeps the daemon.
    let run = output(
        daemon
            .governor()
            .args(["run", "--trust", "medium", "--agent-id", "idle-agent", "--workspace"])
            .arg(&scene.workspace)
            .args(["--", "sleep", "2.5"])
            .env("HOME", &scene.home),
    );
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    assert!(!stderr(&run).contains("went away"), "{}", stderr(&run));
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        let child = daemon.child.as_mut().unwrap_or_else(|| panic!("no daemon"));
        if let Some(status) = child.try_wait().unwrap_or_else(|error| panic!("{error}")) {
            break status;
        }
        assert!(Instant::now() < deadline, "the idle daemon still runs:\n{}", daemon.log_text());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "{}", daemon.log_text());
    assert!(daemon.log_text().contains("stopping: no agent and no connection (--idle-exit)"), "{}", daemon.log_text());
    assert!(!daemon.socket.exists(), "{} is left behind", daemon.socket.display());
}
