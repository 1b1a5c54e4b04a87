//! `governor run` as a user sees it: ordinary agent work succeeds, exit codes and signals
//! behave like a shell's, the cgroup comes and goes, bad input is refused with exit 2 and
//! leaves nothing behind, and `--policy` overlays change what is enforced.

use std::{
    fs,
    net::TcpListener,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use governor_tests::{Scene, cgroup2_root, governor_bin, require, scene, stderr, stdout};

// --- ordinary agent work under medium -------------------------------------------------------

#[test]
fn a_c_program_compiles_and_runs_in_the_workspace() {
    require!("a_c_program_compiles_and_runs_in_the_workspace");
    if !governor_tests::on_path("cc") {
        // The 6.12 VM's root has no compiler (gcc with its headers is 150 MB); the host has.
        println!("skipping a_c_program_compiles_and_runs_in_the_workspace: no cc on this machine");
        return;
    }
    let scene = scene!();
    let script = "printf '#include <stdio.h>\\nint main(void){puts(\"built\");return 0;}\\n' > hello.c && cc -o hello hello.c && ./hello";
    let output = scene.governor("medium", &[], ["sh", "-c", script]);
    assert_eq!(stdout(&output), "built\n", "stderr: {}", stderr(&output));
    assert_eq!(output.status.code(), Some(0));
    assert!(scene.workspace.join("hello").exists());
}

#[test]
fn git_init_and_commit_work_in_the_workspace() {
    require!("git_init_and_commit_work_in_the_workspace");
    let scene = scene!();
    let script = "git init -q repo && cd repo && echo hi > f && git add f \
        && git -c user.name=agent -c user.email=agent@example.invalid commit -q -m first && git log --format=%s";
    let output = scene.governor("medium", &[], ["sh", "-c", script]);
    assert_eq!(stdout(&output), "first\n", "stderr: {}", stderr(&output));
}

#[test]
fn python_reads_home_and_writes_the_workspace() {
    require!("python_reads_home_and_writes_the_workspace");
    let scene = scene!();
    let script =
        "import os; open('copy.txt', 'w').write(open(os.path.expanduser('~/notes.txt')).read()); print('done')";
    let output = scene.governor("medium", &[], ["/usr/bin/python3", "-c", script]);
    assert_eq!(stdout(&output), "done\n", "stderr: {}", stderr(&output));
    assert_eq!(fs::read_to_string(scene.workspace.join("copy.txt")).unwrap_or_default(), "hello from home\n");
}

#[test]
fn the_agent_gets_a_private_tmpdir_that_is_removed_afterwards() {
    require!("the_agent_gets_a_private_tmpdir_that_is_removed_afterwards");
    let scene = scene!();
    let output = scene.governor("low", &[], ["sh", "-c", "echo x > \"$TMPDIR/scratch\" && echo \"$TMPDIR\""]);
    let tmpdir = stdout(&output).trim().to_owned();
    assert!(tmpdir.contains("governor-"), "TMPDIR={tmpdir}; stderr: {}", stderr(&output));
    assert!(!Path::new(&tmpdir).exists(), "{tmpdir} was left behind");
}

// --- cgroup -----------------------------------------------------------------------------------

#[test]
fn the_agent_runs_in_its_own_cgroup_which_is_removed_after() {
    require!("the_agent_runs_in_its_own_cgroup_which_is_removed_after");
    let scene = scene!();
    let id = format!("cgtest-{}", std::process::id());
    let output = scene.governor("low", &["--agent-id", &id], ["cat", "/proc/self/cgroup"]);
    let line = stdout(&output).lines().find(|line| line.starts_with("0::")).map(str::to_owned);
    assert_eq!(line.as_deref(), Some(format!("0::/governor/{id}").as_str()), "stderr: {}", stderr(&output));
    assert!(!cgroup2_root().join("governor").join(&id).exists(), "cgroup left behind");
}

#[test]
fn descendants_left_running_are_killed_with_the_agent() {
    require!("descendants_left_running_are_killed_with_the_agent");
    let scene = scene!();
    let start = Instant::now();
    let output = scene.governor("low", &[], ["sh", "-c", "sleep 300 & echo $!"]);
    let pid: i32 = stdout(&output).trim().parse().unwrap_or_else(|_| panic!("no pid; stderr: {}", stderr(&output)));
    assert!(start.elapsed() < Duration::from_secs(20), "governor waited for the background sleep");
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "the agent's background process survived it");
}

