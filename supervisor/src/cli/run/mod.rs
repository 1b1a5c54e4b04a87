//! `governor run`: confine one agent and supervise it until it and its descendants are gone.
//!
//! The request is checked first ([`crate::launch`]), so bad input leaves nothing behind.
//! Then, in order: private temp dir, Landlock ruleset and seccomp BPF (built in the parent),
//! cgroup, registration with the daemon (or the probes loaded here), fork
//! ([`crate::launch::child`]); then this process waits for the agent, forwards signals, and
//! reports its exit.
//!
//! The daemon's side of it (finding one, starting one on first use, the link while the agent
//! runs, the exit reported) is `daemon` and `autostart`.

mod autostart;
mod daemon;

use std::{
    ffi::{CString, OsStr},
    fs::File,
    io::{Read as _, Write as _},
    os::{fd::AsRawFd as _, unix::ffi::OsStrExt as _},
    path::Path,
    time::Duration,
};

use nix::{
    errno::Errno,
    sys::{
        signal::{SigSet, SigmaskHow, Signal, sigprocmask},
        signalfd::{SfdFlags, SignalFd},
        wait::{WaitPidFlag, WaitStatus, waitpid},
    },
    unistd::ForkResult,
};

pub use self::daemon::find_daemon;
use self::daemon::{DaemonLink, report_exit};
use crate::{
    agent::EventOutput,
    audit,
    cgroup::{self, Cgroup},
    daemon::control::{self, Client, Hello},
    launch::{
        self, Prepared, TempDir, cache_dir,
        child::{CONTROL_DIR, ChildFailure, Command, child_main, fork_into, secret_masks},
        confinement, link_cargo_config, make_cache, ports, sys,
    },
    policy::Trust,
    probes::{self, Probes},
    sandbox::{Confinement, Unenforceable, landlock, seccomp},
    supervise,
};

/// Why a run failed: before the agent started (see [`launch::Error`]), or with the daemon
/// or the warden.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Launch(#[from] launch::Error),
    #[error(transparent)]
    Daemon(#[from] control::Error),
    #[error(transparent)]
    Warden(#[from] crate::warden::Error),
}

/// The launch's own failures, met again while the agent runs.
macro_rules! launch_errors {
    ($($error:ty),*) => {
        $(impl From<$error> for Error {
            fn from(error: $error) -> Error {
                Error::Launch(error.into())
            }
        })*
    };
}

launch_errors!(
    audit::Error,
    cgroup::Error,
    landlock::Error,
    probes::Error,
    seccomp::Error,
    supervise::Error,
    Unenforceable
);

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Launch(error) => error.exit_code(),
            // --socket names no daemon: nothing was started.
            Error::Daemon(control::Error::Connect { .. }) => crate::exit::USAGE,
            _ => crate::exit::FAILURE,
        }
    }
}

/// Signals passed on to the agent.
const FORWARDED: [Signal; 6] =
    [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT, Signal::SIGUSR1, Signal::SIGUSR2];

