//! The escape suite: what an agent that wants out tries, run through the real `governor`
//! binary, with the exact outcome asserted for each ring. `attempt` prints `ok` or the errno.
//!
//! Where a ring allows the operation (admin, or high for TCP connect) the test asserts that
//! too, so a test cannot pass because the operation was broken for everyone.

use std::{
    fs,
    net::TcpListener,
    os::{
        linux::net::SocketAddrExt as _,
        unix::{
            fs::{PermissionsExt as _, symlink},
            net::{SocketAddr, UnixListener},
        },
    },
    process::{Child, Command},
    time::Duration,
};

use governor_tests::{Scene, require, scene, stderr, stdout};

const BELOW_ADMIN: [&str; 3] = ["low", "medium", "high"];

/// Asserts what `attempt OP` prints in each listed ring.
fn expect(scene: &Scene, op: &[&str], outcomes: &[(&str, &str)]) {
    for (trust, expected) in outcomes {
        let (got, code) = scene.attempt(trust, op);
        assert_eq!(got, *expected, "attempt {op:?} in ring {trust}");
        assert_eq!(code, i32::from(*expected != "ok"), "exit code of attempt {op:?} in ring {trust}");
    }
}

fn every_ring_below_admin(outcome: &'static str) -> Vec<(&'static str, &'static str)> {
    BELOW_ADMIN.iter().map(|trust| (*trust, outcome)).collect()
}

/// A process outside every sandbox, killed when dropped.
struct Outsider(Child);

impl Outsider {
    fn start() -> Outsider {
        let child = Command::new("sleep").arg("300").spawn().unwrap_or_else(|error| panic!("sleep: {error}"));
        Outsider(child)
    }

    fn pid(&self) -> String {
        self.0.id().to_string()
    }

    fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Outsider {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn ssh_key_in_home_is_unreadable_below_admin() {
    require!("ssh_key_in_home_is_unreadable_below_admin");
    let scene = scene!();
    let key = scene.home.join(".ssh/id_ed25519");
    let key = key.to_string_lossy();
    let mut outcomes = every_ring_below_admin("EACCES");
    outcomes.push(("admin", "ok"));
    expect(&scene, &["read", &key], &outcomes);
    // The directory cannot even be listed.
    expect(
        &scene,
        &["read", &scene.home.join(".aws/credentials").to_string_lossy()],
        &every_ring_below_admin("EACCES"),
    );
}

#[test]
fn etc_shadow_is_unreadable_below_admin() {
    require!("etc_shadow_is_unreadable_below_admin");
    let scene = scene!();
    let mut outcomes = every_ring_below_admin("EACCES");
    outcomes.push(("admin", "ok"));
    expect(&scene, &["read", "/etc/shadow"], &outcomes);
    expect(&scene, &["read", "/etc/gshadow"], &every_ring_below_admin("EACCES"));
    // Their backup copies hold the same hashes.
    for backup in ["/etc/shadow-", "/etc/gshadow-"] {
        if std::path::Path::new(backup).exists() {
            expect(&scene, &["read", backup], &every_ring_below_admin("EACCES"));
        }
    }
    // Its neighbours stay readable: the carve-out is exact.
    expect(&scene, &["read", "/etc/passwd"], &every_ring_below_admin("ok"));
}

#[test]
fn home_is_readable_in_medium_but_not_low() {
    require!("home_is_readable_in_medium_but_not_low");
    let scene = scene!();
    let notes = scene.home.join("notes.txt");
    expect(&scene, &["read", &notes.to_string_lossy()], &[("low", "EACCES"), ("medium", "ok"), ("high", "ok")]);
}

#[test]
fn a_secret_created_while_the_agent_runs_stays_unreadable() {
    require!("a_secret_created_while_the_agent_runs_stays_unreadable");
    let scene = scene!();
    // ~/.kube does not exist when the agent starts; it appears while it runs.
    let kube = scene.home.join(".kube");
    let started = scene.workspace.join("started");
    // Bounded: the agent gives up after 20 s rather than hang the suite.
    let script = format!(
        "touch {started}; i=0; while [ ! -e {kube}/config ] && [ $i -lt 2000 ]; do sleep 0.01; i=$((i+1)); done; {attempt} read {kube}/config",
        started = started.display(),
        kube = kube.display(),
        attempt = scene.attempt.display()
    );
    let child = Command::new(governor_tests::governor_bin())
        .args(["run", "--trust", "medium", "--workspace"])
        .arg(&scene.workspace)
        .args(governor_tests::probes_args())
        .args(["--", "sh", "-c", &script])
        .env("HOME", &scene.home)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("governor: {error}"));
    // Created once the agent runs (after launch, so no mask covers it: only Landlock).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !started.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    fs::create_dir(&kube).unwrap_or_else(|error| panic!("{error}"));
    fs::write(kube.join("config"), "token: secret\n").unwrap_or_else(|error| panic!("{error}"));
    let output = child.wait_with_output().unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(stdout(&output).trim(), "EACCES");
}

#[test]
fn writing_outside_the_workspace_is_denied() {
    require!("writing_outside_the_workspace_is_denied");
    let scene = scene!();
    let target = scene.outside.join("planted");
    expect(&scene, &["write", &target.to_string_lossy()], &every_ring_below_admin("EACCES"));
    assert!(!target.exists());
    expect(&scene, &["write", &scene.outside.join("file").to_string_lossy()], &every_ring_below_admin("EACCES"));
    assert_eq!(fs::read_to_string(scene.outside.join("file")).unwrap_or_default(), "outside\n");
    // The workspace itself is writable.
    expect(&scene, &["write", &scene.workspace.join("out.txt").to_string_lossy()], &every_ring_below_admin("ok"));
}

#[test]
fn creating_files_in_usr_is_denied() {
    require!("creating_files_in_usr_is_denied");
    let scene = scene!();
    expect(&scene, &["write", "/usr/governor-escape"], &every_ring_below_admin("EACCES"));
    expect(&scene, &["mkdir", "/usr/governor-escape-dir"], &every_ring_below_admin("EACCES"));
    assert!(!std::path::Path::new("/usr/governor-escape").exists());
}

#[test]
fn a_symlink_planted_in_the_workspace_does_not_lead_to_a_secret() {
    require!("a_symlink_planted_in_the_workspace_does_not_lead_to_a_secret");
    let scene = scene!();
    let link = scene.workspace.join("innocent.txt");
    symlink(scene.home.join(".ssh/id_ed25519"), &link).unwrap_or_else(|error| panic!("{error}"));
    symlink("/etc/shadow", scene.workspace.join("shadow")).unwrap_or_else(|error| panic!("{error}"));
    expect(&scene, &["read", &link.to_string_lossy()], &every_ring_below_admin("EACCES"));
    expect(&scene, &["read", &scene.workspace.join("shadow").to_string_lossy()], &every_ring_below_admin("EACCES"));
}

#[test]
fn a_secret_cannot_be_hard_linked_into_the_workspace() {
    require!("a_secret_cannot_be_hard_linked_into_the_workspace");
    let scene = scene!();
    let key = scene.home.join(".ssh/id_ed25519");
    let link = scene.workspace.join("stolen");
    // The secret's directory is masked in the agent's mount namespace, so the path walk to
    // it is refused (EACCES) before Landlock's link check would be (EXDEV: a link that would
    // give the file more access than it had).
    expect(&scene, &["link", &key.to_string_lossy(), &link.to_string_lossy()], &every_ring_below_admin("EACCES"));
    assert!(!link.exists());
}

#[test]
fn workspace_files_cannot_be_moved_out() {
    require!("workspace_files_cannot_be_moved_out");
    let scene = scene!();
    let from = scene.workspace.join("payload");
    fs::write(&from, "x").unwrap_or_else(|error| panic!("{error}"));
    let to = scene.outside.join("payload");
    expect(&scene, &["rename", &from.to_string_lossy(), &to.to_string_lossy()], &every_ring_below_admin("EACCES"));
    assert!(from.exists() && !to.exists());
}

#[test]
fn tcp_connect_follows_the_ring() {
    require!("tcp_connect_follows_the_ring");
    let scene = scene!();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|error| panic!("{error}"));
    let port = listener.local_addr().map(|addr| addr.port().to_string()).unwrap_or_default();
    // low: no IP socket at all (seccomp); medium: not an allowed port (Landlock); high: any.
    expect(&scene, &["tcp-connect", &port], &[("low", "EPERM"), ("medium", "EACCES"), ("high", "ok"), ("admin", "ok")]);
}