// --- exit codes and signals --------------------------------------------------------------------

#[test]
fn exit_codes_pass_through_like_a_shell() {
    require!("exit_codes_pass_through_like_a_shell");
    let scene = scene!();
    let code = |args: &[&str]| scene.governor("low", &[], args).status.code();
    assert_eq!(code(&["true"]), Some(0));
    assert_eq!(code(&["sh", "-c", "exit 3"]), Some(3));
    assert_eq!(code(&["sh", "-c", "kill -KILL $$"]), Some(128 + 9));
    let missing = scene.governor("low", &[], ["no-such-command-anywhere"]);
    assert_eq!(missing.status.code(), Some(127));
    assert!(stderr(&missing).contains("command not found"), "{}", stderr(&missing));
    let not_executable = scene.workspace.join("data.txt");
    fs::write(&not_executable, "not a program").unwrap_or_else(|error| panic!("{error}"));
    let denied = scene.governor("low", &[], [not_executable.as_os_str()]);
    assert_eq!(denied.status.code(), Some(126), "stderr: {}", stderr(&denied));
}

#[test]
fn the_agent_starts_with_no_signal_ignored_so_a_closed_pipe_ends_it_quietly() {
    require!("the_agent_starts_with_no_signal_ignored_so_a_closed_pipe_ends_it_quietly");
    let scene = scene!();
    let output = scene.governor("low", &[], ["sh", "-c", "grep SigIgn /proc/self/status; yes | head -1"]);
    assert_eq!(stdout(&output), "SigIgn:\t0000000000000000\ny\n", "stderr: {}", stderr(&output));
    assert!(!stderr(&output).contains("Broken pipe"), "{}", stderr(&output));
    assert_eq!(output.status.code(), Some(0));
}

/// Starts `governor run -- sleep 30`, waits until the agent is running, sends `signal` to
/// governor only, and returns governor's exit code.
fn exit_code_after_signal(scene: &Scene, signal: i32) -> Option<i32> {
    let id = format!("sig{signal}-{}", std::process::id());
    let mut child = Command::new(governor_bin())
        .args(["run", "--trust", "low", "--agent-id", &id, "--workspace"])
        .arg(&scene.workspace)
        .args(["--", "sleep", "30"])
        .env("HOME", &scene.home)
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("{error}"));
    let procs = cgroup2_root().join("governor").join(&id).join("cgroup.procs");
    let deadline = Instant::now() + Duration::from_secs(10);
    // The agent has exec'd once its cgroup has a process whose comm is sleep.
    while Instant::now() < deadline {
        let running = fs::read_to_string(&procs).unwrap_or_default().lines().any(|pid| {
            fs::read_to_string(format!("/proc/{}/comm", pid.trim())).is_ok_and(|comm| comm.trim() == "sleep")
        });
        if running {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = i32::try_from(child.id()).unwrap_or(0);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, signal) };
    let started = Instant::now();
    let status = child.wait().unwrap_or_else(|error| panic!("{error}"));
    assert!(started.elapsed() < Duration::from_secs(10), "the signal did not end the agent");
    status.code()
}

#[test]
fn sigint_and_sigterm_are_forwarded_to_the_agent() {
    require!("sigint_and_sigterm_are_forwarded_to_the_agent");
    let scene = scene!();
    assert_eq!(exit_code_after_signal(&scene, libc::SIGINT), Some(130));
    assert_eq!(exit_code_after_signal(&scene, libc::SIGTERM), Some(143));
    assert_eq!(exit_code_after_signal(&scene, libc::SIGHUP), Some(129));
}