/// Runs the agent; returns governor's exit code. With a daemon, the daemon watches the
/// agent, decides on its events and records them; this process still starts, waits for and
/// cleans up after the agent, as standalone.
pub fn run(mut prepared: Prepared, mut daemon: Option<(Client, Hello)>) -> Result<i32, Error> {
    let verbose = prepared.request.verbose;
    // Fail closed: no store, no agent (the daemon has its own, opened when it started).
    let mut store = match daemon {
        Some(_) => None,
        None => Some(audit::Writer::open(&prepared.request.audit_db)?),
    };
    let mut probes = match daemon {
        Some(_) => None,
        None => Probes::load(prepared.request.probes)?,
    };
    let backend = match &daemon {
        Some((_, hello)) => Some(hello.backend),
        None => probes.as_ref().map(|p| p.backend),
    };
    // The temp dir must exist to be planned; it is removed again (drop) if the kernel cannot
    // enforce the ring, so a refusal leaves nothing behind.
    let tmpdir = TempDir::create(&prepared.agent_id, &prepared.identity)?;
    let cache = cache_dir(&prepared, &tmpdir.0);
    let cached = prepared.ring.trust != Trust::Admin;
    let fresh_cache = cached && make_cache(&prepared, &cache)?;
    let confinement = confinement(&prepared, &tmpdir.0);
    let enforcement = match confinement.check(&prepared.kernel, backend, prepared.request.best_effort) {
        Ok(enforcement) => enforcement,
        Err(error) => {
            // A refused ring leaves nothing behind: not a persistent cache made for it.
            if fresh_cache {
                let _ = std::fs::remove_dir_all(&cache);
            }
            return Err(error.into());
        }
    };
    for line in &enforcement.missing {
        say!("governor: not enforced: {line}");
    }
    if verbose {
        for line in &enforcement.partial {
            say!("governor: not enforced here: {line}");
        }
    }
    if cached {
        link_cargo_config(&prepared, &cache, &confinement.landlock)?;
    }
    // The pathname UNIX sockets bound now, and those of them masked: every one but the
    // lists' and the agent's own. With BPF LSM the rest are the only ones, besides its own,
    // it may reach: sockets bound later too are refused by inode.
    let unix_sockets = confinement.unix_allow.as_ref().map(|allow| {
        use crate::sandbox::unix;
        let bound = unix::bound_sockets(&std::fs::read_to_string("/proc/net/unix").unwrap_or_default());
        let masks = unix::masks(&bound, &unix::allowed(allow), &[&prepared.workspace, &tmpdir.0]);
        (bound, masks)
    });
    let probe_plan = |backend| {
        let mut plan = confinement.probe_plan(backend);
        plan.unix = unix_sockets
            .as_ref()
            .map(|(bound, masks)| bound.iter().filter(|path| !masks.contains(path)).cloned().collect());
        plan
    };
    let cgroup = Cgroup::create(&prepared.cgroup_root, &prepared.agent_id)?;
    // The notify backend's opens: a fanotify group whose marks the child puts on the mounts
    // of its own namespace (below admin, as root: the only case where it has one).
    // An admin agent gets a namespace of its own only for this (mounts propagate in from the
    // host, not out).
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let opens = match backend {
        Some(probes::Backend::Notify) if root => Some(
            probes::fanotify::group().map_err(|source| launch::Error::Io { path: "fanotify_init".into(), source })?,
        ),
        Some(probes::Backend::Notify) => {
            say!(
                "governor: probes: allowed opens are not reported: governor is not root, so the agent has no mount namespace of its own to mark"
            );
            None
        }
        _ => None,
    };
    // The notify backend: an audit session of the agent's own, whose refused syscalls are
    // recorded. Through a daemon it is made now, for the registration to name it (a daemon
    // that restarts knows the agent's records by it).
    let mut session = None;
    if daemon.is_some() && opens.is_some() {
        session = audit_session();
    }
    // The daemon attaches the agent's hooks and records it while this process builds the
    // Landlock ruleset and the seccomp filters: the answer is read just before the fork.
    if let Some((client, hello)) = daemon.as_mut() {
        let registration = control::Registration {
            agent: prepared.agent_id.clone(),
            trust: prepared.ring.trust,
            command: prepared.request.command.iter().map(|arg| arg.to_string_lossy().into_owned()).collect(),
            user: prepared.identity.name.clone(),
            observe: prepared.request.observe,
            overlays: prepared
                .request
                .policies
                .iter()
                .map(|path| path.canonicalize().unwrap_or_else(|_| path.clone()))
                .collect(),
            plan: probe_plan(hello.backend),
            fanotify: opens.as_ref().map(|group| group.as_raw_fd()),
            first_pid: None,
            session: session.as_ref().map(|session| session.id),
        };
        client.send(&control::Request::Register(registration))?;
    }
    let ruleset = confinement.landlock.build(prepared.kernel.landlock_abi, backend == Some(probes::Backend::Notify))?;
    let filters = confinement.seccomp.compile()?;
    if verbose {
        report(&prepared, &confinement, &tmpdir.0);
        match &probes {
            None if let Some((client, hello)) = &daemon => say!(
                "governor: probes: {} backend of the governor daemon (pid {}, {})",
                hello.backend,
                hello.pid,
                client.path.display()
            ),
            Some(probes) => {
                say!("governor: probes: {} backend", probes.backend);
                if let Some(reason) = &probes.fallback {
                    say!("governor: probes: BPF LSM not used: {reason}");
                }
                if let Some(reason) = &probes.no_fentry {
                    say!("governor: probes: events from the raw syscall tracepoints, fentry does not load: {reason}");
                }
                if let Some(reason) = &probes.cwd_walk {
                    say!("governor: probes: {reason}");
                }
            }
            None => say!("governor: probes: off"),
        }
    }

    let mut command = Command::new(&prepared, &tmpdir.0, &confinement.landlock)?;
    if confinement.drop_capabilities && confinement.landlock.enforce {
        command.masks = secret_masks(&confinement);
    }
    if let Some((bound, masks)) = &unix_sockets {
        if verbose {
            say!(
                "governor: UNIX sockets: {} of the {} bound now are masked (the ring's [[unix.connect]] and --policy list the rest)",
                masks.len(),
                bound.len()
            );
        }
        command.unix_masks = masks.iter().filter_map(|path| CString::new(path.as_os_str().as_bytes()).ok()).collect();
    }
    if confinement.drop_capabilities {
        // Made now if missing, so that the agent's mask covers a control socket created
        // while it runs too.
        use std::os::unix::fs::DirBuilderExt as _;
        let _ = std::fs::DirBuilder::new().mode(0o700).create(OsStr::from_bytes(CONTROL_DIR.to_bytes()));
    }
    let cgroup_dir = cgroup.dir()?;
    let mut procs = cgroup.procs_for_join()?;
    let cgroup_id = cgroup.id()?;
    if verbose {
        say!("governor: cgroup {} (id {cgroup_id})", cgroup.path().display());
    }
    // The programs rules suspend or kill for, held at their exec (standalone; a daemon
    // holds them for its agents).
    let mut stops = None;
    if let Some((client, _)) = daemon.as_mut() {
        let answer = client.answer()?;
        if verbose {
            say!("governor: deny rules enforced in the kernel: {}", answer["enforced"].as_str().unwrap_or(""));
            for line in answer["userspace_only"].as_array().into_iter().flatten() {
                say!("governor: decided in userspace only: {}", line.as_str().unwrap_or(""));
            }
        }
    } else if let Some(probes) = probes.as_mut() {
        let mode =
            if prepared.request.observe { governor_common::mode::OBSERVE } else { governor_common::mode::ENFORCE };
        let slot = governor_common::AgentSlot { slot: 0, mode };
        probes.watch(cgroup_id, &prepared.agent_id, &cgroup_dir, slot, &probe_plan(probes.backend))?;
        // Before the agent runs: its first exec of such a program is held too.
        match probes.stops() {
            Ok(mut held) => {
                let names = prepared.engine.stop_names(prepared.ring.trust);
                held.hold(cgroup_id, &names)?;
                if verbose {
                    say!("governor: probes: held at their exec until the rules have decided: {}", names.join(", "));
                }
                stops = Some(held);
            }
            Err(error) => {
                say!("governor: probes: programs that rules suspend or kill for are not held at their exec: {error}")
            }
        }
        let denies = prepared.rules.kernel_denies(prepared.ring.trust, probes.backend == probes::Backend::Lsm);
        let enforced = probes.deny(cgroup_id, &denies)?;
        if verbose {
            say!("governor: deny rules enforced in the kernel: {enforced}");
            for line in &denies.userspace_only {
                say!("governor: decided in userspace only: {line}");
            }
        }
    }

    // Standalone, governor is the agent's only supervisor: the warden kills the agent if
    // governor ends without cleaning up, and keeps the socket hooks attached until then.
    let mut warden = match daemon {
        Some(_) => None,
        None => Some(crate::warden::Warden::spawn(cgroup.path(), &prepared.agent_id, &prepared.request.audit_db)?),
    };
    // Standalone, after the warden's fork: only the agent's processes are in the session.
    if daemon.is_none() && opens.is_some() {
        session = audit_session();
    }
    if verbose && let Some(session) = &session {
        say!("governor: probes: audit session {} (refused syscalls of the agent's processes recorded)", session.id);
    }
    // A masked directory refuses by its mode before Landlock sees the access. Without an
    // audit session nothing reports that on the notify backend, which then leaves secret
    // directories to Landlock: it refuses and reports every read inside them (their names
    // can be listed).
    let unmasked = if backend == Some(probes::Backend::Notify) && session.is_none() {
        let before = command.masks.len();
        command.masks.retain(|(_, is_dir)| !is_dir);
        before - command.masks.len()
    } else {
        0
    };
    if verbose && confinement.drop_capabilities && confinement.landlock.enforce {
        say!("governor: {} secrets masked in the agent's mount namespace", command.masks.len());
    }
    if verbose && unmasked > 0 {
        say!(
            "governor: {unmasked} secret directories not masked (notify backend without an audit session): Landlock refuses and reports each read inside them; their names can be listed"
        );
    }
    // The marks go on the mounts the agent will have: the host's, and the masks it keeps.
    if let Some(group) = &opens {
        let mut points = probes::fanotify::mount_points()
            .map_err(|source| launch::Error::Io { path: "/proc/self/mountinfo".into(), source })?;
        points.push(CONTROL_DIR.to_owned());
        points.extend(command.masks.iter().map(|(path, _)| path.clone()));
        command.marks = Some((group.as_raw_fd(), points));
    }
    // The agent's mount namespace is held while its events are read: when its last process
    // ends the kernel detaches its mounts, and a path read from a descriptor on them would
    // lose its mount point (`/proc/cpuinfo` read as `/cpuinfo`).
    let marked = match &command.marks {
        Some(_) => Some(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))?),
        None => None,
    };
    command.marked = marked.as_ref().map(|(_, write)| write.as_raw_fd());
    // Block the forwarded signals and SIGCHLD before the fork, so none is lost between the
    // fork and the read loop; the child restores the mask before exec.
    let mut mask = SigSet::empty();
    for signal in FORWARDED {
        mask.add(signal);
    }
    mask.add(Signal::SIGCHLD);
    let mut old_mask = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), Some(&mut old_mask)).map_err(sys("blocking signals"))?;
    let signals =
        SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).map_err(sys("signalfd"))?;
    // Orphaned descendants are reparented to us (and not to init), so every one is reaped.
    // SAFETY: prctl with integer arguments on the calling process.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(launch::Error::Sys { what: "PR_SET_CHILD_SUBREAPER".into(), errno: Errno::last() }.into());
    }
    let (report_read, report_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))?;

    // The engine's listing of the programs its rules name (a stat per file of the program
    // directories, about 10 ms), made before the agent runs, not while its first events
    // wait for their decision. The event output's resolver finds it made.
    let engine = std::rc::Rc::new(std::mem::take(&mut prepared.engine));
    if probes.is_some() {
        crate::resolve::list_programs(&engine);
    }
    let (forked, in_cgroup) = fork_into(&cgroup_dir)?;
    let child = match forked {
        ForkResult::Child => {
            drop(report_read);
            let join = if in_cgroup { None } else { Some(&mut procs) };
            let failure = child_main(&prepared, &confinement, ruleset, &filters, &command, join, &old_mask);
            let mut report = File::from(report_write);
            let _ = report.write_all(&failure.encode());
            // SAFETY: leave the child without running the parent's destructors (they would
            // remove the cgroup and the temp dir).
            unsafe { libc::_exit(failure.exit_code()) }
        }
        ForkResult::Parent { child } => child,
    };
    if let Some(session) = &session {
        session.restore();
    }
    let namespace = marked.and_then(|(read, write)| {
        drop(write);
        let mut byte = [0u8; 1];
        // EOF (no byte): the child failed before marking, and says why on its report pipe.
        match File::from(read).read(&mut byte) {
            Ok(1) => File::open(format!("/proc/{child}/ns/mnt")).ok(),
            _ => None,
        }
    });
    // The child creates its Landlock domain: its records are the agent's.
    if let Some(audit) = probes.as_mut().and_then(|probes| probes.audit.as_mut()) {
        audit.watch_agent(Some(child.as_raw() as u32), session.as_ref().map(|session| session.id), cgroup_id);
    }
    // Through the daemon this process keeps its copy of the group: a daemon started again
    // takes it once more (`Request::Attach`).
    let mut held = None;
    match (probes.as_mut(), opens) {
        (Some(probes), Some(group)) => {
            probes.opens.push(probes::fanotify::Opens::new(group, cgroup_id, cgroup.path(), &prepared.cgroup_root))
        }
        (None, group) => held = group,
        (Some(_), None) => {}
    }
    if let Some((client, hello)) = daemon.as_mut()
        && hello.backend == probes::Backend::Notify
    {
        // A daemon gone meanwhile is the link's to notice and reach again (a new one adopts
        // the agent with what the registration saved): the agent is running, and this
        // process must go on supervising it.
        let started = client
            .send(&control::Request::Started {
                agent: prepared.agent_id.clone(),
                pid: child.as_raw() as u32,
                session: session.as_ref().map(|session| session.id),
            })
            .and_then(|()| client.answer().map(drop));
        if let Err(error) = started {
            say!(
                "governor: the daemon did not take the agent's start ({error}); its Landlock records name the agent's first process"
            );
        }
    }
    drop(report_write);
    drop(procs);
    drop(cgroup_dir);
    // The start is in the store before the warden is told the agent runs: a governor killed
    // the next moment leaves a recorded agent whose loss the warden records, not an unknown
    // one. What cannot be committed now is the writer's to retry.
    let uncommitted = match store.as_mut() {
        Some(store) => store.commit_now(start_rows(&prepared, &cgroup, probes.as_ref())),
        None => Vec::new(),
    };
    if let Some(warden) = warden.as_mut() {
        warden.started();
    }

    if let Some((client, hello)) = daemon {
        let control = Cgroup::open(&prepared.cgroup_root, &prepared.agent_id)?;
        let mut link = DaemonLink::new(client, &hello, &prepared.agent_id, control);
        let status = supervise::run(child, signals, &FORWARDED, None, Some(&mut link), || cleanup(cgroup, verbose))?;
        let code = child_result(report_read, status, &prepared.request.command[0], prepared.ring.trust);
        // Before the exit is reported: the daemon's copy of the group is then the last, and
        // the kernel's wait at a group's last close is the daemon's (off its loop), not this
        // run's on its way out.
        drop(held);
        report_exit(link, &hello, &prepared.agent_id, code);
        drop(session);
        drop(namespace);
        drop(tmpdir);
        return Ok(code);
    }
    let store = store.ok_or_else(|| launch::Error::Usage("no audit store".into()))?;
    // The supervisor decides and freezes ahead of the agent it watches: a higher scheduling
    // priority (root only; the agent, already forked, keeps its own).
    // SAFETY: setpriority on the calling process.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -10) };
    let writer = store.start()?;
    for row in uncommitted {
        writer.write(row)?;
    }

    let mut output = EventOutput::new(
        &writer,
        engine,
        prepared.ring.trust,
        &prepared.agent_id,
        Cgroup::open(&prepared.cgroup_root, &prepared.agent_id)?,
        prepared.request.trace,
        None,
    );
    if let Some(stops) = stops {
        output.stop_in_kernel(stops, cgroup_id);
    }
    let events = probes.as_mut().map(|probes| supervise::Events::new(probes, &mut output));
    let status = supervise::run(child, signals, &FORWARDED, events, None, || cleanup(cgroup, verbose))?;
    let code = child_result(report_read, status, &prepared.request.command[0], prepared.ring.trust);
    output.finish();
    let exit_why = match code {
        0..=127 => format!("exit status {code}"),
        _ => format!("exit status {code} (signal {})", code - 128),
    };
    writer.write(audit::action(&prepared.agent_id, "exit", "kernel", &exit_why))?;
    if output.tally.lost > 0 {
        writer.write(audit::action(
            &prepared.agent_id,
            "events-lost",
            "probes",
            &format!("{} events dropped (ring buffer full)", output.tally.lost),
        ))?;
    }
    let unwritten = crate::output::dropped();
    if unwritten > 0 {
        // The reader went away or the terminal refused: the lines are gone, the count is not.
        writer.write(audit::action(
            &prepared.agent_id,
            "output-dropped",
            "governor",
            &format!("{unwritten} lines of governor's own stderr could not be written (EPIPE or EAGAIN)"),
        ))?;
    }
    let tally = std::mem::take(&mut output.tally);
    drop(output);
    // The writer thread ends before the probes are released (that forks).
    writer.finish()?;
    if let Some(probes) = probes.as_mut() {
        let counters = probes.counters()?;
        if verbose || prepared.request.trace || counters.dropped > 0 || tally.undecodable > 0 {
            say!(
                "governor: probes ({}): {} events produced, {} delivered, {} dropped (ring buffer full), {} undecodable, {} probe read errors",
                probes.backend,
                counters.produced + probes.read_in_userspace,
                tally.events,
                counters.dropped,
                tally.undecodable,
                counters.errors
            );
        }
    }
    drop(tmpdir);
    if let Some(warden) = warden {
        warden.done();
    }
    Ok(code)
}

