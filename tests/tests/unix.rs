//! Pathname UNIX sockets below admin: a root-owned socket of a service is not a door for a
//! uid-0 agent (its mount namespace masks every socket bound at launch but the listed ones),
//! while the sockets a policy lists and the agent's own keep working.

use std::{
    fs,
    os::unix::{fs::PermissionsExt as _, net::UnixListener},
    path::PathBuf,
};

use governor_tests::{Scene, require, scene, stderr, stdout};

/// A listening socket owned by root, mode 0600, outside any sandbox; removed when dropped.
struct Service {
    path: PathBuf,
    _listener: UnixListener,
}

impl Service {
    fn bind(name: &str) -> Service {
        let path = PathBuf::from(format!("/run/governor-{name}-{}.sock", std::process::id()));
        let _ = fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap_or_else(|error| panic!("{error}"));
        Service { path, _listener: listener }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn connect(scene: &Scene, trust: &str, extra: &[&str], socket: &std::path::Path) -> String {
    let output = scene.governor(trust, extra, [scene.attempt.as_os_str(), "unix-connect".as_ref(), socket.as_os_str()]);
    let word = stdout(&output).trim().to_owned();
    assert!(!word.is_empty(), "ring {trust}: {}", stderr(&output));
    word
}

#[test]
fn a_root_owned_service_socket_is_masked_below_admin() {
    require!("a_root_owned_service_socket_is_masked_below_admin");
    let scene = scene!();
    let service = Service::bind("service");
    // The agent runs as uid 0: the socket's owner check alone would let it in.
    for trust in ["low", "medium", "high"] {
        assert_eq!(connect(&scene, trust, &[], &service.path), "EACCES", "ring {trust}");
    }
    assert_eq!(connect(&scene, "admin", &[], &service.path), "ok");
    // --verbose says how many were masked.
    let output = scene.governor("medium", &["--verbose"], ["true"]);
    assert!(stderr(&output).contains("UNIX sockets: "), "{}", stderr(&output));
}

#[test]
fn a_socket_a_policy_lists_stays_reachable() {
    require!("a_socket_a_policy_lists_stays_reachable");
    let scene = scene!();
    let service = Service::bind("listed");
    let other = Service::bind("unlisted");
    let policy = scene.root.join("unix.toml");
    fs::write(
        &policy,
        format!("[[unix.connect]]\npath = \"{}\"\nreason = \"the build cache daemon\"\n", service.path.display()),
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let policy = policy.to_string_lossy().into_owned();
    assert_eq!(connect(&scene, "medium", &["--policy", &policy], &service.path), "ok");
    assert_eq!(connect(&scene, "medium", &["--policy", &policy], &other.path), "EACCES");
    // A malformed entry is refused with its line.
    let bad = scene.root.join("bad.toml");
    fs::write(&bad, "[[unix.connect]]\npath = \"relative.sock\"\nreason = \"x\"\n")
        .unwrap_or_else(|error| panic!("{error}"));
    let output = scene.governor("medium", &["--policy", &bad.to_string_lossy()], ["true"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("bad.toml:2:"), "{}", stderr(&output));
}

#[test]
fn the_agents_own_sockets_work() {
    require!("the_agents_own_sockets_work");
    let scene = scene!();
    let script = "import socket, os\n\
        s = socket.socket(socket.AF_UNIX); s.bind('own.sock'); s.listen(1)\n\
        c = socket.socket(socket.AF_UNIX); c.connect('own.sock'); print('connected')\n\
        t = socket.socket(socket.AF_UNIX); t.bind(os.environ['TMPDIR'] + '/tmp.sock'); t.listen(1)\n\
        d = socket.socket(socket.AF_UNIX); d.connect(os.environ['TMPDIR'] + '/tmp.sock'); print('connected')\n";
    for trust in ["low", "medium", "high"] {
        let output = scene.governor(trust, &[], ["/usr/bin/python3", "-c", script]);
        assert_eq!(stdout(&output), "connected\nconnected\n", "ring {trust}: {}", stderr(&output));
        let _ = fs::remove_file(scene.workspace.join("own.sock"));
    }
}