#[test]
fn as_pid_1_governor_reaps_orphans_and_returns_the_exit_code() {
    require!("as_pid_1_governor_reaps_orphans_and_returns_the_exit_code");
    let scene = scene!();
    // The subshell's sleep is orphaned at once and reparented to PID 1 (governor), which must
    // reap it when it exits; a zombie would show as state Z in the new /proc.
    let script = "(sleep 0.2 &) ; sleep 0.8; for s in /proc/[0-9]*/stat; do read -r line < $s; set -- $line; \
        [ \"$3\" = Z ] && echo \"zombie $1\"; done; exit 7";
    let output = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(governor_bin())
        .args(["run", "--trust", "medium", "--workspace"])
        .arg(&scene.workspace)
        .args(["--", "sh", "-c", script])
        .env("HOME", &scene.home)
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(stdout(&output), "", "stderr: {}", stderr(&output));
    assert_eq!(output.status.code(), Some(7), "stderr: {}", stderr(&output));
}

#[test]
fn as_pid_1_a_sigterm_from_outside_reaches_the_agent() {
    require!("as_pid_1_a_sigterm_from_outside_reaches_the_agent");
    let scene = scene!();
    // The container runtime's stop: SIGTERM to PID 1 (governor), which the agent must get.
    let script = "trap 'echo got TERM; exit 42' TERM; echo ready; while :; do sleep 0.05; done";
    // timeout(1) ends the test if the signal never arrives.
    let mut child = Command::new("timeout")
        .args(["-s", "KILL", "30", "unshare", "--pid", "--fork", "--mount-proc"])
        .arg(governor_bin())
        .args(["run", "--trust", "medium", "--workspace"])
        .arg(&scene.workspace)
        .args(["--", "sh", "-c", script])
        .env("HOME", &scene.home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("{error}"));
    let mut stdout_pipe = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut ready = [0u8; 6];
    std::io::Read::read_exact(&mut stdout_pipe, &mut ready).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(&ready, b"ready\n");
    // governor: timeout's grandchild (under unshare), PID 1 inside, some pid outside.
    let child_of = |pid: i32| {
        fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .ok()
            .and_then(|children| children.split_whitespace().next().and_then(|pid| pid.parse::<i32>().ok()))
            .unwrap_or(0)
    };
    let pid1 = child_of(child_of(i32::try_from(child.id()).unwrap_or(0)));
    let status = fs::read_to_string(format!("/proc/{pid1}/status")).unwrap_or_default();
    assert!(status.lines().any(|line| line.starts_with("NSpid:") && line.ends_with("\t1")), "{pid1}: {status}");
    // SAFETY: kill(2) on a child process of this test.
    assert_eq!(unsafe { libc::kill(pid1, libc::SIGTERM) }, 0);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout_pipe, &mut rest).unwrap_or_else(|error| panic!("{error}"));
    let output = child.wait_with_output().unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(rest, "got TERM\n", "stderr: {}", stderr(&output));
    assert_eq!(output.status.code(), Some(42), "stderr: {}", stderr(&output));
}

// --- bad input ----------------------------------------------------------------------------------

/// Runs governor with `args`; asserts exit 2, a one-line error containing `needle`, no
/// cgroup and no agent started (the command would have created a marker file).
fn refused(scene: &Scene, args: &[&str], needle: &str) {
    let marker = scene.workspace.join("agent-started");
    let id = format!("refused-{}", std::process::id());
    let mut command = Command::new(governor_bin());
    command.args(args);
    if args.first() == Some(&"run") && !args.contains(&"--agent-id") {
        command.args(["--agent-id", &id]);
    }
    if args.contains(&"--") {
        command.args(["--", "touch"]).arg(&marker);
    }
    let output = command
        .env("HOME", &scene.home)
        .current_dir(&scene.workspace)
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{args:?}: {message}");
    assert_eq!(message.lines().count(), 1, "{args:?}: not one line: {message}");
    assert!(message.contains(needle), "{args:?}: {message:?} does not mention {needle:?}");
    assert!(!marker.exists(), "{args:?}: the agent was started");
    assert!(!cgroup2_root().join("governor").join(&id).exists(), "{args:?}: cgroup left behind");
}

