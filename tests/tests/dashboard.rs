//! The dashboard at `/` on the HTTP door, in Debian's headless Chromium driven by Playwright
//! (`playwright-core` under `target/dashboard-node`, installed by `cargo xtask setup`): the
//! page shows a real agent's denial, its suspend button freezes the real cgroup, the timeline
//! renders, and the token is only ever in the URL once. A screenshot is kept in
//! `target/dashboard.png` for review.

use std::{
    fs,
    io::{Read as _, Write as _},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use governor_tests::{Daemon, Scene, frozen, require, scene, stderr, stdout, wait_until};

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|error| panic!("{error}: {text}"))
}

fn output(command: &mut Command) -> Output {
    command.output().unwrap_or_else(|error| panic!("{error}"))
}

fn rows_once_known(daemon: &Daemon, args: &[&str]) -> Vec<serde_json::Value> {
    let out = output(daemon.governor().args(args).args(["--format", "jsonl"]));
    if stderr(&out).contains("not in the audit store") {
        return Vec::new();
    }
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    stdout(&out).lines().map(json).collect()
}

/// An agent refused `/etc/shadow` once, then waiting on a FIFO (no events).
fn spawn_agent(daemon: &Daemon, scene: &Scene, agent: &str) -> Child {
    let fifo = std::ffi::CString::new(scene.workspace.join("release").to_string_lossy().as_bytes())
        .unwrap_or_else(|error| panic!("{error}"));
    // SAFETY: mkfifo(3) with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o666) }, 0, "mkfifo");
    daemon
        .governor()
        .args(["run", "--trust", "medium", "--agent-id", agent, "--workspace"])
        .arg(&scene.workspace)
        .args(["--", "sh", "-c", "cat /etc/shadow 2>/dev/null; read line < release"])
        .env("HOME", &scene.home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("{error}"))
}

/// One HTTP/1.1 request; the status line and headers, and the body.
fn http(addr: &str, request: &str) -> (String, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap_or_else(|error| panic!("{addr}: {error}"));
    stream.write_all(request.as_bytes()).unwrap_or_else(|error| panic!("{error}"));
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (head.to_owned(), body.to_owned())
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|error| panic!("{error}"));
    listener.local_addr().map(|addr| addr.port()).unwrap_or_else(|error| panic!("{error}"))
}

fn target() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target")
}

