//! Starting the governor daemon on first use. A `governor run` that finds no daemon on the
//! default socket starts one, the way a socket-activation unit would, and goes through it:
//! only that first run waits for the probes to be loaded and verified (about 100 ms), every
//! later run registers with the daemon instead. The daemon stops by itself once it has had
//! no agent and no connection for [`IDLE_EXIT`], so a machine that stops running agents does
//! not keep the probes attached.
//!
//! Only for root's default daemon: the default socket and the default store, where a daemon
//! installed as a service would be. An explicit `--socket` or `--audit-db` is a choice of
//! its own (a missing daemon there stays an error or a standalone run), and a run inside an
//! agent's cgroup could not register anyway (the daemon refuses agents).

use std::{
    ffi::CString,
    os::{
        fd::{AsFd as _, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    poll::{PollFd, PollFlags, PollTimeout, poll},
    unistd::ForkResult,
};

use crate::{
    daemon::control::{self, Client, Hello},
    launch::Request,
    probes,
};

/// How long a daemon started on first use stays with nothing to supervise.
pub const IDLE_EXIT: Duration = Duration::from_secs(600);

/// How long the first run waits for the daemon to say it is ready (the probes are verified
/// first; an emulated or old kernel's verifier takes seconds).
const READY_WITHIN: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("starting the governor daemon ({what}): {errno}")]
    Sys { what: &'static str, errno: Errno },
    #[error("starting the governor daemon: {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the governor daemon started on first use ended before it was ready (see {})", log.display())]
    Ended { log: PathBuf },
    #[error("the governor daemon started on first use was not ready within {}s (see {})", READY_WITHIN.as_secs(), log.display())]
    Timeout { log: PathBuf },
}

fn sys(what: &'static str) -> impl FnOnce(Errno) -> Error {
    move |errno| Error::Sys { what, errno }
}

/// Whether this run may start the daemon: root, the default socket and store, probes
/// wanted, and not inside an agent.
pub fn allowed(request: &Request) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let inside_agent =
        std::fs::read_to_string("/proc/self/cgroup").ok().is_some_and(|cgroup| control::agent_of(&cgroup).is_some());
    root && request.socket.is_none()
        && request.audit_db == Path::new(crate::audit::ROOT_STORE)
        && request.probes != probes::Choice::Off
        && !inside_agent
}

/// Where the daemon started on first use writes its log: beside the store.
pub fn log_path(request: &Request) -> PathBuf {
    request.audit_db.parent().unwrap_or(Path::new("/")).join("daemon.log")
}

/// Starts `governor daemon` on the default socket, detached (its own session, stdio to
/// the log), and waits until it is ready: it says `READY=1` on a notification socket, as
/// to systemd. Then connects to it. Must be called while governor has one thread.
pub fn start(request: &Request) -> Result<(Client, Hello), Error> {
    let log = log_path(request);
    let notify = NotifySocket::bind()?;
    let argv = daemon_argv(request);
    let log_file = open_log(&log)?;
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
    let env = notify.env();
    // SAFETY: governor has one thread here (the caller's contract); the children only make
    // system calls before exec.
    match unsafe { nix::unistd::fork() }.map_err(sys("fork"))? {
        ForkResult::Child => {
            drop(read);
            // A session of its own, then a second fork: the daemon is nobody's child here
            // (not the agent's supervisor's, which reaps every child it has).
            let _ = nix::unistd::setsid();
            // SAFETY: as above.
            let code = match unsafe { nix::unistd::fork() } {
                Ok(ForkResult::Child) => {
                    exec_daemon(&argv, &env, &log_file);
                    // SAFETY: leave the forked child without running governor's destructors.
                    unsafe { libc::_exit(127) }
                }
                Ok(ForkResult::Parent { child }) => {
                    let _ = nix::unistd::write(&write, &child.as_raw().to_le_bytes());
                    0
                }
                Err(_) => 1,
            };
            // SAFETY: as above.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(write);
            drop(log_file);
            let _ = nix::sys::wait::waitpid(child, None);
            let mut pid = [0u8; 4];
            let got = nix::unistd::read(&read, &mut pid).map_err(sys("reading the daemon's pid"))?;
            if got != pid.len() {
                return Err(Error::Ended { log });
            }
            let pid = i32::from_le_bytes(pid);
            // SAFETY: pidfd_open(2) on a pid; a daemon already gone is ESRCH.
            let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
            let daemon = (raw >= 0).then(|| {
                // SAFETY: pidfd_open returned a new descriptor that nothing else owns.
                unsafe { OwnedFd::from_raw_fd(raw as i32) }
            });
            notify.wait_ready(daemon.as_ref(), &log)?;
            let socket = control::socket_path(None);
            control::discover(None)
                .ok()
                .flatten()
                .ok_or_else(|| Error::Io { path: socket, source: std::io::ErrorKind::NotConnected.into() })
        }
    }
}

