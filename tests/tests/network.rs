//! Denied destinations through the real binary: the cloud metadata and credential endpoints of
//! the shipped rings, a deny rule on the loopback against every other address of the local
//! host, IPv4-mapped forms, and every way a socket names a destination (connect, sendto,
//! sendmsg, a connected UDP socket sending elsewhere).
//!
//! Each test runs in a network namespace of its own whose only interface is `lo`: an address
//! the hooks let through and that is not local gets ENETUNREACH (no packet leaves the
//! machine), a refusal by the cgroup socket hooks is EPERM, and the listeners the tests bind
//! on the wildcard address are reachable only from inside.

use std::{
    collections::BTreeMap,
    fs,
    net::{TcpListener, UdpSocket},
    process::Command,
};

use governor_tests::{Scene, governor_bin, require, scene, stderr, stdout};
use serde_json::Value;

/// Runs `body` on a thread of its own that first enters a new network namespace with `lo` up
/// (unshare moves only the calling thread; the children it spawns inherit the namespace).
fn isolated<T: Send>(body: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        let handle = scope.spawn(|| {
            // SAFETY: unshare(CLONE_NEWNET) takes no pointers and changes only this thread.
            let ret = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(ret, 0, "unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
            let up = Command::new("ip").args(["link", "set", "lo", "up"]).status();
            assert!(up.as_ref().is_ok_and(|status| status.success()), "ip link set lo up: {up:?}");
            body()
        });
        match handle.join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Runs `attempt OP ADDR...` (an op that prints `ADDR WORD` per address) in ring `trust` with
/// `extra` governor options; returns the word per address.
fn reach(scene: &Scene, trust: &str, extra: &[&str], op: &str, addrs: &[&str]) -> BTreeMap<String, String> {
    let mut args = vec![scene.attempt.to_string_lossy().into_owned(), op.to_owned()];
    args.extend(addrs.iter().map(|addr| (*addr).to_owned()));
    let output = scene.governor(trust, extra, &args);
    let words: BTreeMap<String, String> = stdout(&output)
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(addr, word)| (addr.to_owned(), word.to_owned()))
        .collect();
    assert_eq!(words.len(), addrs.len(), "attempt {op} in {trust}: {}\n{}", stdout(&output), stderr(&output));
    words
}

/// Asserts that every address got `expected`, naming all the ones that did not.
fn assert_all(words: &BTreeMap<String, String>, expected: &str, what: &str) {
    let wrong: Vec<String> =
        words.iter().filter(|(_, word)| *word != expected).map(|(addr, word)| format!("{addr}: {word}")).collect();
    assert!(wrong.is_empty(), "{what}: expected {expected} for every address, got {wrong:?}");
}

/// A policy overlay in the scene's root.
fn overlay(scene: &Scene, name: &str, text: &str) -> String {
    let path = scene.root.join(name);
    fs::write(&path, text).unwrap_or_else(|error| panic!("{error}"));
    path.to_string_lossy().into_owned()
}

/// The metadata and credential endpoints the shipped rings deny, on port 80 (which medium's
/// Landlock rules let through to the hooks), in the forms an agent would try.
const METADATA: [&str; 17] = [
    "169.254.169.254:80",
    "[fd00:ec2::254]:80",
    "169.254.170.2:80",
    "169.254.170.23:80",
    "[fd00:ec2::23]:80",
    "[fd20:ce::254]:80",
    "168.63.129.16:80",
    "100.100.100.200:80",
    "192.0.0.192:80",
    "[fd00:c1::a9fe:a9fe]:80",
    "[fe80::a9fe:a9fe%1]:80",
    "169.254.0.23:80",
    "169.254.42.42:80",
    "[fd00:42::42]:80",
    // IPv4-mapped IPv6 over an AF_INET6 socket: the same IPv4 destinations.
    "[::ffff:169.254.169.254]:80",
    "[::ffff:169.254.170.2]:80",
    "[::ffff:100.100.100.200]:80",
];

#[test]
fn cloud_metadata_and_credential_endpoints_are_denied_in_medium_and_high() {
    require!("cloud_metadata_and_credential_endpoints_are_denied_in_medium_and_high");
    let scene = scene!();
    isolated(|| {
        for trust in ["medium", "high"] {
            // Two refusals per medium agent: each is reported twice (hook and syscall), and
            // the shipped rules suspend a medium agent at its fifth refusal in ten seconds.
            let per_agent = if trust == "medium" { 2 } else { METADATA.len() };
            for addrs in METADATA.chunks(per_agent) {
                let words = reach(&scene, trust, &[], "tcp-connect-each", addrs);
                assert_all(&words, "EPERM", &format!("TCP connect in {trust}"));
            }
            // Addresses no rule denies get past the hooks and find no route: the EPERM above
            // is the hooks', not the namespace's. Azure's DNS resolver shares the WireServer's
            // address and stays reachable on port 53.
            let open = ["192.0.2.1:80", "[2001:db8::1]:80", "168.63.129.16:53", "169.254.169.253:53"];
            let words = reach(&scene, trust, &[], "tcp-connect-each", &open);
            assert_all(&words, "ENETUNREACH", &format!("TCP connect in {trust}"));
        }
        // UDP in high (medium allows UDP to the resolvers only): every port of them but
        // Azure's DNS on the WireServer's address.
        let datagrams: Vec<String> = METADATA
            .iter()
            .filter(|addr| !addr.starts_with("168.63.129.16"))
            .map(|addr| addr.replace(":80", ":53"))
            .collect();
        let datagrams: Vec<&str> = datagrams.iter().map(String::as_str).collect();
        let words = reach(&scene, "high", &[], "udp-sendto-each", &datagrams);
        assert_all(&words, "EPERM", "UDP sendto in high");
    });
}

#[test]
fn every_way_of_naming_a_destination_goes_through_the_hooks() {
    require!("every_way_of_naming_a_destination_goes_through_the_hooks");
    let scene = scene!();
    isolated(|| {
        let denied = ["169.254.169.254:53", "[fd00:ec2::254]:53", "[::ffff:169.254.170.2]:53"];
        for op in ["udp-connect-each", "udp-sendmsg-each", "udp-sendto-each", "tcp-fastopen-connect-each"] {
            let words = reach(&scene, "high", &[], op, &denied);
            assert_all(&words, "EPERM", &format!("{op} in high"));
        }
        // A UDP socket connected to an allowed address, then sending elsewhere: each
        // datagram's own address is checked. The allowed peer is a local socket.
        let peer = UdpSocket::bind("[::]:0").unwrap_or_else(|error| panic!("{error}"));
        let port = peer.local_addr().map(|addr| addr.port()).unwrap_or(0);
        for (via, targets) in [
            (format!("127.0.0.1:{port}"), vec!["169.254.169.254:53", "169.254.170.2:53"]),
            (format!("[::1]:{port}"), vec!["[fd00:ec2::254]:53", "[::ffff:169.254.169.254]:53"]),
        ] {
            let mut addrs = vec![via.as_str()];
            addrs.extend(&targets);
            let mut args = vec![scene.attempt.to_string_lossy().into_owned(), "udp-connected-sendto-each".into()];
            args.extend(addrs.iter().map(|addr| (*addr).to_owned()));
            let output = scene.governor("high", &[], &args);
            let lines: Vec<String> = stdout(&output).lines().map(str::to_owned).collect();
            let expected: Vec<String> = targets.iter().map(|addr| format!("{addr} EPERM")).collect();
            assert_eq!(lines, expected, "connected to {via}: {}", stderr(&output));
        }
        // The peer itself is reachable that way: the refusals above are about the targets.
        let mut args = vec![scene.attempt.to_string_lossy().into_owned(), "udp-connected-sendto-each".into()];
        args.extend([format!("127.0.0.1:{port}"), format!("127.0.0.1:{port}")]);
        let output = scene.governor("high", &[], &args);
        assert_eq!(stdout(&output).trim(), format!("127.0.0.1:{port} ok"), "{}", stderr(&output));
    });
}

/// Every address that reaches a listener on the local host on `port`, in every form.
fn local_forms(port: u16) -> Vec<String> {
    [
        "127.0.0.1",
        "127.0.0.2",
        "127.255.255.254",
        "0.0.0.0",
        "[::1]",
        "[::]",
        "[::ffff:127.0.0.1]",
        "[::ffff:127.1.2.3]",
        "[::ffff:0.0.0.0]",
    ]
    .iter()
    .map(|addr| format!("{addr}:{port}"))
    .collect()
}

#[test]
fn a_deny_rule_on_the_loopback_covers_every_local_address() {
    require!("a_deny_rule_on_the_loopback_covers_every_local_address");
    let scene = scene!();
    isolated(|| {
        // Dual-stack wildcard listeners: every local form reaches them (this namespace has
        // no other interface).
        let denied = TcpListener::bind("[::]:443").unwrap_or_else(|error| panic!("{error}"));
        let other = TcpListener::bind("[::]:444").unwrap_or_else(|error| panic!("{error}"));
        let forms = local_forms(443);
        let forms: Vec<&str> = forms.iter().map(String::as_str).collect();
        let words = reach(&scene, "high", &[], "tcp-connect-each", &forms);
        assert_all(&words, "ok", "TCP connect in high without the rule");

        for written in ["127.0.0.1", "::1"] {
            let rule = overlay(
                &scene,
                "deny-local.toml",
                &format!("[[network.deny]]\nto = \"{written}\"\nport = 443\nreason = \"a local service\"\n"),
            );
            let words = reach(&scene, "high", &["--policy", &rule], "tcp-connect-each", &forms);
            assert_all(&words, "EPERM", &format!("TCP connect in high, rule on {written}"));
            // Other ports stay open.
            let others = local_forms(444);
            let others: Vec<&str> = others.iter().map(String::as_str).collect();
            let words = reach(&scene, "high", &["--policy", &rule], "tcp-connect-each", &others);
            assert_all(&words, "ok", &format!("TCP connect to another port, rule on {written}"));
        }

        // UDP the same way, with sendto (no listener needed: a datagram to a closed port is sent).
        let rule = overlay(
            &scene,
            "deny-local-udp.toml",
            "[[network.deny]]\nto = \"127.0.0.1\"\nport = 5353\nreason = \"a local resolver\"\n",
        );
        let forms = local_forms(5353);
        let forms: Vec<&str> = forms.iter().map(String::as_str).collect();
        let words = reach(&scene, "high", &[], "udp-sendto-each", &forms);
        assert_all(&words, "ok", "UDP sendto in high without the rule");
        let words = reach(&scene, "high", &["--policy", &rule], "udp-sendto-each", &forms);
        assert_all(&words, "EPERM", "UDP sendto in high with the rule");
        drop((denied, other));
    });
}

#[test]
fn an_engine_rule_on_the_loopback_is_matched_in_every_local_form() {
    require!("an_engine_rule_on_the_loopback_is_matched_in_every_local_form");
    let scene = scene!();
    isolated(|| {
        let listener = TcpListener::bind("[::]:443").unwrap_or_else(|error| panic!("{error}"));
        let rules = overlay(
            &scene,
            "rules.toml",
            "[[rule]]\nid = \"no-local-https\"\nkind = \"connect\"\ndestination = [\"127.0.0.1:443\"]\n\
             action = \"deny\"\nseverity = \"medium\"\nreason = \"the local service is not for agents\"\n",
        );
        let store = scene.root.join("audit.db").to_string_lossy().into_owned();
        for (index, addr) in ["0.0.0.0:443", "[::1]:443", "[::ffff:127.0.0.1]:443"].iter().enumerate() {
            let id = format!("local-{index}-{}", std::process::id());
            let output = Command::new(governor_bin())
                .args(["--audit-db", &store, "run", "--trust", "high", "--agent-id", &id, "--policy", &rules])
                .arg("--workspace")
                .arg(&scene.workspace)
                .arg("--")
                .arg(&scene.attempt)
                .args(["tcp-connect-each", addr])
                .env("HOME", &scene.home)
                .output()
                .unwrap_or_else(|error| panic!("{error}"));
            assert_eq!(stdout(&output).trim(), format!("{addr} EPERM"), "{}", stderr(&output));
            // Every report of the connect (the socket hook's and the syscall's, which carries
            // the address as the agent wrote it) is decided by the rule.
            let rows = Command::new(governor_bin())
                .args([
                    "--audit-db",
                    &store,
                    "audit",
                    "query",
                    "--agent",
                    &id,
                    "--kind",
                    "connect",
                    "--format",
                    "jsonl",
                ])
                .output()
                .unwrap_or_else(|error| panic!("{error}"));
            let rows: Vec<Value> = stdout(&rows).lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
            assert!(!rows.is_empty(), "{addr}: no connect rows");
            for row in &rows {
                assert_eq!(
                    (row["decision"].as_str(), row["rule"].as_str()),
                    (Some("deny"), Some("no-local-https")),
                    "{addr}: {row}"
                );
            }
        }
        drop(listener);
    });
}

/// Starts `attempt tcp-listen-serve SECONDS [PORT]` in ring `trust` (agent `id`, store
/// `store`, `extra` options), knocks on the port it prints from outside the agent (this
/// thread), and returns whether the knock connected, what the agent printed after its port
/// (all it printed when it printed none), and its stderr.
fn knock(
    scene: &Scene,
    store: &str,
    trust: &str,
    id: &str,
    extra: &[&str],
    bind: Option<u16>,
) -> (bool, String, String) {
    use std::io::{BufRead as _, BufReader, Read as _};
    let mut command = Command::new(governor_bin());
    command
        .args(["--audit-db", store, "run", "--trust", trust, "--agent-id", id])
        .args(extra)
        .args(governor_tests::probes_args())
        .arg("--workspace")
        .arg(&scene.workspace)
        .arg("--")
        .arg(&scene.attempt)
        .args(["tcp-listen-serve", "3"])
        .args(bind.map(|port| port.to_string()))
        .env("HOME", &scene.home)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap_or_else(|error| panic!("{error}"));
    let mut out = BufReader::new(child.stdout.take().unwrap_or_else(|| panic!("no stdout")));
    let mut first = String::new();
    let _ = out.read_line(&mut first);
    let port: Option<u16> = first.trim().strip_prefix("port ").and_then(|port| port.parse().ok());
    let connected = port.is_some_and(|port| {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(1500)).is_ok()
    });
    let mut rest = String::new();
    let _ = out.read_to_string(&mut rest);
    let mut err = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut err);
    }
    let _ = child.wait();
    // No port: the listen was refused, and the first line says how.
    let said = if port.is_some() { rest } else { first + &rest };
    (connected, said.trim().to_owned(), err)
}