#[test]
fn the_dashboard_shows_a_real_denial_and_its_suspend_button_freezes_the_cgroup() {
    require!("the_dashboard_shows_a_real_denial_and_its_suspend_button_freezes_the_cgroup");
    let modules = target().join("dashboard-node/node_modules");
    assert!(
        modules.join("playwright-core").exists() && Path::new("/usr/bin/chromium").exists(),
        "playwright-core under {} and /usr/bin/chromium are installed by `cargo xtask setup`",
        modules.display()
    );
    let scene = scene!();
    let token = format!("dashboard-test-token-{}", std::process::id());
    let token_file = scene.root.join("token");
    fs::write(&token_file, &token).unwrap_or_else(|error| panic!("{error}"));
    fs::set_permissions(&token_file, fs::Permissions::from_mode(0o600)).unwrap_or_else(|error| panic!("{error}"));
    let addr = format!("127.0.0.1:{}", free_port());
    let daemon =
        Daemon::start(&scene.root, "dashboard", &["--http", &addr, "--http-token-file", &token_file.to_string_lossy()]);
    let agent = format!("dash-{}", std::process::id());
    let child = spawn_agent(&daemon, &scene, &agent);
    wait_until("the agent's denial of /etc/shadow in the store", Duration::from_secs(30), || {
        rows_once_known(&daemon, &["audit", "query", "--agent", &agent, "--decision", "deny"])
            .iter()
            .any(|row| row["path"] == "/etc/shadow")
    });

    // The token opens a session once; without it (or with a wrong one) there is no page.
    let get = |path: &str, extra: &str| {
        http(&addr, &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\r\n"))
    };
    let (head, body) = get("/", "");
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(body.contains("?token="), "{body}");
    let (head, _) = get("/?token=not-the-token", "");
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    let (head, _) = get(&format!("/?token={token}"), "");
    assert!(head.starts_with("HTTP/1.1 303"), "{head}");
    let lower = head.to_lowercase();
    assert!(lower.contains("\r\nlocation: /\r\n"), "redirected without the token: {head}");
    let cookie = head
        .lines()
        .find_map(|line| line.strip_prefix("set-cookie: ").or_else(|| line.strip_prefix("Set-Cookie: ")))
        .unwrap_or_else(|| panic!("no session cookie: {head}"));
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && cookie.contains("Path=/"), "{cookie}");
    assert!(!cookie.contains(&token), "the cookie is not the token: {cookie}");
    let session = cookie.split(';').next().unwrap_or_default();
    let (head, page) = get("/", &format!("Cookie: {session}\r\n"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_lowercase().contains("content-security-policy: default-src 'none'"), "{head}");
    assert!(page.contains("<svg id=\"timeline\"") && !page.contains(&token), "{page}");
    let (head, _) = get("/api/v1/status", &format!("Cookie: {session}.forged\r\n"));
    assert!(head.starts_with("HTTP/1.1 401"), "a forged session is no session: {head}");

    // The browser.
    let screenshot = target().join("dashboard.png");
    let _ = fs::remove_file(&screenshot);
    let profile = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboard/check.js");
    let out = output(
        Command::new("node")
            .arg(script)
            .arg(format!("http://{addr}"))
            .arg(&token)
            .arg(&agent)
            .arg(&screenshot)
            .arg(profile.path())
            .env("NODE_PATH", &modules)
            .stdin(Stdio::null()),
    );
    let seen = json(stdout(&out).lines().last().unwrap_or("{}"));
    assert_eq!(out.status.code(), Some(0), "{seen}\n{}", stderr(&out));
    assert_eq!(seen["url_after_login"], format!("http://{addr}/"), "{seen}");
    assert_eq!(seen["cookie"]["httpOnly"], true, "{seen}");
    assert_eq!(seen["cookie"]["sameSite"], "Strict", "{seen}");
    let denial = seen["denial_row"].as_array().cloned().unwrap_or_default();
    assert!(denial.contains(&"/etc/shadow".into()) && denial.contains(&"deny".into()), "{seen}");
    assert!(denial.contains(&"EACCES".into()), "the errno the agent saw: {seen}");
    assert_eq!(seen["stream"], "events: live", "{seen}");
    assert!(seen["timeline"]["deny_rects"].as_u64().unwrap_or(0) >= 1, "{seen}");
    assert!(seen["timeline"]["deny"].as_u64().unwrap_or(0) >= 1, "{seen}");
    assert!(seen["timeline"]["allow"].as_u64().unwrap_or(0) >= 1, "the agent's allowed opens: {seen}");
    assert!(seen["timeline"]["width"].as_f64().unwrap_or(0.0) > 100.0, "{seen}");
    assert_eq!(seen["cards"]["agents-detail"], "1 active, 0 suspended", "{seen}");
    assert_ne!(seen["cards"]["score"], "–", "{seen}");
    assert!(seen["cards"]["latency"].as_str().is_some_and(|latency| latency.ends_with("µs")), "{seen}");
    assert_eq!(seen["state_before"], "running", "{seen}");
    assert_eq!(seen["action_result"], format!("{agent}: suspended"), "{seen}");
    assert_eq!(seen["failures"], serde_json::json!([]), "{seen}");
    assert_eq!(seen["elsewhere"], serde_json::json!([]), "no request left the daemon's origin: {seen}");

    // The click froze the real cgroup; the request without the CSRF header was refused and
    // left it frozen.
    assert!(frozen(&agent), "cgroup.events of {agent} does not say frozen 1 after the click");
    assert_eq!(seen["without_csrf"]["status"], 403, "{seen}");
    assert!(seen["without_csrf"]["body"]["error"].as_str().is_some_and(|e| e.contains("X-Governor-CSRF")), "{seen}");
    let actions = rows_once_known(&daemon, &["audit", "actions", "--agent", &agent]);
    let suspend = actions.iter().find(|row| row["action"] == "suspend").unwrap_or_else(|| panic!("{actions:?}"));
    assert!(suspend["actor"].as_str().is_some_and(|actor| actor.starts_with("token (dashboard session ")), "{suspend}");
    assert_eq!(suspend["why"], "dashboard suspend", "{suspend}");
    assert!(!actions.iter().any(|row| row["action"] == "resume"), "{actions:?}");
    let png = fs::read(&screenshot).unwrap_or_default();
    assert!(png.len() > 10_000 && png.starts_with(b"\x89PNG"), "screenshot {}", screenshot.display());
    println!("dashboard screenshot: {}", screenshot.display());

    let out = output(daemon.governor().args(["kill", &agent]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = child.wait_with_output().unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(out.status.code(), Some(137), "{}", stderr(&out));
}