#[test]
fn medium_may_connect_to_web_and_dns_ports() {
    require!("medium_may_connect_to_web_and_dns_ports");
    let scene = scene!();
    let Some(listener) =
        ["127.0.0.1:443", "127.0.0.1:80", "127.0.0.1:53"].into_iter().find_map(|addr| TcpListener::bind(addr).ok())
    else {
        println!("skipping medium_may_connect_to_web_and_dns_ports: ports 443, 80 and 53 are all taken on 127.0.0.1");
        return;
    };
    let port = listener.local_addr().map(|addr| addr.port().to_string()).unwrap_or_default();
    expect(&scene, &["tcp-connect", &port], &[("low", "EPERM"), ("medium", "ok")]);
}

#[test]
fn udp_and_raw_sockets_are_refused_in_low() {
    require!("udp_and_raw_sockets_are_refused_in_low");
    let scene = scene!();
    // medium may send UDP only to the resolvers (the probes' cgroup socket hook), high anywhere.
    expect(&scene, &["udp-send", "9"], &[("low", "EPERM"), ("medium", "EPERM"), ("high", "ok")]);
    expect(&scene, &["socket-packet"], &every_ring_below_admin("EPERM"));
    // SCTP and DCCP through protocol 0 of their socket types: no bind rule sees them.
    expect(&scene, &["socket-inet-seqpacket"], &every_ring_below_admin("EPERM"));
    expect(&scene, &["socket-inet6-dccp"], &every_ring_below_admin("EPERM"));
    expect(&scene, &["socket-unix-seqpacket"], &every_ring_below_admin("ok"));
    expect(&scene, &["socket-inet-stream-flags"], &[("low", "EPERM"), ("medium", "ok"), ("high", "ok")]);
    expect(&scene, &["socket-netlink"], &every_ring_below_admin("EPERM"));
}

#[test]
fn no_ring_below_admin_may_listen_on_tcp() {
    require!("no_ring_below_admin_may_listen_on_tcp");
    let scene = scene!();
    expect(&scene, &["tcp-bind", "0"], &[("low", "EPERM"), ("medium", "EACCES"), ("high", "EACCES"), ("admin", "ok")]);
}

#[test]
fn processes_outside_cannot_be_traced_or_read() {
    require!("processes_outside_cannot_be_traced_or_read");
    let scene = scene!();
    let outsider = Outsider::start();
    let pid = outsider.pid();
    expect(&scene, &["ptrace-attach", &pid], &every_ring_below_admin("EPERM"));
    expect(&scene, &["process-vm-readv", &pid], &every_ring_below_admin("EPERM"));
    expect(&scene, &["read", &format!("/proc/{pid}/mem")], &every_ring_below_admin("EACCES"));
    expect(&scene, &["read", &format!("/proc/{pid}/environ")], &every_ring_below_admin("EACCES"));
}

#[test]
fn high_may_trace_its_own_descendants_only() {
    require!("high_may_trace_its_own_descendants_only");
    let scene = scene!();
    // Landlock lets a sandboxed process ptrace only processes in its own domain; seccomp
    // refuses ptrace altogether below high.
    expect(&scene, &["ptrace-child"], &[("low", "EPERM"), ("medium", "EPERM"), ("high", "ok")]);
}