/// An agent's start in the store: its row, the policy files that govern it and the start.
fn start_rows(prepared: &Prepared, cgroup: &Cgroup, probes: Option<&Probes>) -> Vec<audit::Row> {
    let command_line: Vec<String> =
        prepared.request.command.iter().map(|arg| arg.to_string_lossy().into_owned()).collect();
    let mut rows = vec![audit::agent_row(
        &prepared.agent_id,
        prepared.ring.trust.as_str(),
        &command_line.join(" "),
        &prepared.identity.name,
        cgroup.path(),
        &probes.map_or("off".to_owned(), |probes| probes.backend.to_string()),
    )];
    rows.extend(audit::policy_rows(&prepared.agent_id, &prepared.request.policies));
    rows.push(audit::action(
        &prepared.agent_id,
        "start",
        &prepared.identity.name,
        &format!("governor run --trust {}", prepared.ring.trust),
    ));
    rows
}

/// The agent's exit code, or governor's when the child failed before or at exec (it said
/// why through the report pipe, which exec closed otherwise).
fn child_result(report: std::os::fd::OwnedFd, status: i32, command: &OsStr, trust: Trust) -> i32 {
    let mut bytes = Vec::new();
    let _ = File::from(report).read_to_end(&mut bytes);
    match ChildFailure::decode(&bytes) {
        Some(failure) => {
            say!("governor: {}", failure.describe(command));
            if let ChildFailure::Exec(code) = failure
                && (code == libc::EACCES || code == libc::EPERM)
            {
                say!(
                    "governor: `governor explain --trust {trust} {}` says which rule refuses it and what would allow it",
                    command.to_string_lossy()
                );
            }
            failure.exit_code()
        }
        None => status,
    }
}

