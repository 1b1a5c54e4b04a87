//! `governor mcp`: the MCP door, driven by the official MCP Python SDK (installed under
//! `target/mcp-venv` by `cargo xtask setup`) against a real daemon and a real agent. The
//! answers are checked against the audit store (through the CLI) and the agent's cgroup.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio},
    time::Duration,
};

use governor_tests::{Daemon, Scene, frozen, governor_bin, require, scene, stderr, stdout, wait_until};

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|error| panic!("{error}: {text}"))
}

fn output(command: &mut Command) -> Output {
    command.output().unwrap_or_else(|error| panic!("{error}"))
}

/// The SDK's Python: `GOVERNOR_MCP_PYTHON`, else the virtual environment setup made.
fn sdk_python() -> PathBuf {
    let python = std::env::var_os("GOVERNOR_MCP_PYTHON")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/mcp-venv/bin/python"), PathBuf::from);
    assert!(python.exists(), "{} is missing: `cargo xtask setup` installs the MCP Python SDK there", python.display());
    python
}

/// `tests/mcp/client.py` running `governor --socket S mcp` as its server.
struct Client {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Client {
    fn start(daemon: &Daemon) -> Client {
        let socket = daemon.socket.to_string_lossy().into_owned();
        let governor = governor_bin().to_string_lossy().into_owned();
        Client::spawn(&[&governor, "--socket", &socket, "mcp"])
    }

    /// A client of MCP's streamable HTTP transport on the HTTP door.
    fn http(url: &str, token: &str) -> Client {
        Client::spawn(&["--http", url, token])
    }

    fn spawn(args: &[&str]) -> Client {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("mcp/client.py");
        let mut child = Command::new(sdk_python())
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("starting the MCP client: {error}"));
        let stdin = child.stdin.take().unwrap_or_else(|| panic!("no stdin"));
        let stdout = BufReader::new(child.stdout.take().unwrap_or_else(|| panic!("no stdout")));
        let mut client = Client { child, stdin, stdout };
        let hello = client.answer();
        assert_eq!(hello["server"], "governor", "{hello}");
        client
    }

    fn answer(&mut self) -> serde_json::Value {
        let mut line = String::new();
        let read = self.stdout.read_line(&mut line).unwrap_or_else(|error| panic!("{error}"));
        assert!(read > 0, "the MCP client ended: {:?}", self.child.try_wait());
        json(&line)
    }

    fn ask(&mut self, request: serde_json::Value) -> serde_json::Value {
        writeln!(self.stdin, "{request}").unwrap_or_else(|error| panic!("{error}"));
        self.answer()
    }

    fn tools(&mut self) -> Vec<serde_json::Value> {
        let listed = self.ask(serde_json::json!({ "list": true }));
        listed["tools"].as_array().cloned().unwrap_or_else(|| panic!("{listed}"))
    }

    /// A call that succeeded: its structured answer.
    fn call(&mut self, tool: &str, arguments: serde_json::Value) -> serde_json::Value {
        let answer = self.ask(serde_json::json!({ "call": tool, "arguments": arguments }));
        assert_eq!(answer["is_error"], false, "{tool}: {answer}");
        answer["structured"].clone()
    }