#[test]
fn bad_input_is_refused_with_exit_2_and_nothing_started() {
    require!("bad_input_is_refused_with_exit_2_and_nothing_started");
    let scene = scene!();
    let bad_toml = scene.root.join("bad.toml");
    fs::write(&bad_toml, "[[landlock.path]]\npath = \"/opt\"\naccess = [\"read\"\n")
        .unwrap_or_else(|error| panic!("{error}"));
    let unknown_key = scene.root.join("unknown.toml");
    fs::write(&unknown_key, "[[secret]]\npath = \"~/.pgpass\"\nreason = \"db\"\nmode = \"strict\"\n")
        .unwrap_or_else(|error| panic!("{error}"));
    let bad_glob_port = scene.root.join("port.toml");
    fs::write(&bad_glob_port, "[[network.connect]]\nport = 99999\nreason = \"x\"\n")
        .unwrap_or_else(|error| panic!("{error}"));
    let missing_dir = scene.root.join("no-such-dir");
    let (bad, unknown, port, missing) = (
        bad_toml.to_string_lossy().into_owned(),
        unknown_key.to_string_lossy().into_owned(),
        bad_glob_port.to_string_lossy().into_owned(),
        missing_dir.to_string_lossy().into_owned(),
    );
    refused(&scene, &["run", "--trust", "root", "--"], "unknown trust level 'root'");
    refused(&scene, &["run", "--trust", "low"], "required arguments were not provided");
    refused(&scene, &["run", "--workspace", &missing, "--"], "does not exist");
    refused(&scene, &["run", "--policy", &bad, "--"], &format!("{bad}:3:17: unclosed array"));
    refused(&scene, &["run", "--policy", &unknown, "--"], &format!("{unknown}:4:1: unknown field `mode`"));
    refused(&scene, &["run", "--policy", &port, "--"], &format!("{port}:2:8: port 99999"));
    refused(&scene, &["run", "--policy", &missing, "--"], "cannot read policy");
    refused(&scene, &["run", "--agent-id", "../escape", "--"], "agent id '../escape'");
    refused(&scene, &["run", "--user", "no-such-user-here", "--"], "unknown user 'no-such-user-here'");
    refused(&scene, &["policy", "check", &unknown], &format!("{unknown}:4:1"));
}

#[test]
fn a_running_agent_id_cannot_be_reused() {
    require!("a_running_agent_id_cannot_be_reused");
    let scene = scene!();
    let id = format!("dup-{}", std::process::id());
    let mut first = Command::new(governor_bin())
        .args(["run", "--agent-id", &id, "--workspace"])
        .arg(&scene.workspace)
        .args(["--", "sleep", "5"])
        .spawn()
        .unwrap_or_else(|error| panic!("{error}"));
    let cgroup = cgroup2_root().join("governor").join(&id);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cgroup.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let second = scene.governor("low", &["--agent-id", &id], ["true"]);
    assert_eq!(second.status.code(), Some(2), "{}", stderr(&second));
    assert!(stderr(&second).contains("already running"), "{}", stderr(&second));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(i32::try_from(first.id()).unwrap_or(0), libc::SIGTERM) };
    let _ = first.wait();
}

// --- policies -------------------------------------------------------------------------------

#[test]
fn the_shipped_policies_validate() {
    let rings = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/rings");
    let mut files: Vec<_> = fs::read_dir(&rings)
        .unwrap_or_else(|error| panic!("{}: {error}", rings.display()))
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .collect();
    files.sort();
    assert_eq!(files.len(), 5, "{files:?}");
    let output = Command::new(governor_bin())
        .args(["policy", "check"])
        .args(&files)
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output).matches(": ok (").count(), 5, "{}", stdout(&output));
}