/// After the agent exits: kill what it left behind in its cgroup, reap it, remove the cgroup.
fn cleanup(cgroup: Cgroup, verbose: bool) {
    // If the state cannot be read (the agent may have lowered our descriptor limit), assume
    // something is left and kill.
    if cgroup.populated().unwrap_or(true) {
        if verbose {
            say!("governor: killing what the agent left running: {:?}", cgroup.pids().unwrap_or_default());
        }
        if let Err(error) = cgroup.kill() {
            say!("governor: {error}");
        }
    }
    // Leftovers were reparented to us (subreaper): reap them as they die.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while cgroup.populated().unwrap_or(true) && std::time::Instant::now() < deadline {
        let _ = cgroup.wait_empty(Duration::from_millis(50));
        while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            if status == WaitStatus::StillAlive {
                break;
            }
        }
    }
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
    let path = cgroup.path().to_path_buf();
    if let Err(error) = cgroup.remove() {
        say!("governor: cannot remove {}: {error}", path.display());
    }
}

fn report(prepared: &Prepared, confinement: &Confinement, tmpdir: &Path) {
    let identity = &prepared.identity;
    say!(
        "governor: agent {} ring {} as {} (uid {}) workspace {} tmpdir {}",
        prepared.agent_id,
        confinement.trust,
        identity.name,
        identity.uid,
        prepared.workspace.display(),
        tmpdir.display()
    );
    say!(
        "governor: Landlock ABI {} ({} path rules, connect {}, bind {}), seccomp {} refusals, capabilities {}",
        prepared.kernel.landlock_abi,
        confinement.landlock.paths.len(),
        ports(confinement.landlock.connect_ports.as_deref()),
        ports(confinement.landlock.bind_ports.as_deref()),
        confinement.seccomp.refusals.len(),
        if confinement.drop_capabilities { "dropped" } else { "kept" }
    );
    for note in &confinement.notes {
        say!("governor: note: {note}");
    }
}

/// The agent's audit session (`landlock_audit::Session`), or why there is none.
fn audit_session() -> Option<probes::landlock_audit::Session> {
    match probes::landlock_audit::Session::start() {
        Ok(session) => Some(session),
        Err(error) => {
            say!(
                "governor: probes: no audit session for the agent ({error}): refusals by file permissions are not reported, and Landlock's name the agent's first process"
            );
            None
        }
    }
}