#[test]
fn processes_outside_cannot_be_signalled() {
    require!("processes_outside_cannot_be_signalled");
    let scene = scene!();
    let mut outsider = Outsider::start();
    expect(&scene, &["kill", &outsider.pid()], &every_ring_below_admin("EPERM"));
    assert!(outsider.alive(), "the agent killed a process outside its sandbox");
}

#[test]
fn abstract_unix_sockets_outside_cannot_be_reached() {
    require!("abstract_unix_sockets_outside_cannot_be_reached");
    let scene = scene!();
    let name = format!("governor-test-{}", std::process::id());
    let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap_or_else(|error| panic!("{error}"));
    let _listener = UnixListener::bind_addr(&address).unwrap_or_else(|error| panic!("{error}"));
    expect(
        &scene,
        &["abstract-connect", &name],
        &[("low", "EPERM"), ("medium", "EPERM"), ("high", "EPERM"), ("admin", "ok")],
    );
}

#[test]
fn governors_control_socket_cannot_be_reached_below_admin() {
    require!("governors_control_socket_cannot_be_reached_below_admin");
    let scene = scene!();
    // A socket where the daemon's lives, owned by root with mode 0600: the agent runs as uid
    // 0, so the socket's own mode would let it in; its view of the directory is masked.
    let dir = std::path::Path::new("/run/governor");
    std::fs::create_dir_all(dir).unwrap_or_else(|error| panic!("{error}"));
    let path = dir.join(format!("test-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap_or_else(|error| panic!("{error}"));
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap_or_else(|error| panic!("{error}"));
    let socket = path.to_string_lossy();
    expect(
        &scene,
        &["unix-connect", &socket],
        &[("low", "EACCES"), ("medium", "EACCES"), ("high", "EACCES"), ("admin", "ok")],
    );
    drop(listener);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn mounting_and_chroot_are_refused() {
    require!("mounting_and_chroot_are_refused");
    let scene = scene!();
    let workspace = scene.workspace.to_string_lossy();
    expect(&scene, &["mount-tmpfs", &workspace], &every_ring_below_admin("EPERM"));
    expect(&scene, &["chroot", &workspace], &every_ring_below_admin("EPERM"));
}

#[test]
fn new_namespaces_are_refused() {
    require!("new_namespaces_are_refused");
    let scene = scene!();
    expect(&scene, &["unshare-user"], &every_ring_below_admin("EPERM"));
    expect(&scene, &["unshare-net"], &every_ring_below_admin("EPERM"));
    expect(&scene, &["clone-newuser"], &every_ring_below_admin("EPERM"));
    // clone3 hides its flags from seccomp: it gets ENOSYS so that libc falls back to clone.
    expect(&scene, &["clone3"], &every_ring_below_admin("ENOSYS"));
}

#[test]
fn unshare_then_reading_a_secret_fails() {
    require!("unshare_then_reading_a_secret_fails");
    let scene = scene!();
    let key = scene.home.join(".ssh/id_ed25519");
    let output = scene.governor(
        "medium",
        &[],
        ["unshare", "-Ur", "cat"].iter().map(std::ffi::OsStr::new).chain([key.as_os_str()]),
    );
    assert_eq!(output.status.code(), Some(1), "stderr: {}", stderr(&output));
    assert!(stderr(&output).contains("Operation not permitted"), "{}", stderr(&output));
    assert!(!stdout(&output).contains("PRIVATE KEY"));
}

#[test]
fn forking_still_works_without_clone3() {
    require!("forking_still_works_without_clone3");
    let scene = scene!();
    let output = scene.governor("low", &[], ["sh", "-c", "(echo child) && echo parent"]);
    assert_eq!(stdout(&output), "child\nparent\n", "stderr: {}", stderr(&output));
}

#[test]
fn kernel_attack_surface_syscalls_are_refused() {
    require!("kernel_attack_surface_syscalls_are_refused");
    let scene = scene!();
    for op in ["io-uring-setup", "perf-event-open", "keyctl", "personality"] {
        expect(&scene, &[op], &every_ring_below_admin("EPERM"));
    }
    // Even admin may not load BPF programs that could blind governor.
    expect(&scene, &["bpf"], &[("low", "EPERM"), ("medium", "EPERM"), ("high", "EPERM"), ("admin", "EPERM")]);
    expect(&scene, &["x32-getpid"], &[("low", "ENOSYS"), ("admin", "ENOSYS")]);
}

#[test]
fn tcp_port_rules_cannot_be_sidestepped() {
    require!("tcp_port_rules_cannot_be_sidestepped");
    let scene = scene!();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|error| panic!("{error}"));
    let port = listener.local_addr().map(|addr| addr.port().to_string()).unwrap_or_default();
    // MPTCP is TCP that Landlock's TCP rules do not cover; TCP Fast Open connects in sendto.
    expect(&scene, &["socket-mptcp"], &[("low", "EPERM"), ("medium", "EPERM"), ("high", "EPERM")]);
    expect(&scene, &["tcp-fastopen", &port], &[("low", "EPERM"), ("medium", "EPERM"), ("high", "EPERM")]);
    // A denied address spelled as IPv4-mapped IPv6 is the same address.
    let overlay = scene.root.join("deny.toml");
    fs::write(&overlay, format!("[[network.deny]]\nto = \"127.0.0.1\"\nport = {port}\nreason = \"test\"\n"))
        .unwrap_or_else(|error| panic!("{error}"));
    let overlay = overlay.to_string_lossy().into_owned();
    let plain = scene.governor("high", &[], [scene.attempt.as_os_str(), "tcp6-mapped".as_ref(), port.as_ref()]);
    assert_eq!(stdout(&plain).trim(), "ok", "without the rule it connects: {}", stderr(&plain));
    let mapped = scene.governor(
        "high",
        &["--policy", &overlay],
        [scene.attempt.as_os_str(), "tcp6-mapped".as_ref(), port.as_ref()],
    );
    assert_eq!(stdout(&mapped).trim(), "EPERM", "{}", stderr(&mapped));
}

#[test]
fn governor_s_own_limits_and_setuid_files_are_out_of_reach() {
    require!("governor_s_own_limits_and_setuid_files_are_out_of_reach");
    let scene = scene!();
    let outsider = Outsider::start();
    expect(&scene, &["prlimit", &outsider.pid()], &every_ring_below_admin("EPERM"));
    let file = scene.workspace.join("tool");
    fs::copy(&scene.attempt, &file).unwrap_or_else(|error| panic!("{error}"));
    let file = file.to_string_lossy().into_owned();
    expect(&scene, &["chmod", &file, "4755"], &every_ring_below_admin("EPERM"));
    expect(&scene, &["chmod", &file, "2755"], &every_ring_below_admin("EPERM"));
    // An ordinary chmod in the workspace still works.
    expect(&scene, &["chmod", &file, "0700"], &every_ring_below_admin("ok"));
}

#[test]
fn the_operator_s_key_agents_and_sysv_ipc_stay_outside() {
    require!("the_operator_s_key_agents_and_sysv_ipc_stay_outside");
    let scene = scene!();
    let mut command = Command::new(governor_tests::governor_bin());
    command
        .args(["run", "--trust", "medium", "--workspace"])
        .arg(&scene.workspace)
        .args(governor_tests::probes_args())
        .arg("--")
        .arg(&scene.attempt)
        .args(["env", "SSH_AUTH_SOCK"])
        .env("HOME", &scene.home)
        .env("SSH_AUTH_SOCK", "/run/user/0/ssh-agent.sock");
    let output = command.output().unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(stdout(&output).trim(), "unset", "{}", stderr(&output));
    // A System V shared memory segment made outside is not visible inside.
    let made = Command::new("ipcmk").args(["-M", "4096"]).output().unwrap_or_else(|error| panic!("ipcmk: {error}"));
    let id: String = stdout(&made).chars().filter(char::is_ascii_digit).collect();
    assert!(!id.is_empty(), "ipcmk: {}", stdout(&made));
    let inside = scene.governor("low", &[], ["cat", "/proc/sysvipc/shm"]);
    let _ = Command::new("ipcrm").args(["-m", &id]).output();
    let listed = stdout(&inside);
    assert!(!listed.lines().skip(1).any(|line| line.split_whitespace().nth(1) == Some(id.as_str())), "{listed}");
}

#[test]
fn other_sessions_terminals_are_out_of_reach() {
    require!("other_sessions_terminals_are_out_of_reach");
    let scene = scene!();
    // A pseudo-terminal of someone else's session.
    // SAFETY: posix_openpt and friends on a descriptor this test owns.
    let (master, name) = unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(master >= 0 && libc::grantpt(master) == 0 && libc::unlockpt(master) == 0);
        let mut buffer = [0 as libc::c_char; 64];
        assert_eq!(libc::ptsname_r(master, buffer.as_mut_ptr(), buffer.len()), 0);
        (master, std::ffi::CStr::from_ptr(buffer.as_ptr()).to_string_lossy().into_owned())
    };
    expect(&scene, &["write", &name], &[("low", "EACCES"), ("medium", "EACCES"), ("high", "EACCES"), ("admin", "ok")]);
    expect(&scene, &["read", &name], &every_ring_below_admin("EACCES"));
    // SAFETY: closing our own descriptor.
    unsafe { libc::close(master) };
}

#[test]
fn nothing_can_be_typed_into_the_operators_terminal() {
    require!("nothing_can_be_typed_into_the_operators_terminal");
    let scene = scene!();
    // stdin is not a terminal here: unconfined, the ioctl reaches the tty layer (ENOTTY);
    // below admin seccomp refuses it before, whatever stdin is.
    expect(&scene, &["tiocsti"], &[("low", "EPERM"), ("medium", "EPERM"), ("high", "EPERM"), ("admin", "ENOTTY")]);
}

#[test]
fn namespaces_of_other_processes_cannot_be_entered() {
    require!("namespaces_of_other_processes_cannot_be_entered");
    let scene = scene!();
    let outsider = Outsider::start();
    // Opening another process's namespace is a ptrace-mode access: refused.
    expect(&scene, &["setns", &format!("/proc/{}/ns/net", outsider.pid())], &every_ring_below_admin("EACCES"));
    // And setns itself is refused by seccomp, even on the agent's own namespace.
    expect(&scene, &["setns", "/proc/self/ns/net"], &every_ring_below_admin("EPERM"));
}

#[test]
fn an_agent_started_as_root_has_no_capabilities_below_admin() {
    require!("an_agent_started_as_root_has_no_capabilities_below_admin");
    let scene = scene!();
    for trust in BELOW_ADMIN {
        let (line, _) = scene.attempt(trust, &["caps"]);
        assert_eq!(line, "CapEff: 0000000000000000", "ring {trust}");
    }
    let (admin, _) = scene.attempt("admin", &["caps"]);
    assert_ne!(admin, "CapEff: 0000000000000000", "admin keeps the capabilities governor had");
}

#[test]
fn a_setuid_root_binary_gains_no_privileges() {
    require!("a_setuid_root_binary_gains_no_privileges");
    let scene = scene!();
    let suid = scene.workspace.join("suid-attempt");
    fs::copy(&scene.attempt, &suid).unwrap_or_else(|error| panic!("{error}"));
    fs::set_permissions(&suid, fs::Permissions::from_mode(0o4755)).unwrap_or_else(|error| panic!("{error}"));
    // Control: outside governor, nobody running it becomes euid 0, so the binary is live.
    // setpriv rather than runuser: no PAM, so the VM's minimal root runs it too.
    let control = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&suid)
        .arg("ids")
        .output();
    match control {
        Ok(output) if stdout(&output).trim() == "uid=65534 euid=0" => {}
        other => {
            println!(
                "skipping a_setuid_root_binary_gains_no_privileges: the setuid control did not run as expected: {other:?}"
            );
            return;
        }
    }
    for trust in BELOW_ADMIN {
        let output = scene.governor(trust, &["--user", "nobody"], [suid.as_os_str(), "ids".as_ref()]);
        assert_eq!(stdout(&output).trim(), "uid=65534 euid=65534", "ring {trust}; stderr: {}", stderr(&output));
    }
}