    /// A call that the tool refused: its `{"error", "field"}`.
    fn refused(&mut self, tool: &str, arguments: serde_json::Value) -> serde_json::Value {
        let answer = self.ask(serde_json::json!({ "call": tool, "arguments": arguments }));
        assert_eq!(answer["is_error"], true, "{tool} should refuse: {answer}");
        answer["structured"].clone()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rows(daemon: &Daemon, args: &[&str]) -> Vec<serde_json::Value> {
    let out = output(daemon.governor().args(args).args(["--format", "jsonl"]));
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    stdout(&out).lines().map(json).collect()
}

/// Like [`rows`], empty while the store does not know the agent yet.
fn rows_once_known(daemon: &Daemon, args: &[&str]) -> Vec<serde_json::Value> {
    let out = output(daemon.governor().args(args).args(["--format", "jsonl"]));
    if stderr(&out).contains("not in the audit store") {
        return Vec::new();
    }
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    stdout(&out).lines().map(json).collect()
}

/// The shipped rings and rules, in a directory of the test's (create_policy adds to it).
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

/// The id of the denial of /etc/shadow among `entries`.
fn shadow_id(entries: &[serde_json::Value]) -> i64 {
    entries
        .iter()
        .find(|row| row["path"] == "/etc/shadow")
        .and_then(|row| row["id"].as_i64())
        .unwrap_or_else(|| panic!("no /etc/shadow in {entries:?}"))
}

/// An agent in `trust` that is refused `/etc/shadow` once, then waits on a FIFO (no events)
/// until the test ends it.
fn spawn_agent(daemon: &Daemon, scene: &Scene, trust: &str, agent: &str) -> Child {
    let fifo = std::ffi::CString::new(scene.workspace.join("release").to_string_lossy().as_bytes())
        .unwrap_or_else(|error| panic!("{error}"));
    // SAFETY: mkfifo(3) with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o666) }, 0, "mkfifo");
    daemon
        .governor()
        .args(["run", "--trust", trust, "--agent-id", agent, "--workspace"])
        .arg(&scene.workspace)
        .args(["--", "sh", "-c", "cat /etc/shadow 2>/dev/null; read line < release"])
        .env("HOME", &scene.home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("{error}"))
}

const TOOLS: [&str; 10] = [
    "create_policy",
    "get_audit_log",
    "get_compliance_status",
    "get_events",
    "kill_agent",
    "register_agent",
    "report_incident",
    "resume_agent",
    "suspend_agent",
    "validate_action",
];

#[test]
fn the_mcp_tools_answer_from_the_store_and_act_on_the_agents_cgroup() {
    require!("the_mcp_tools_answer_from_the_store_and_act_on_the_agents_cgroup");
    let scene = scene!();
    let daemon = Daemon::start_with(&scene.root, "mcp", Some(&ring_dir(&scene)), &[]);
    let agent = format!("mcp-{}", std::process::id());
    let child = spawn_agent(&daemon, &scene, "medium", &agent);
    wait_until("the agent's denial of /etc/shadow in the store", Duration::from_secs(30), || {
        rows_once_known(&daemon, &["audit", "query", "--agent", &agent, "--decision", "deny"])
            .iter()
            .any(|row| row["path"] == "/etc/shadow")
    });
    let mut client = Client::start(&daemon);

    let tools = client.tools();
    let mut names: Vec<&str> = tools.iter().filter_map(|tool| tool["name"].as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, TOOLS, "{tools:?}");
    for tool in &tools {
        assert_eq!(tool["input_schema"]["type"], "object", "{tool}");
    }
    let control = tools.iter().find(|tool| tool["name"] == "suspend_agent").cloned().unwrap_or_default();
    assert_eq!(control["input_schema"]["required"], serde_json::json!(["agent_id"]), "{control}");

    // get_audit_log: the agent's real denial, the rows `governor audit query` shows.
    let log = client.call("get_audit_log", serde_json::json!({ "agent_id": agent, "status": "denied" }));
    let store = rows(&daemon, &["audit", "query", "--agent", &agent, "--decision", "deny"]);
    let entries = log["entries"].as_array().cloned().unwrap_or_default();
    let ids: Vec<serde_json::Value> = entries.iter().map(|row| row["id"].clone()).collect();
    assert_eq!(ids, store.iter().map(|row| row["seq"].clone()).collect::<Vec<_>>(), "{log}");
    assert_eq!(log["count"], store.len(), "{log}");
    let shadow = entries.iter().find(|row| row["path"] == "/etc/shadow").unwrap_or_else(|| panic!("{log}"));
    assert_eq!(shadow["decision"], "deny", "{shadow}");
    assert_eq!(shadow["result"], "EACCES", "as the agent saw it: {shadow}");
    let opens = client.call("get_audit_log", serde_json::json!({ "agent_id": agent, "action_type": "open" }));
    let all_open = opens["entries"].as_array().cloned().unwrap_or_default();
    assert!(!all_open.is_empty() && all_open.iter().all(|row| row["kind"] == "open"), "{opens}");

    // get_compliance_status: PolicyGuard's fields, from the same summary as `governor status`.
    let compliance = client.call("get_compliance_status", serde_json::json!({}));
    let status = json(&stdout(&output(daemon.governor().args(["status", "--all", "--format", "json"]))));
    assert_eq!(compliance["total_agents"], status["compliance"]["agents_total"], "{compliance}");
    assert_eq!(compliance["active_agents"], 1, "{compliance}");
    assert_eq!(compliance["suspended_agents"], 0, "{compliance}");
    assert_eq!(compliance["total_policies"], status["compliance"]["rules_loaded"], "{compliance}");
    assert_eq!(compliance["compliance_score"], status["compliance"]["compliance_score"], "{compliance}");
    let listed = compliance["agents"].as_array().cloned().unwrap_or_default();
    assert!(listed.iter().any(|row| row["agent"] == agent.as_str() && row["state"] == "running"), "{compliance}");

    // validate_action: the plan the kernel enforces. The agent was refused /etc/shadow, and
    // so is the answer; a program of the ring is allowed.
    let shadow = client.call(
        "validate_action",
        serde_json::json!({ "agent_id": agent, "action_type": "read", "target": "/etc/shadow", "context": "why not" }),
    );
    assert_eq!(shadow["allowed"], false, "{shadow}");
    assert_eq!(shadow["layer"], "landlock", "{shadow}");
    assert_eq!(shadow["trust"], "medium", "the agent's own ring: {shadow}");
    assert_eq!(shadow["context"], "why not", "{shadow}");
    let cat = client.call(
        "validate_action",
        serde_json::json!({ "agent_id": agent, "action_type": "exec", "target": "/usr/bin/cat" }),
    );
    assert_eq!(cat["allowed"], true, "the agent ran cat: {cat}");
    let metadata = client.call(
        "validate_action",
        serde_json::json!({ "agent_id": agent, "action_type": "connect", "target": "169.254.169.254:80" }),
    );
    assert_eq!(metadata["allowed"], false, "{metadata}");
    let bad = client
        .refused("validate_action", serde_json::json!({ "agent_id": agent, "action_type": "fly", "target": "/" }));
    assert_eq!(bad["field"], "action_type", "{bad}");
    let bad = client.refused("validate_action", serde_json::json!({ "agent_id": agent, "action_type": "read" }));
    assert_eq!(bad["field"], "target", "{bad}");
    let bad = client.refused(
        "validate_action",
        serde_json::json!({ "agent_id": agent, "action_type": "connect", "target": "/etc" }),
    );
    assert_eq!(bad["field"], "target", "{bad}");

    // register_agent: a later run of that id gets the lists on top of its ring, which
    // validate_action already answers from.
    let registered = format!("mcp-registered-{}", std::process::id());
    let denied = scene.workspace.join("private.txt");
    fs::write(&denied, "x").unwrap_or_else(|error| panic!("{error}"));
    let answer = client.call(
        "register_agent",
        serde_json::json!({
            "agent_id": registered, "name": "Registered", "description": "an MCP test", "trust_level": "medium",
            "denied_paths": [denied], "denied_tools": ["/usr/bin/env"],
        }),
    );
    assert_eq!(answer["trust"], "medium", "{answer}");
    let private = client.call(
        "validate_action",
        serde_json::json!({ "agent_id": registered, "action_type": "read", "target": denied }),
    );
    assert_eq!(private["allowed"], false, "{private}");
    let env = client.call(
        "validate_action",
        serde_json::json!({ "agent_id": registered, "action_type": "exec", "target": "/usr/bin/env" }),
    );
    assert_eq!(env["allowed"], false, "{env}");
    let bad = client.refused("register_agent", serde_json::json!({ "agent_id": "x", "trust_level": "root" }));
    assert_eq!(bad["field"], "trust_level", "{bad}");
    let bad =
        client.refused("register_agent", serde_json::json!({ "agent_id": "y", "allowed_paths": ["relative/path"] }));
    assert_eq!(bad["field"], "allowed_paths", "{bad}");

    // create_policy: a rule the engine then holds; an invalid one is refused whole.
    let before = client.call("get_compliance_status", serde_json::json!({ "include_agents": false }));
    let created = client.call(
        "create_policy",
        serde_json::json!({
            "policy_id": "mcp-test", "description": "the MCP test's rule",
            "rules": [{ "id": "mcp-marker", "kind": "open", "path": ["**/mcp-marker"], "action": "audit", "severity": "low" }],
            "priority": 5,
        }),
    );
    assert_eq!(created["rules"], serde_json::json!(["mcp-marker"]), "{created}");
    let after = client.call("get_compliance_status", serde_json::json!({ "include_agents": false }));
    assert_eq!(after["total_policies"], before["total_policies"].as_u64().unwrap_or(0) + 1, "{after}");
    let refused = client.refused(
        "create_policy",
        serde_json::json!({ "policy_id": "mcp-bad", "rules": "[[rule]]\nid = \"x\"\naction = \"explode\"\nreason = \"r\"\n" }),
    );
    assert_eq!(refused["field"], "rules", "{refused}");
    let unchanged = client.call("get_compliance_status", serde_json::json!({ "include_agents": false }));
    assert_eq!(unchanged["total_policies"], after["total_policies"], "nothing half-applied: {unchanged}");

    // get_events: what was recorded after an id, and where to go on from.
    let first = shadow_id(&entries);
    let events = client.call(
        "get_events",
        serde_json::json!({ "agent_id": agent, "after": first - 1, "status": "denied", "wait_seconds": 5 }),
    );
    let listed = events["events"].as_array().cloned().unwrap_or_default();
    assert_eq!(listed.first().map(|event| event["id"].clone()), Some(first.into()), "{events}");
    assert!(listed.iter().all(|event| event["decision"] == "deny" && event["agent"] == agent.as_str()), "{events}");
    let quiet = client.call(
        "get_events",
        serde_json::json!({ "agent_id": agent, "status": "denied", "after": events["last_id"], "wait_seconds": 0.5 }),
    );
    assert_eq!(quiet["count"], 0, "{quiet}");
    assert_eq!(quiet["last_id"], events["last_id"], "{quiet}");
    let bad = client.refused("get_events", serde_json::json!({ "action_type": "teleport" }));
    assert_eq!(bad["field"], "action_type", "{bad}");

    // report_incident with auto_suspend freezes the agent, and is counted.
    let reported = client.call(
        "report_incident",
        serde_json::json!({
            "agent_id": agent, "incident_type": "suspicious_activity", "severity": "high",
            "description": "reported through MCP", "evidence": { "seen": 1 }, "auto_suspend": true,
        }),
    );
    assert_eq!(reported["agent_suspended"], true, "{reported}");
    assert!(frozen(&agent), "report_incident with auto_suspend left {agent} running");
    let incidents = rows(&daemon, &["audit", "incidents", "--agent", &agent]);
    assert!(
        incidents.iter().any(|row| row["rule"] == "suspicious_activity" && row["severity"] == "high"),
        "{incidents:?}"
    );
    let compliance = client.call("get_compliance_status", serde_json::json!({}));
    assert!(compliance["recent_violations"].as_i64().unwrap_or(0) >= 1, "{compliance}");
    let bad = client.refused(
        "report_incident",
        serde_json::json!({ "agent_id": agent, "incident_type": "x", "severity": "apocalyptic", "description": "d" }),
    );
    assert_eq!(bad["field"], "severity", "{bad}");
    client.call("resume_agent", serde_json::json!({ "agent_id": agent, "reason": "after the report" }));
    assert!(!frozen(&agent), "resume_agent left {agent} frozen");

    // suspend_agent freezes the real cgroup; the daemon records the MCP server as the caller.
    let suspended = client.call("suspend_agent", serde_json::json!({ "agent_id": agent, "reason": "mcp test" }));
    assert_eq!(suspended["state"], "suspended", "{suspended}");
    assert_eq!(suspended["success"], true, "{suspended}");
    assert!(frozen(&agent), "cgroup.events of {agent} does not say frozen 1");
    let compliance = client.call("get_compliance_status", serde_json::json!({ "include_agents": false }));
    assert_eq!(compliance["suspended_agents"], 1, "{compliance}");
    assert!(compliance.get("agents").is_none(), "{compliance}");
    client.call("resume_agent", serde_json::json!({ "agent_id": agent }));
    assert!(!frozen(&agent), "resume_agent left {agent} frozen");

    // Bad arguments and refusals are tool errors that name the argument.
    let missing = client.refused("suspend_agent", serde_json::json!({}));
    assert_eq!(missing["field"], "agent_id", "{missing}");
    let unknown = client.refused("kill_agent", serde_json::json!({ "agent_id": "no-such-agent" }));
    assert_eq!(unknown["field"], "agent_id", "{unknown}");
    assert!(unknown["error"].as_str().is_some_and(|error| error.contains("no-such-agent")), "{unknown}");
    let limit = client.refused("get_audit_log", serde_json::json!({ "limit": "ten" }));
    assert_eq!(limit["field"], "limit", "{limit}");
    let kind = client.refused("get_audit_log", serde_json::json!({ "action_type": "teleport" }));
    assert_eq!(kind["field"], "action_type", "{kind}");
    let range = client.refused("get_compliance_status", serde_json::json!({ "time_range": "yesterday-ish" }));
    assert_eq!(range["field"], "time_range", "{range}");
    let not_a_tool = client.ask(serde_json::json!({ "call": "format_disk", "arguments": {} }));
    assert!(not_a_tool["protocol_error"].as_str().is_some_and(|error| error.contains("format_disk")), "{not_a_tool}");

    // kill_agent ends it: governor run exits as SIGKILL's status.
    client.call("kill_agent", serde_json::json!({ "agent_id": agent, "reason": "mcp test over" }));
    let out = child.wait_with_output().unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(out.status.code(), Some(137), "{}", stderr(&out));
    let actions = rows(&daemon, &["audit", "actions", "--agent", &agent]);
    let done: Vec<(&str, &str)> = actions
        .iter()
        .filter(|row| row["action"] != "start" && row["action"] != "exit")
        .map(|row| (row["action"].as_str().unwrap_or(""), row["why"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        done,
        [
            ("suspend", r#"reported suspicious_activity incident: reported through MCP (evidence: {"seen":1})"#),
            ("resume", "after the report"),
            ("suspend", "mcp test"),
            ("resume", "governor mcp resume_agent"),
            ("kill", "mcp test over")
        ],
        "{actions:?}"
    );
    assert!(
        actions
            .iter()
            .filter(|row| row["action"] == "suspend")
            .all(|row| row["actor"].as_str().is_some_and(|actor| actor.starts_with("root (uid 0, pid "))),
        "{actions:?}"
    );
}

#[test]
fn governor_mcp_without_a_daemon_is_refused_before_serving() {
    let socket = std::env::temp_dir().join(format!("governor-no-daemon-{}.sock", std::process::id()));
    let out = output(Command::new(governor_bin()).arg("--socket").arg(&socket).arg("mcp").stdin(Stdio::null()));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(
        message.starts_with("governor: governor daemon at ") && message.contains(&socket.display().to_string()),
        "{message}"
    );
    assert!(stdout(&out).is_empty(), "nothing on the protocol's stdout: {}", stdout(&out));
}

#[test]
fn the_mcp_tools_are_served_on_the_http_door_to_the_bearer_of_the_token() {
    require!("the_mcp_tools_are_served_on_the_http_door_to_the_bearer_of_the_token");
    let scene = scene!();
    let token = format!("mcp-http-test-token-{}", std::process::id());
    let token_file = scene.root.join("token");
    fs::write(&token_file, &token).unwrap_or_else(|error| panic!("{error}"));
    fs::set_permissions(&token_file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .unwrap_or_else(|error| panic!("{error}"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|error| panic!("{error}"));
    let addr = format!("127.0.0.1:{port}");
    let daemon =
        Daemon::start(&scene.root, "mcp-http", &["--http", &addr, "--http-token-file", &token_file.to_string_lossy()]);
    let agent = format!("mcp-http-{}", std::process::id());
    let child = spawn_agent(&daemon, &scene, "medium", &agent);
    wait_until("the agent's denial of /etc/shadow in the store", Duration::from_secs(30), || {
        rows_once_known(&daemon, &["audit", "query", "--agent", &agent, "--decision", "deny"])
            .iter()
            .any(|row| row["path"] == "/etc/shadow")
    });
    let url = format!("http://{addr}/mcp");

    // Without the token the door answers 401 before MCP is spoken.
    let mut stream = std::net::TcpStream::connect(&addr).unwrap_or_else(|error| panic!("{error}"));
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap_or_else(|error| panic!("{error}"));
    let mut response = String::new();
    let _ = std::io::Read::read_to_string(&mut stream, &mut response);
    assert!(response.starts_with("HTTP/1.1 401"), "{response}");

    let mut client = Client::http(&url, &token);
    let tools = client.tools();
    let mut names: Vec<&str> = tools.iter().filter_map(|tool| tool["name"].as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, TOOLS, "{tools:?}");
    let log = client.call("get_audit_log", serde_json::json!({ "agent_id": agent, "status": "denied" }));
    let entries = log["entries"].as_array().cloned().unwrap_or_default();
    assert!(entries.iter().any(|row| row["path"] == "/etc/shadow" && row["result"] == "EACCES"), "{log}");
    let events = client.call(
        "get_events",
        serde_json::json!({ "agent_id": agent, "after": 0, "status": "denied", "wait_seconds": 5 }),
    );
    assert_eq!(events["last_id"], shadow_id(&entries), "{events}");
    client.call("suspend_agent", serde_json::json!({ "agent_id": agent, "reason": "over HTTP" }));
    assert!(frozen(&agent), "suspend_agent over HTTP left {agent} running");
    let unknown = client.refused("resume_agent", serde_json::json!({ "agent_id": "no-such-agent" }));
    assert_eq!(unknown["field"], "agent_id", "{unknown}");
    drop(client);

    let out = output(daemon.governor().args(["kill", &agent]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = child.wait_with_output().unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(out.status.code(), Some(137), "{}", stderr(&out));
    let actions = rows(&daemon, &["audit", "actions", "--agent", &agent]);
    let suspend = actions.iter().find(|row| row["action"] == "suspend").unwrap_or_else(|| panic!("{actions:?}"));
    assert_eq!((suspend["actor"].as_str(), suspend["why"].as_str()), (Some("token"), Some("over HTTP")), "{suspend}");
}
