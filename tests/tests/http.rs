//! The daemon's HTTP/JSON door and the service layer behind every door, end to end: a real
//! daemon, real agents, the real store and cgroups. The token guards TCP, errors name the
//! field, actions freeze the real cgroup, a registration shapes the next run, a dry run
//! agrees with what the kernel then does, a policy added applies (a broken one is refused
//! with its line and column), the event stream delivers live and resumes after an id, and
//! the OpenAPI document is checked against the server.

use std::{
    fs,
    io::{BufRead as _, BufReader, Read, Write},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use governor_tests::{Daemon, Scene, frozen, kill_agent_cgroup, require, scene, stderr, stdout, wait_until};

const TOKEN: &str = "test-token-0123456789abcdef";

fn output(command: &mut Command) -> Output {
    command.output().unwrap_or_else(|error| panic!("{error}"))
}

fn token_file(dir: &Path, mode: u32) -> PathBuf {
    let path = dir.join(format!("token-{mode:o}"));
    fs::write(&path, format!("{TOKEN}\n")).unwrap_or_else(|error| panic!("{error}"));
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap_or_else(|error| panic!("{error}"));
    path
}

/// A daemon with the HTTP door on a loopback port of its choosing.
fn start(scene: &Scene, name: &str, rings: Option<&Path>) -> (Daemon, String) {
    let token = token_file(&scene.root, 0o600);
    let token = token.to_string_lossy().into_owned();
    let daemon = Daemon::start_with(&scene.root, name, rings, &["--http", "127.0.0.1:0", "--http-token-file", &token]);
    let log = daemon.log_text();
    let start = log.find("http=\"").unwrap_or_else(|| panic!("no http address: {log}")) + "http=\"".len();
    let addr = log[start..].split('"').next().unwrap_or("").to_owned();
    (daemon, addr)
}

/// An HTTP/1.1 exchange on `stream` (one request, `Connection: close`).
fn exchange(mut stream: impl Read + Write, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let auth = token.map(|token| format!("Authorization: Bearer {token}\r\n")).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: governor\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap_or_else(|error| panic!("{error}"));
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP response: {response}"));
    let status = head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    (status, body.to_owned())
}

fn http(addr: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, serde_json::Value) {
    let stream = std::net::TcpStream::connect(addr).unwrap_or_else(|error| panic!("{addr}: {error}"));
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap_or_else(|error| panic!("{error}"));
    let (status, body) = exchange(stream, method, path, token, body);
    (status, serde_json::from_str(&body).unwrap_or_else(|error| panic!("{method} {path}: {error}: {body}")))
}

fn get(addr: &str, path: &str) -> serde_json::Value {
    let (status, body) = http(addr, "GET", path, Some(TOKEN), "");
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

fn post(addr: &str, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    http(addr, "POST", path, Some(TOKEN), &body.to_string())
}

fn spawn_run(daemon: &Daemon, scene: &Scene, extra: &[&str], agent: &str, script: &str) -> Child {
    scene.spawn_script(daemon.governor().arg("run").args(extra), agent, script)
}

fn supervised(addr: &str, agent: &str) -> bool {
    let (status, body) = http(addr, "GET", &format!("/api/v1/agents/{agent}"), Some(TOKEN), "");
    status == 200 && body["supervised"] == true
}

#[test]
fn every_endpoint_answers_from_the_store_and_acts_on_the_real_cgroup() {
    require!("every_endpoint_answers_from_the_store_and_acts_on_the_real_cgroup");
    let scene = scene!();
    let (daemon, addr) = start(&scene, "http-all", None);
    // Health needs no token; everything else does.
    let (status, health) = http(&addr, "GET", "/api/v1/health", None, "");
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    let (status, refused) = http(&addr, "GET", "/api/v1/status", None, "");
    assert_eq!(status, 401, "{refused}");
    assert!(refused["error"].as_str().is_some_and(|error| error.contains("bearer token")), "{refused}");
    let (status, _) = http(&addr, "GET", "/api/v1/agents", Some("wrong-token-0123456789"), "");
    assert_eq!(status, 401);
    let (status, _) = http(&addr, "POST", "/api/v1/agents/x/kill", None, "");
    assert_eq!(status, 401);

    let agent = format!("http-{}", std::process::id());
    let mut child = spawn_run(&daemon, &scene, &["--trust", "medium"], &agent, "cat /etc/shadow; sleep 60");
    // 404 until the daemon has recorded the agent's start.
    wait_until("the denial in /api/v1/audit", Duration::from_secs(20), || {
        let (_, events) = http(&addr, "GET", &format!("/api/v1/audit?agent={agent}&decision=deny"), Some(TOKEN), "");
        events["events"].as_array().is_some_and(|events| events.iter().any(|event| event["path"] == "/etc/shadow"))
    });
    let events = get(&addr, &format!("/api/v1/audit?agent={agent}&decision=deny&path=/etc/sh*"));
    let denial = &events["events"][0];
    assert_eq!(denial["result"], "EACCES", "{denial}");
    assert_eq!(denial["kind"], "open", "{denial}");
    // Paging: nothing after the last id.
    let last = denial["id"].as_i64().unwrap_or(0);
    let after = get(&addr, &format!("/api/v1/audit?agent={agent}&decision=deny&after={last}"));
    assert_eq!(after["events"].as_array().map(Vec::len), Some(0), "{after}");
    let trace = get(&addr, &format!("/api/v1/agents/{agent}/trace?limit=5"));
    assert!(trace["events"].as_array().is_some_and(|events| !events.is_empty() && events.len() <= 5), "{trace}");

    // The shell forks `sleep` after `cat` has ended: the process tree shows it from then on.
    wait_until("sleep in the agent's process tree", Duration::from_secs(20), || {
        let shown = get(&addr, &format!("/api/v1/agents/{agent}"));
        shown["processes"].as_array().is_some_and(|processes| processes.iter().any(|p| p["command"] == "sleep"))
    });
    let shown = get(&addr, &format!("/api/v1/agents/{agent}"));
    assert_eq!(shown["state"], "running", "{shown}");
    assert_eq!(shown["trust"], "medium", "{shown}");
    assert!(shown["denials"].as_i64().is_some_and(|denials| denials >= 1), "{shown}");
    let listed = get(&addr, "/api/v1/agents");
    assert!(listed["agents"].as_array().is_some_and(|agents| agents.iter().any(|a| a["agent"] == agent.as_str())));
    let status = get(&addr, "/api/v1/status");
    for field in ["total_agents", "active_agents", "suspended_agents", "total_policies", "recent_violations"] {
        assert!(status[field].is_i64(), "{field}: {status}");
    }
    assert!(status["active_agents"].as_i64().is_some_and(|active| active >= 1), "{status}");
    assert_eq!(status["compliance_score"], 100.0, "{status}");
    assert_eq!(status["total_policies"], 3, "the shipped rules: {status}");

    // Bad input: 400 naming the field; unknown agents 404.
    for (path, field) in [
        ("/api/v1/audit?limit=many", "limit"),
        ("/api/v1/audit?kind=teleport", "kind"),
        ("/api/v1/audit?since=yesterday-ish", "since"),
        ("/api/v1/audit?colour=red", "colour"),
        ("/api/v1/incidents?limit=0", "limit"),
    ] {
        let (status, body) = http(&addr, "GET", path, Some(TOKEN), "");
        assert_eq!((status, body["field"].as_str()), (400, Some(field)), "{path}: {body}");
    }
    let (status, body) = post(&addr, "/api/v1/validate", serde_json::json!({ "action_type": "open" }));
    assert_eq!((status, body["field"].as_str()), (400, Some("target")), "{body}");
    let (status, body) = post(&addr, "/api/v1/validate", serde_json::json!({ "action_type": "fly", "target": "/" }));
    assert_eq!((status, body["field"].as_str()), (400, Some("action_type")), "{body}");
    let (status, body) = http(&addr, "GET", "/api/v1/agents/nobody-here", Some(TOKEN), "");
    assert_eq!(status, 404, "{body}");
    let (status, body) = post(&addr, "/api/v1/agents/nobody-here/suspend", serde_json::json!({}));
    assert_eq!((status, body["field"].as_str()), (404, Some("agent")), "{body}");
    let (status, body) = http(&addr, "GET", "/api/v1/audit?agent=nobody-here", Some(TOKEN), "");
    assert_eq!(status, 404, "{body}");

    // Suspend freezes the real cgroup, resume thaws it; the caller is recorded as "token".
    let (status, body) =
        post(&addr, &format!("/api/v1/agents/{agent}/suspend"), serde_json::json!({ "reason": "a look" }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "suspended");
    assert!(frozen(&agent), "suspend answered but the cgroup is not frozen");
    let (status, _) = http(&addr, "POST", &format!("/api/v1/agents/{agent}/resume"), Some(TOKEN), "");
    assert_eq!(status, 200);
    assert!(!frozen(&agent));
    let actions = output(daemon.governor().args(["audit", "actions", "--agent", &agent, "--format", "jsonl"]));
    let actions: Vec<serde_json::Value> =
        stdout(&actions).lines().map(|line| serde_json::from_str(line).unwrap_or_default()).collect();
    let suspend = actions.iter().find(|row| row["action"] == "suspend").unwrap_or_else(|| panic!("{actions:?}"));
    assert_eq!((suspend["actor"].as_str(), suspend["why"].as_str()), (Some("token"), Some("a look")), "{suspend}");

    // An incident reported with auto_suspend freezes the agent and is listed.
    let report = serde_json::json!({
        "agent": agent, "type": "prompt-injection", "severity": "high",
        "description": "told to read the keys", "auto_suspend": true,
    });
    let (status, body) = post(&addr, "/api/v1/incidents", report);
    assert_eq!((status, body["suspended"].as_bool()), (200, Some(true)), "{body}");
    assert!(frozen(&agent));
    let (status, body) = post(
        &addr,
        "/api/v1/incidents",
        serde_json::json!({ "agent": agent, "type": "x", "severity": "dire", "description": "d" }),
    );
    assert_eq!((status, body["field"].as_str()), (400, Some("severity")), "{body}");
    wait_until("the reported incident listed", Duration::from_secs(10), || {
        let incidents = get(&addr, &format!("/api/v1/incidents?agent={agent}"));
        incidents["incidents"].as_array().is_some_and(|incidents| {
            incidents
                .iter()
                .any(|i| i["type"] == "prompt-injection" && i["severity"] == "high" && i["action"] == "suspend")
        })
    });

    // The same door on the Unix socket, on the control socket's terms: root is admitted
    // without a token.
    let unix = std::os::unix::net::UnixStream::connect(daemon.socket.with_extension("http.sock"))
        .unwrap_or_else(|error| panic!("{error}"));
    let (status, body) = exchange(unix, "GET", "/api/v1/status", None, "");
    assert_eq!(status, 200, "{body}");

    // /metrics on the door, with the names Prometheus expects.
    let stream = std::net::TcpStream::connect(&addr).unwrap_or_else(|error| panic!("{error}"));
    let (status, text) = exchange(stream, "GET", "/metrics", Some(TOKEN), "");
    assert_eq!(status, 200);
    let samples = governor_tests::prometheus::parse(&text).unwrap_or_else(|error| panic!("{error}\n{text}"));
    assert_eq!(samples.get(r#"governor_agents{state="suspended"}"#).copied(), Some(1.0), "{text}");

    let (status, body) = post(&addr, &format!("/api/v1/agents/{agent}/kill"), serde_json::json!({}));
    assert_eq!(status, 200, "{body}");
    let out = child.wait().unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(out.code(), Some(137), "the agent was killed");
    wait_until("the agent gone from the daemon", Duration::from_secs(10), || !supervised(&addr, &agent));
    let (status, body) = post(&addr, &format!("/api/v1/agents/{agent}/resume"), serde_json::json!({}));
    assert_eq!(status, 404, "an agent no longer supervised: {body}");
}

#[test]
fn the_tcp_door_needs_a_private_token_and_a_loopback_address() {
    require!("the_tcp_door_needs_a_private_token_and_a_loopback_address");
    let scene = scene!();
    let open = token_file(&scene.root, 0o644);
    let private = token_file(&scene.root, 0o600);
    let socket = format!("/run/governor/test-http-refused-{}.sock", std::process::id());
    let daemon = |args: &[&str]| {
        let out = output(
            Command::new(governor_tests::governor_bin())
                .args(["--socket", &socket, "--audit-db"])
                .arg(scene.root.join("audit.db"))
                .arg("daemon")
                .args(args),
        );
        (out.status.code(), stderr(&out))
    };
    let (code, message) = daemon(&["--http", "127.0.0.1:0", "--http-token-file", &open.to_string_lossy()]);
    assert_eq!(code, Some(2), "{message}");
    assert!(message.contains("mode 0644") && message.lines().count() == 1, "{message}");
    let (code, message) = daemon(&["--http", "127.0.0.1:0"]);
    assert_eq!(code, Some(2), "no TCP listener without a token: {message}");
    assert!(message.contains("--http-token-file"), "{message}");
    let (code, message) = daemon(&["--http", "0.0.0.0:0", "--http-token-file", &private.to_string_lossy()]);
    assert_eq!(code, Some(2), "{message}");
    assert!(message.contains("not a loopback address"), "{message}");
    assert!(!Path::new(&socket).exists(), "nothing was started");
}

#[test]
fn a_registered_agent_runs_with_its_denies_and_validate_agrees_with_the_kernel() {
    require!("a_registered_agent_runs_with_its_denies_and_validate_agrees_with_the_kernel");
    let scene = scene!();
    let (daemon, addr) = start(&scene, "http-register", None);
    let agent = format!("reg-{}", std::process::id());
    let private = scene.workspace.join("private.txt");
    let open = scene.workspace.join("open.txt");
    fs::write(&private, "secret plans").unwrap_or_else(|error| panic!("{error}"));
    fs::write(&open, "shared notes").unwrap_or_else(|error| panic!("{error}"));
    let spec = serde_json::json!({
        "agent_id": agent, "trust": "medium",
        "denied_paths": [private], "denied_programs": ["sleep"],
        "reason": "a test registration",
    });
    let (status, body) = post(&addr, "/api/v1/agents", spec.clone());
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["trust"], "medium");
    let (status, body) = post(&addr, "/api/v1/agents", serde_json::json!({ "agent_id": "x", "colour": "red" }));
    assert_eq!((status, body["field"].as_str()), (400, Some("colour")), "{body}");
    let (status, body) =
        post(&addr, "/api/v1/agents", serde_json::json!({ "agent_id": "y", "denied_paths": ["relative"] }));
    assert_eq!((status, body["field"].as_str()), (400, Some("denied_paths")), "{body}");
    let shown = get(&addr, &format!("/api/v1/agents/{agent}"));
    assert_eq!(shown["state"], "registered", "{shown}");

    let validate = |action: &str, target: &str| {
        let (status, body) = post(
            &addr,
            "/api/v1/validate",
            serde_json::json!({
                "agent_id": agent, "action_type": action, "target": target,
                "workspace": scene.workspace, "context": {"why": "test"},
            }),
        );
        assert_eq!(status, 200, "{body}");
        body
    };
    let denied = validate("read", &private.to_string_lossy());
    assert_eq!((denied["allowed"].as_bool(), denied["layer"].as_str()), (Some(false), Some("landlock")), "{denied}");
    assert_eq!(denied["trust"], "medium");
    assert_eq!(denied["context"]["why"], "test");
    let allowed = validate("read", &open.to_string_lossy());
    assert_eq!(allowed["allowed"], true, "{allowed}");
    let program = validate("exec", "sleep");
    assert_eq!(
        (program["allowed"].as_bool(), program["layer"].as_str()),
        (Some(false), Some("rule engine")),
        "{program}"
    );
    assert!(program["rule"].as_str().is_some_and(|rule| rule.starts_with(&format!("registered-{agent}-program"))));
    let metadata = validate("connect", "169.254.169.254:80");
    assert_eq!((metadata["allowed"].as_bool(), metadata["layer"].as_str()), (Some(false), Some("kernel deny map")));
    // An unknown id is decided at the trust given, low by default.
    let (status, unknown) = post(
        &addr,
        "/api/v1/validate",
        serde_json::json!({ "agent_id": "never-seen", "action_type": "connect", "target": "127.0.0.1:443" }),
    );
    assert_eq!(
        (status, unknown["trust"].as_str(), unknown["layer"].as_str()),
        (200, Some("low"), Some("seccomp")),
        "{unknown}"
    );
    // The CLI asks the same question.
    let out = output(
        daemon
            .governor()
            .args(["validate", "--agent-id", &agent, "read"])
            .arg(&private)
            .arg("--workspace")
            .arg(&scene.workspace),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("deny") && stdout(&out).contains("landlock"), "{}", stdout(&out));

    // The run: the registered trust applies without --trust; what validate said is what
    // the kernel does.
    let script = format!(
        "cat {} && echo OPEN-READ; cat {} || echo PRIVATE-REFUSED; sleep 10; echo AFTER-SLEEP",
        open.display(),
        private.display(),
    );
    let out =
        spawn_run(&daemon, &scene, &[], &agent, &script).wait_with_output().unwrap_or_else(|error| panic!("{error}"));
    let printed = stdout(&out);
    assert!(printed.contains("shared notes") && printed.contains("OPEN-READ"), "{printed}\n{}", stderr(&out));
    assert!(printed.contains("PRIVATE-REFUSED") && !printed.contains("secret plans"), "{printed}");
    assert!(stderr(&out).contains("Permission denied"), "{}", stderr(&out));
    assert!(!printed.contains("AFTER-SLEEP"), "the denied program's run killed the agent: {printed}");
    assert_eq!(out.status.code(), Some(137), "{}", stderr(&out));
    let started = output(daemon.governor().args(["status", "--all", "--format", "json"]));
    assert!(stdout(&started).contains(&format!("\"agent\": \"{agent}\"")), "{}", stdout(&started));
    let shown = get(&addr, &format!("/api/v1/agents/{agent}"));
    assert_eq!(shown["trust"], "medium", "{shown}");
    // A --trust that disagrees with the registration is refused before anything starts.
    let out = spawn_run(&daemon, &scene, &["--trust", "high"], &agent, "echo ran").wait_with_output();
    let out = out.unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("registered at trust medium"), "{}", stderr(&out));
    assert!(!stdout(&out).contains("ran"));
}

fn ring_dir(scene: &Scene) -> PathBuf {
    let rings = scene.root.join("rings");
    fs::create_dir_all(&rings).unwrap_or_else(|error| panic!("{error}"));
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    for entry in fs::read_dir(shipped.join("rings")).unwrap_or_else(|error| panic!("{error}")).flatten() {
        fs::copy(entry.path(), rings.join(entry.file_name())).unwrap_or_else(|error| panic!("{error}"));
    }
    fs::copy(shipped.join("rules.toml"), rings.join("rules.toml")).unwrap_or_else(|error| panic!("{error}"));
    rings
}

const MARKER_RULE: &str = r#"[[rule]]
id = "marker-suspends"
kind = "open"
path = ["**/marker"]
action = "suspend"
severity = "high"
reason = "the marker is not for agents"
"#;

#[test]
fn a_policy_created_applies_and_a_broken_one_is_refused_with_its_line_and_column() {
    require!("a_policy_created_applies_and_a_broken_one_is_refused_with_its_line_and_column");
    let scene = scene!();
    let rings = ring_dir(&scene);
    let (daemon, addr) = start(&scene, "http-policy", Some(&rings));
    let before = get(&addr, "/api/v1/policies")["policies"].as_array().map_or(0, Vec::len);
    // A type error on line 3: refused with file:line:col, nothing written, nothing applied.
    let broken = "[[rule]]\nid = \"broken\"\nkind = 7\naction = \"deny\"\nseverity = \"low\"\nreason = \"r\"\n";
    let (status, body) = post(&addr, "/api/v1/policies", serde_json::json!({ "name": "broken", "toml": broken }));
    assert_eq!((status, body["field"].as_str()), (400, Some("toml")), "{body}");
    assert!(body["error"].as_str().is_some_and(|error| error.contains("rules.d/broken.toml:3:8")), "{body}");
    assert!(!rings.join("rules.d/broken.toml").exists());
    assert_eq!(get(&addr, "/api/v1/policies")["policies"].as_array().map_or(0, Vec::len), before);
    // The CLI names the user's own file.
    let file = scene.root.join("mine.toml");
    fs::write(&file, broken).unwrap_or_else(|error| panic!("{error}"));
    let out = output(daemon.governor().args(["policy", "add"]).arg(&file));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("{}:3:8", file.display())), "{}", stderr(&out));
    // A duplicate id is a conflict.
    let duplicate = "[[rule]]\nid = \"scanning-unreadable-paths\"\nkind = \"open\"\naction = \"audit\"\nseverity = \"low\"\nreason = \"r\"\n";
    let (status, body) = post(&addr, "/api/v1/policies", serde_json::json!({ "name": "dup", "toml": duplicate }));
    assert_eq!(status, 409, "{body}");

    let (status, body) = post(&addr, "/api/v1/policies", serde_json::json!({ "name": "marker", "toml": MARKER_RULE }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rules"], serde_json::json!(["marker-suspends"]));
    assert_eq!(body["total_policies"].as_u64(), Some(before as u64 + 1));
    let rule = get(&addr, "/api/v1/policies/marker-suspends");
    assert_eq!(rule["action"], "suspend", "{rule}");
    assert!(rule["file"].as_str().is_some_and(|file| file.ends_with("rules.d/marker.toml")), "{rule}");
    // It applies: an agent that reads the marker is suspended.
    fs::write(scene.workspace.join("marker"), "x").unwrap_or_else(|error| panic!("{error}"));
    let agent = format!("marked-{}", std::process::id());
    let child = spawn_run(&daemon, &scene, &["--trust", "medium"], &agent, "cat marker >/dev/null; sleep 60");
    wait_until("the agent suspended by the new rule", Duration::from_secs(20), || frozen(&agent));
    kill_agent_cgroup(&agent);
    let _ = child.wait_with_output();
}

/// Reads server-sent events from `stream` until `done` says so: (id, data) pairs.
fn read_events(
    stream: std::net::TcpStream,
    mut done: impl FnMut(&[(i64, serde_json::Value)]) -> bool,
) -> Vec<(i64, serde_json::Value)> {
    let mut reader = BufReader::new(stream);
    let mut seen = Vec::new();
    let mut id = None;
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return seen,
            Ok(_) => {}
        }
        let line = line.trim_end();
        if let Some(value) = line.strip_prefix("id: ") {
            id = value.parse::<i64>().ok();
        } else if let Some(data) = line.strip_prefix("data: ") {
            let value: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
            seen.push((id.take().unwrap_or(-1), value));
            if done(&seen) {
                return seen;
            }
        }
    }
}

fn subscribe(addr: &str, query: &str, last: Option<i64>) -> std::net::TcpStream {
    let mut stream = std::net::TcpStream::connect(addr).unwrap_or_else(|error| panic!("{error}"));
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap_or_else(|error| panic!("{error}"));
    let last = last.map(|id| format!("Last-Event-ID: {id}\r\n")).unwrap_or_default();
    let request =
        format!("GET /api/v1/events?{query} HTTP/1.1\r\nHost: governor\r\nAuthorization: Bearer {TOKEN}\r\n{last}\r\n");
    stream.write_all(request.as_bytes()).unwrap_or_else(|error| panic!("{error}"));
    stream
}

#[test]
fn the_event_stream_delivers_live_events_and_resumes_after_an_id() {
    require!("the_event_stream_delivers_live_events_and_resumes_after_an_id");
    let scene = scene!();
    let (daemon, addr) = start(&scene, "http-events", None);
    let agent = format!("stream-{}", std::process::id());
    let query = format!("agent={agent}&decision=deny");
    // Subscribed before the agent exists: its first denial arrives live.
    let stream = subscribe(&addr, &query, None);
    let mut follow = daemon
        .governor()
        .args(["events", "--follow", "--agent", &agent, "--decision", "deny", "--format", "json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("{error}"));
    std::thread::sleep(Duration::from_millis(500));
    let release = scene.workspace.join("go");
    let script = "cat /etc/shadow; while [ ! -e go ]; do sleep 0.1; done; cat /etc/gshadow; cat /etc/shadow; sleep 60";
    let child = spawn_run(&daemon, &scene, &["--trust", "medium"], &agent, script);
    let first = read_events(stream.try_clone().unwrap_or_else(|error| panic!("{error}")), |seen| !seen.is_empty());
    let (first_id, first_event) = first.first().cloned().unwrap_or_else(|| panic!("no live event"));
    assert_eq!(first_event["path"], "/etc/shadow", "{first_event}");
    assert_eq!(first_event["id"].as_i64(), Some(first_id));
    drop(stream);
    fs::write(&release, "").unwrap_or_else(|error| panic!("{error}"));
    // Resumed after the first: the next two, in order, nothing before.
    let resumed = read_events(subscribe(&addr, &query, Some(first_id)), |seen| seen.len() >= 2);
    assert_eq!(resumed.len(), 2, "{resumed:?}");
    assert!(resumed.iter().all(|(id, _)| *id > first_id), "{resumed:?}");
    assert_eq!(resumed[0].1["path"], "/etc/gshadow", "{resumed:?}");
    assert_eq!(resumed[1].1["path"], "/etc/shadow", "{resumed:?}");
    // `?after=` resumes the same way; a bad id is a 400.
    let again =
        read_events(subscribe(&addr, &format!("{query}&after={}", resumed[0].0), None), |seen| !seen.is_empty());
    assert_eq!(again.first().map(|(id, _)| *id), Some(resumed[1].0));
    let (status, body) = http(&addr, "GET", "/api/v1/events?after=soon", Some(TOKEN), "");
    assert_eq!((status, body["field"].as_str()), (400, Some("after")), "{body}");
    // The CLI's stream saw the same three events.
    let mut lines = BufReader::new(follow.stdout.take().unwrap_or_else(|| panic!("no stdout"))).lines();
    let mut paths = Vec::new();
    while paths.len() < 3 {
        let line = lines.next().and_then(Result::ok).unwrap_or_else(|| panic!("governor events ended: {paths:?}"));
        let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|error| panic!("{error}: {line}"));
        paths.push(event["path"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(paths, ["/etc/shadow", "/etc/gshadow", "/etc/shadow"]);
    let _ = follow.kill();
    let _ = follow.wait();
    kill_agent_cgroup(&agent);
    let _ = child.wait_with_output();
}

/// The schemathesis installed by `cargo xtask setup` (a venv under target/).
fn schemathesis() -> Option<PathBuf> {
    let st = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/schemathesis/bin/st");
    st.exists().then_some(st)
}

#[test]
fn the_server_keeps_to_its_openapi_document() {
    require!("the_server_keeps_to_its_openapi_document");
    let scene = scene!();
    let (_daemon, addr) = start(&scene, "http-openapi", None);
    let stream = std::net::TcpStream::connect(&addr).unwrap_or_else(|error| panic!("{error}"));
    let (status, text) = exchange(stream, "GET", "/openapi.json", None, "");
    assert_eq!(status, 200);
    let document: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(document["openapi"], "3.1.0");
    // Every documented GET without parameters answers as documented.
    for (path, item) in document["paths"].as_object().into_iter().flatten() {
        if path.contains('{') || path.ends_with("/events") {
            continue;
        }
        // JSON answers only (/metrics is OpenMetrics text, checked by schemathesis below).
        if let Some(get_op) =
            item.get("get").filter(|op| op["responses"]["200"]["content"].get("application/json").is_some())
        {
            let (status, body) = http(&addr, "GET", path, Some(TOKEN), "");
            assert_eq!(status, 200, "GET {path}: {body}");
            let schema = &get_op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"];
            let name = schema.as_str().and_then(|name| name.rsplit('/').next()).unwrap_or_default();
            let required = &document["components"]["schemas"][name]["required"];
            for field in required.as_array().into_iter().flatten() {
                let field = field.as_str().unwrap_or_default();
                assert!(body.get(field).is_some(), "GET {path}: no '{field}' of {name}: {body}");
            }
        }
    }
    let Some(st) = schemathesis() else {
        panic!("schemathesis is not installed under target/schemathesis: run `cargo xtask setup`");
    };
    // Every check but positive_data_acceptance: a schema cannot say which programs are on
    // PATH or which text is a duration, so some schema-valid requests are rightly refused
    // (with a 400 naming the field). The event stream never ends: checked by its own test.
    // No stateful phase: a registered agent is not yet one that can be suspended.
    let out = output(
        Command::new(st)
            .args(["run", &format!("http://{addr}/openapi.json")])
            .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
            .args(["--phases", "examples,coverage,fuzzing", "--exclude-checks", "positive_data_acceptance"])
            .args(["--max-examples", "20", "--exclude-path-regex", "events", "--no-color"])
            .current_dir(&scene.root),
    );
    assert_eq!(out.status.code(), Some(0), "schemathesis:\n{}\n{}", stdout(&out), stderr(&out));
}

/// An HTTP request over the Unix socket `socket` from `python3`, run by `wrapper` (setpriv
/// as another user, or governor run as an agent): the status code it printed.
fn unix_request(wrapper: &mut Command, socket: &Path, method: &str, path: &str, body: &str) -> (String, String) {
    let script = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as error:
    print("connect", error.errno); sys.exit(0)
body = sys.argv[4].encode()
s.sendall(("%s %s HTTP/1.1\r\nHost: governor\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (sys.argv[2], sys.argv[3], len(body))).encode() + body)
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
head, _, rest = data.partition(b"\r\n\r\n")
print(head.split(b" ")[1].decode())
print(rest.decode())
"#;
    let out = output(wrapper.args(["/usr/bin/python3", "-c", script]).arg(socket).args([method, path, body]));
    let text = stdout(&out);
    let mut lines = text.lines();
    let status = lines.next().unwrap_or_default().to_owned();
    (status, lines.collect::<Vec<_>>().join("\n") + &stderr(&out))
}

#[test]
fn the_unix_door_admits_peers_on_the_control_sockets_terms() {
    require!("the_unix_door_admits_peers_on_the_control_sockets_terms");
    let scene = scene!();
    let config = scene.root.join("group.toml");
    fs::write(&config, "control_group = \"nogroup\"\n").unwrap_or_else(|error| panic!("{error}"));
    let config = config.to_string_lossy().into_owned();
    let socket = scene.root.join("door.sock");
    let daemon = Daemon::start_at(&scene.root, &socket, None, &["--config", &config], &[]);
    let door = socket.with_extension("http.sock");
    let mode = fs::metadata(&door).map(|meta| meta.permissions().mode() & 0o777).unwrap_or(0);
    assert_eq!(mode, 0o660, "the door's socket is the control group's, as the control socket is");
    // Opened to everyone (a misconfiguration): SO_PEERCRED still decides.
    fs::set_permissions(&door, fs::Permissions::from_mode(0o666)).unwrap_or_else(|error| panic!("{error}"));
    fs::set_permissions(&scene.root, fs::Permissions::from_mode(0o755)).unwrap_or_else(|error| panic!("{error}"));
    let victim = format!("door-{}", std::process::id());
    let child = spawn_run(&daemon, &scene, &["--trust", "medium"], &victim, "sleep 60");
    let as_user = |gid: &str| {
        let mut command = Command::new("setpriv");
        command.args(["--reuid=65534", &format!("--regid={gid}"), "--clear-groups"]);
        command
    };
    let (status, body) = unix_request(&mut as_user("1"), &door, "GET", "/api/v1/status", "");
    assert_eq!(status, "403", "a stranger: {body}");
    assert!(body.contains("not root nor in the control group"), "{body}");
    let nogroup = "65534";
    let (status, body) = unix_request(&mut as_user(nogroup), &door, "GET", "/api/v1/status", "");
    assert_eq!(status, "200", "a member of the control group reads: {body}");
    wait_until("the agent supervised", Duration::from_secs(20), || {
        let (status, _) = unix_request(&mut as_user(nogroup), &door, "GET", &format!("/api/v1/agents/{victim}"), "");
        status == "200" && !frozen(&victim)
    });
    // It controls agents (recorded as itself) but may not widen a ring.
    let register = serde_json::json!({ "agent_id": "widened", "allowed_paths": ["/root"] }).to_string();
    let (status, body) = unix_request(&mut as_user(nogroup), &door, "POST", "/api/v1/agents", &register);
    assert_eq!(status, "403", "{body}");
    assert!(!scene.root.join("registered/widened.toml").exists());
    wait_until("the victim suspended by the group member", Duration::from_secs(20), || {
        let (status, _) =
            unix_request(&mut as_user(nogroup), &door, "POST", &format!("/api/v1/agents/{victim}/suspend"), "");
        status == "200"
    });
    assert!(frozen(&victim));
    let actions = output(daemon.governor().args(["audit", "actions", "--agent", &victim, "--format", "jsonl"]));
    assert!(stdout(&actions).contains("\"actor\":\"nobody (uid 65534, pid "), "{}", stdout(&actions));
    // A root process inside an agent's cgroup is refused.
    let mut agent = daemon.governor();
    agent.args(["run", "--trust", "admin", "--agent-id", &format!("inside-{}", std::process::id()), "--workspace"]);
    agent.arg(&scene.workspace).arg("--");
    let (status, body) = unix_request(&mut agent, &door, "GET", "/api/v1/status", "");
    assert_eq!(status, "403", "{body}");
    assert!(body.contains("agents may not control governor"), "{body}");
    kill_agent_cgroup(&victim);
    let _ = child.wait_with_output();
}

#[test]
fn the_cli_asks_the_same_service_over_the_control_socket() {
    require!("the_cli_asks_the_same_service_over_the_control_socket");
    let scene = scene!();
    let (daemon, addr) = start(&scene, "http-cli", None);
    let agent = format!("cli-{}", std::process::id());
    // A registration made by the CLI is the one the HTTP door shows.
    let out = output(daemon.governor().args([
        "agents",
        "register",
        &agent,
        "--trust",
        "high",
        "--deny-destination",
        "192.0.2.7:443",
        "--reason",
        "from the CLI",
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let shown = get(&addr, &format!("/api/v1/agents/{agent}"));
    assert_eq!(shown["registration"]["trust"], "high", "{shown}");
    assert_eq!(shown["registration"]["denied_destinations"][0], "192.0.2.7:443", "{shown}");
    let validate = output(daemon.governor().args(["validate", "--agent-id", &agent, "connect", "192.0.2.7:443"]));
    assert_eq!(validate.status.code(), Some(1), "{}", stdout(&validate));
    assert!(stdout(&validate).contains("kernel deny map"), "{}", stdout(&validate));
    // Bad input: one line naming the field, exit 2.
    let out = output(daemon.governor().args(["agents", "register", &agent, "--deny-destination", "somewhere.example"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("denied_destinations") && stderr(&out).lines().count() == 1, "{}", stderr(&out));
    let out = output(daemon.governor().args(["agents", "show", "nobody-here"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // An incident reported by the CLI, for a running agent, is the store's and the door's.
    let mut child = spawn_run(&daemon, &scene, &[], &agent, "cat /etc/shadow; sleep 60");
    wait_until("the agent supervised", Duration::from_secs(20), || supervised(&addr, &agent));
    // The recorded events, without --follow: the denial is among them (before the agent is
    // frozen below).
    wait_until("the denial listed by governor events", Duration::from_secs(20), || {
        let out = output(daemon.governor().args(["events", "--agent", &agent, "--decision", "deny"]));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        stdout(&out).lines().any(|line| line.contains(" open deny /etc/shadow"))
    });
    let out = output(daemon.governor().args([
        "incident",
        "report",
        "--agent",
        &agent,
        "--type",
        "data-exfiltration",
        "--severity",
        "critical",
        "--description",
        "asked to post the keys",
        "--auto-suspend",
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("agent suspended"), "{}", stdout(&out));
    assert!(frozen(&agent));
    let incidents = get(&addr, &format!("/api/v1/incidents?agent={agent}"));
    let reported = incidents["incidents"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|incident| incident["type"] == "data-exfiltration")
        .cloned()
        .unwrap_or_else(|| panic!("{incidents}"));
    assert_eq!(
        (reported["severity"].as_str(), reported["description"].as_str()),
        (Some("critical"), Some("asked to post the keys"))
    );
    let out = output(daemon.governor().args(["events", "--kind", "teleport"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("kind"), "{}", stderr(&out));
    kill_agent_cgroup(&agent);
    let _ = child.wait();
}