#[test]
fn binaries_outside_the_allowed_trees_cannot_be_executed() {
    require!("binaries_outside_the_allowed_trees_cannot_be_executed");
    let scene = scene!();
    let outside = scene.outside.join("tool");
    fs::copy(&scene.attempt, &outside).unwrap_or_else(|error| panic!("{error}"));
    expect(&scene, &["exec", &outside.to_string_lossy()], &[("low", "EACCES"), ("medium", "EACCES")]);
    // governor itself reports it like a shell: 126, cannot execute.
    let output = scene.governor("low", &[], [outside.as_os_str(), "ids".as_ref()]);
    assert_eq!(output.status.code(), Some(126), "stderr: {}", stderr(&output));
    assert!(stderr(&output).contains("cannot execute"), "{}", stderr(&output));
}

#[test]
fn the_agent_cannot_leave_its_cgroup() {
    require!("the_agent_cannot_leave_its_cgroup");
    let scene = scene!();
    let root = governor_tests::cgroup2_root().display().to_string();
    let procs = format!("{root}/cgroup.procs");
    expect(&scene, &["write", &procs], &every_ring_below_admin("EACCES"));
}

#[test]
fn raw_disks_are_unreadable_in_high() {
    require!("raw_disks_are_unreadable_in_high");
    let scene = scene!();
    let Some(disk) = ["/dev/vda", "/dev/sda", "/dev/nvme0n1", "/dev/xvda"]
        .into_iter()
        .find(|dev| std::path::Path::new(dev).exists())
    else {
        println!("skipping raw_disks_are_unreadable_in_high: no /dev/vda, sda, nvme0n1 or xvda here");
        return;
    };
    expect(&scene, &["read", disk], &every_ring_below_admin("EACCES"));
}