#[test]
fn a_policy_overlay_adds_ports_paths_and_secrets() {
    require!("a_policy_overlay_adds_ports_paths_and_secrets");
    let scene = scene!();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|error| panic!("{error}"));
    let port = listener.local_addr().map(|addr| addr.port()).unwrap_or(0);
    let private = scene.home.join("projects/private.txt");
    fs::write(&private, "private\n").unwrap_or_else(|error| panic!("{error}"));
    let shared = scene.outside.join("file");
    let overlay = scene.root.join("overlay.toml");
    fs::write(
        &overlay,
        format!(
            "[[network.connect]]\nport = {port}\nreason = \"the local model server\"\n\n\
             [[landlock.path]]\npath = \"{}\"\naccess = [\"read\"]\nreason = \"shared data\"\n\n\
             [[secret]]\npath = \"~/projects/private.txt\"\nreason = \"not for agents\"\n\n\
             [[network.udp_allow]]\nto = \"127.0.0.1\"\nport = 9\nreason = \"a local collector\"\n",
            scene.outside.display()
        ),
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let overlay_arg = overlay.to_string_lossy().into_owned();
    let run = |op: &[&str], with_overlay: bool| {
        let mut args = vec![scene.attempt.as_os_str().to_owned()];
        args.extend(op.iter().map(|arg| arg.into()));
        let extra: &[&str] = if with_overlay { &["--policy", &overlay_arg] } else { &[] };
        stdout(&scene.governor("medium", extra, args)).trim().to_owned()
    };
    let port = port.to_string();
    assert_eq!(run(&["tcp-connect", &port], false), "EACCES");
    assert_eq!(run(&["tcp-connect", &port], true), "ok");
    assert_eq!(run(&["read", &shared.to_string_lossy()], false), "EACCES");
    assert_eq!(run(&["read", &shared.to_string_lossy()], true), "ok");
    assert_eq!(run(&["read", &private.to_string_lossy()], false), "ok");
    assert_eq!(run(&["read", &private.to_string_lossy()], true), "EACCES");
    assert_eq!(run(&["udp-send", "9"], false), "EPERM");
    assert_eq!(run(&["udp-send", "9"], true), "ok");

    let show = Command::new(governor_bin())
        .args(["policy", "show", "--trust", "medium", "--format", "json", "--policy", &overlay_arg, "--workspace"])
        .arg(&scene.workspace)
        .env("HOME", &scene.home)
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    let json = stdout(&show);
    assert_eq!(show.status.code(), Some(0), "{}", stderr(&show));
    assert!(
        json.contains(&format!("\"tcp_connect\": [\n      53,\n      80,\n      443,\n      {port}\n    ]")),
        "{json}"
    );
    assert!(json.contains("~/projects/private.txt") && json.contains("shared data"), "{json}");
}

#[test]
fn a_persistent_cache_never_leads_governor_through_the_agents_links() {
    require!("a_persistent_cache_never_leads_governor_through_the_agents_links");
    let scene = scene!();
    let store = scene.root.join("audit.db");
    let id = format!("cache-links-{}", std::process::id());
    // Directories of root's that the agent's user must never be handed.
    let (victim, linked) = (scene.outside.join("victim"), scene.outside.join("linked"));
    for dir in [&victim, &linked] {
        fs::create_dir_all(dir).unwrap_or_else(|error| panic!("{error}"));
    }
    let run = |script: &str| {
        Command::new(governor_bin())
            .arg("--audit-db")
            .arg(&store)
            .args(["run", "--standalone", "--trust", "medium", "--user", "nobody", "--cache", "persist"])
            .args(["--agent-id", &id, "--workspace"])
            .arg(&scene.workspace)
            .args(["--", "sh", "-c", script])
            .env("HOME", &scene.home)
            .env_remove("SUDO_UID")
            .output()
            .unwrap_or_else(|error| panic!("{error}"))
    };
    // The first run replaces parts of its cache with links to root's directories ...
    let plant = format!(
        r#"rm -rf "$XDG_CACHE_HOME" "$CARGO_HOME" && ln -s {} "$XDG_CACHE_HOME" && ln -s {} "$CARGO_HOME" && echo planted"#,
        victim.display(),
        linked.display()
    );
    let first = run(&plant);
    assert_eq!(stdout(&first).trim(), "planted", "{}", stderr(&first));
    // ... the next run of the same id starts as usual, with real directories in their place.
    let second =
        run(r#"test -d "$XDG_CACHE_HOME" && test ! -L "$XDG_CACHE_HOME" && test ! -L "$CARGO_HOME" && echo fresh"#);
    assert_eq!(stdout(&second).trim(), "fresh", "{}", stderr(&second));
    use std::os::unix::fs::MetadataExt as _;
    for dir in [&victim, &linked] {
        let meta = fs::metadata(dir).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(meta.uid(), 0, "{} was handed to the agent's user", dir.display());
    }
    let entries: Vec<_> =
        fs::read_dir(&linked).map(|dir| dir.flatten().map(|entry| entry.file_name()).collect()).unwrap_or_default();
    assert!(entries.is_empty(), "governor made {entries:?} in a directory the agent linked to");
}