/// The store's `listen` rows of agent `id`.
fn listen_rows(store: &str, id: &str) -> Vec<Value> {
    let rows = Command::new(governor_bin())
        .args(["--audit-db", store, "audit", "query", "--agent", id, "--kind", "listen", "--format", "jsonl"])
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    stdout(&rows).lines().filter_map(|line| serde_json::from_str(line).ok()).collect()
}

#[test]
fn a_listener_on_a_port_the_kernel_picked_gets_no_connection() {
    require!("a_listener_on_a_port_the_kernel_picked_gets_no_connection");
    let scene = scene!();
    let store = scene.root.join("audit.db").to_string_lossy().into_owned();
    isolated(|| {
        // listen(2) before any bind takes a port of the kernel's choosing, which no bind
        // rule sees. Without BPF LSM the listen itself goes through; what comes to the
        // port is dropped by the cgroup skb hook, on every backend.
        let lsm = governor_tests::probes_args().iter().any(|arg| arg.starts_with("lsm"));
        for trust in ["medium", "high"] {
            let id = format!("listener-{trust}");
            let (connected, said, err) = knock(&scene, &store, trust, &id, &[], None);
            if lsm {
                assert_eq!(said, "EPERM", "{trust}: the LSM refuses the listen itself: {err}");
                continue;
            }
            assert!(!connected, "{trust}: a connection reached the agent's listener: {said}\n{err}");
            assert_eq!(said, "ETIMEDOUT", "{trust}: the agent accepted a connection: {err}");
            let rows = listen_rows(&store, &id);
            assert!(!rows.is_empty(), "{trust}: no listen row: {err}");
            for row in &rows {
                assert_eq!(
                    (row["source"].as_str(), row["decision"].as_str(), row["result"].as_str()),
                    (Some("cgroup-skb"), Some("deny"), Some("EPERM")),
                    "{trust}: {row}"
                );
                let destination = row["destination"].as_str().unwrap_or_default();
                assert!(destination.starts_with("127.0.0.1:"), "{trust}: the peer is named: {row}");
            }
        }
        // A port the policy lets the agent bind stays open to connections.
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0);
        let rules = overlay(
            &scene,
            "bind.toml",
            &format!("[[network.bind]]\nport = {port}\nreason = \"the agent's test server\"\n"),
        );
        let (connected, said, err) = knock(&scene, &store, "medium", "bound-medium", &["--policy", &rules], Some(port));
        assert!(connected && said == "ok", "a listener on an allowed port: {said}\n{err}");
        assert!(listen_rows(&store, "bound-medium").is_empty(), "nothing refused on an allowed port");
        // admin binds any port: its kernel-picked port takes connections.
        let (connected, said, err) = knock(&scene, &store, "admin", "listener-admin", &[], None);
        assert!(connected && said == "ok", "admin's listener: {said}\n{err}");
    });
}