/// `governor [--rings DIR] --audit-db STORE daemon --probes CHOICE --idle-exit SECONDS
/// --on-supervisor-loss kill`.
fn daemon_argv(request: &Request) -> Vec<CString> {
    use clap::ValueEnum as _;
    let text = |value: &str| CString::new(value).unwrap_or_default();
    let path = |value: &Path| CString::new(value.as_os_str().as_bytes()).unwrap_or_default();
    let mut argv = vec![text("governor")];
    if let Some(rings) = &request.rings {
        argv.extend([text("--rings"), path(rings)]);
    }
    argv.extend([text("--audit-db"), path(&request.audit_db), text("daemon")]);
    if let Some(choice) = request.probes.to_possible_value() {
        argv.extend([text("--probes"), text(choice.get_name())]);
    }
    argv.extend([text("--idle-exit"), text(&IDLE_EXIT.as_secs().to_string())]);
    // It stands in for a standalone run, whose agent dies with its supervisor: an agent of
    // this daemon is killed when the daemon is gone past the grace period.
    argv.extend([text("--on-supervisor-loss"), text("kill")]);
    argv
}

/// The log, opened for appending (mode 0600, its directory made 0700 like the store's).
fn open_log(log: &Path) -> Result<std::fs::File, Error> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    let io = |source| Error::Io { path: log.to_path_buf(), source };
    if let Some(dir) = log.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
    }
    std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(log).map_err(io)
}

/// In the daemon's process, before exec: out of the caller's terminal and directory, stdio
/// to the log, told where to say it is ready.
fn exec_daemon(argv: &[CString], notify_env: &CString, log: &std::fs::File) {
    use std::os::fd::AsRawFd as _;
    // SAFETY: plain system calls on the calling (forked, single-threaded) process, with
    // valid NUL-terminated strings.
    unsafe {
        libc::chdir(c"/".as_ptr());
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
        if null >= 0 {
            libc::dup2(null, 0);
        }
        libc::dup2(log.as_raw_fd(), 1);
        libc::dup2(log.as_raw_fd(), 2);
        // Descriptors of the caller stay out of the daemon (it runs for a long time).
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC);
        // The caller may have been started with signals ignored or blocked (a shell's
        // background job): the daemon handles its own.
        for signal in [libc::SIGINT, libc::SIGQUIT, libc::SIGHUP, libc::SIGTERM, libc::SIGPIPE] {
            libc::signal(signal, libc::SIG_DFL);
        }
    }
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
    let mut envp: Vec<CString> = std::env::vars_os()
        .filter(|(key, _)| key != "NOTIFY_SOCKET" && key != "WATCHDOG_USEC" && key != "WATCHDOG_PID")
        .filter_map(|(key, value)| {
            let mut entry = key.as_bytes().to_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            CString::new(entry).ok()
        })
        .collect();
    envp.push(notify_env.clone());
    let _ = nix::unistd::execve(c"/proc/self/exe", argv, &envp);
}

/// A datagram socket in the abstract namespace (nothing to clean up) that the daemon
/// reports `READY=1` on, through `NOTIFY_SOCKET` (sd_notify(3)'s protocol).
struct NotifySocket {
    socket: std::os::unix::net::UnixDatagram,
    name: String,
}

impl NotifySocket {
    fn bind() -> Result<NotifySocket, Error> {
        use std::os::linux::net::SocketAddrExt as _;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|time| time.subsec_nanos())
            .unwrap_or(0);
        let name = format!("governor-start-{}-{nanos:08x}", std::process::id());
        let io = |source| Error::Io { path: PathBuf::from(format!("@{name}")), source };
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).map_err(io)?;
        let socket = std::os::unix::net::UnixDatagram::bind_addr(&addr).map_err(io)?;
        socket.set_nonblocking(true).map_err(io)?;
        Ok(NotifySocket { socket, name })
    }

    fn env(&self) -> CString {
        CString::new(format!("NOTIFY_SOCKET=@{}", self.name)).unwrap_or_default()
    }

    /// Until `READY=1` comes; an error when the daemon ends first (its pidfd turns
    /// readable) or takes longer than [`READY_WITHIN`].
    fn wait_ready(&self, daemon: Option<&OwnedFd>, log: &Path) -> Result<(), Error> {
        let deadline = Instant::now() + READY_WITHIN;
        let mut buffer = [0u8; 512];
        loop {
            while let Ok(length) = self.socket.recv(&mut buffer) {
                if buffer[..length].split(|byte| *byte == b'\n').any(|line| line == b"READY=1") {
                    return Ok(());
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout { log: log.to_path_buf() });
            }
            let timeout = PollTimeout::try_from(left.as_millis().min(10_000) as i32).unwrap_or(PollTimeout::NONE);
            let mut fds = vec![PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)];
            if let Some(daemon) = daemon {
                fds.push(PollFd::new(daemon.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(errno) => return Err(Error::Sys { what: "poll", errno }),
            }
            let ended = fds.get(1).and_then(PollFd::revents).is_some_and(|events| !events.is_empty());
            let ready = fds[0].revents().is_some_and(|events| !events.is_empty());
            if ended && !ready {
                return Err(Error::Ended { log: log.to_path_buf() });
            }
        }
    }
}