#[test]
fn a_descriptor_passed_to_governor_does_not_reach_the_agent() {
    require!("a_descriptor_passed_to_governor_does_not_reach_the_agent");
    use std::os::{fd::AsRawFd as _, unix::process::CommandExt as _};
    let scene = scene!();
    // Whoever starts governor holds the secret open on descriptor 7, without close-on-exec.
    // Landlock does not check descriptors opened before the domain: governor must close it.
    let key = fs::File::open(scene.home.join(".ssh/id_ed25519")).unwrap_or_else(|error| panic!("{error}"));
    let raw = key.as_raw_fd();
    for (trust, op) in [("low", "fds"), ("low", "read"), ("admin", "fds")] {
        let mut command = Command::new(governor_tests::governor_bin());
        command
            .args(["run", "--trust", trust, "--workspace"])
            .arg(&scene.workspace)
            .args(governor_tests::probes_args())
            .arg("--")
            .arg(&scene.attempt)
            .arg(op)
            .arg("/proc/self/fd/7")
            .env("HOME", &scene.home);
        // SAFETY: dup2 between fork and exec, on descriptors this process owns.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(raw, 7) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let output = command.output().unwrap_or_else(|error| panic!("{error}"));
        let expected = if op == "fds" { "fds: 0 1 2" } else { "ENOENT" };
        assert_eq!(stdout(&output).trim(), expected, "ring {trust}, {op}; stderr: {}", stderr(&output));
    }
}
