//! The warden: a small process beside a standalone `governor run` that makes sure the agent
//! never outlives its supervisor. governor may end without cleaning up (a panic, SIGKILL from
//! outside, the OOM killer); the warden then kills the agent's whole cgroup, removes it and
//! records the loss.
//!
//! It is forked before the agent, while governor is still single-threaded, and holds:
//! - a pidfd of governor (pidfd_open(2)), which turns readable when governor has exited;
//! - the read end of a pipe on which governor says "agent started" and "all done";
//! - duplicates of the probes' `bpf_link` descriptors: a link lives as long as one
//!   descriptor refers to it, so the cgroup socket hooks (UDP narrowing, denied
//!   destinations) stay attached while the agent has processes, whatever happens to
//!   governor.
//!
//! The agent cannot reach it: below admin, Landlock's signal scope (ABI 6) refuses signals
//! to processes outside the agent's domain and ptrace is refused; it is in its own session,
//! so the terminal's signals do not reach it either; and the OOM killer is told to spare it.

use std::{
    fs::File,
    io::Read as _,
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    poll::{PollFd, PollFlags, PollTimeout, poll},
    unistd::ForkResult,
};

use crate::{audit, cgroup::Cgroup};

/// Bytes governor writes on the pipe.
const STARTED: u8 = b'S';
const DONE: u8 = b'D';

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("starting the warden ({what}): {errno}")]
    Sys { what: &'static str, errno: Errno },
}

/// governor's side: the pipe to the warden.
pub struct Warden {
    pipe: File,
    pub pid: nix::unistd::Pid,
}

impl Warden {
    /// Forks the warden for the agent whose cgroup is `cgroup` (created, not yet used).
    /// Must be called while governor has one thread.
    pub fn spawn(cgroup: &Path, agent_id: &str, audit_db: &Path) -> Result<Warden, Error> {
        // SAFETY: pidfd_open(2) on our own pid.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
        if raw < 0 {
            return Err(Error::Sys { what: "pidfd_open", errno: Errno::last() });
        }
        // SAFETY: pidfd_open returned a new descriptor that nothing else owns.
        let supervisor = unsafe { OwnedFd::from_raw_fd(raw as i32) };
        let (read, write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|errno| Error::Sys { what: "pipe", errno })?;
        let args = Args {
            supervisor: supervisor.as_raw_fd(),
            pipe: read.as_raw_fd(),
            cgroup: cgroup.to_path_buf(),
            agent: agent_id.to_owned(),
            audit_db: audit_db.to_path_buf(),
            governor: std::process::id(),
        };
        let argv = args.argv();
        // SAFETY: governor is single-threaded here (the caller's contract); the child only
        // makes system calls before it execs.
        match unsafe { nix::unistd::fork() } {
            Ok(ForkResult::Child) => {
                drop(write);
                detach(&[args.supervisor, args.pipe]);
                // A fresh image: the store must not be opened in a copy of governor's memory,
                // whose SQLite state (the POSIX lock bookkeeping per file) it would share.
                let _ = nix::unistd::execv(c"/proc/self/exe", &argv);
                // No image to run: still kill the agent when governor ends, unrecorded.
                std::mem::forget((supervisor, read));
                Watch::from_args(args).run(false)
            }
            Ok(ForkResult::Parent { child }) => Ok(Warden { pipe: File::from(write), pid: child }),
            Err(errno) => Err(Error::Sys { what: "fork", errno }),
        }
    }

    /// The agent has been forked: from now on a loss is recorded.
    pub fn started(&mut self) {
        self.send(STARTED);
    }

    /// governor has cleaned up and recorded the agent's end: the warden leaves quietly.
    pub fn done(mut self) {
        self.send(DONE);
    }

    fn send(&mut self, byte: u8) {
        use std::io::Write as _;
        let _ = self.pipe.write_all(&[byte]);
    }
}

/// `governor warden`: what the warden is told on its command line (hidden from `--help`: it
/// is started by `governor run` alone).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// governor's pidfd (inherited).
    #[arg(long)]
    supervisor: i32,
    /// The read end of governor's pipe (inherited).
    #[arg(long)]
    pipe: i32,
    #[arg(long)]
    cgroup: PathBuf,
    #[arg(long)]
    agent: String,
    #[arg(long)]
    audit_db: PathBuf,
    #[arg(long)]
    governor: u32,
}

impl Args {
    fn argv(&self) -> Vec<std::ffi::CString> {
        use std::os::unix::ffi::OsStrExt as _;
        let text = |value: &str| std::ffi::CString::new(value).unwrap_or_default();
        let path = |value: &Path| std::ffi::CString::new(value.as_os_str().as_bytes()).unwrap_or_default();
        vec![
            text("governor-warden"),
            text("warden"),
            text("--supervisor"),
            text(&self.supervisor.to_string()),
            text("--pipe"),
            text(&self.pipe.to_string()),
            text("--cgroup"),
            path(&self.cgroup),
            text("--agent"),
            text(&self.agent),
            text("--audit-db"),
            path(&self.audit_db),
            text("--governor"),
            text(&self.governor.to_string()),
        ]
    }
}

/// The warden's process, after exec.
pub fn main(args: Args) -> ! {
    Watch::from_args(args).run(true)
}

/// The warden's side.
struct Watch {
    supervisor: OwnedFd,
    pipe: File,
    cgroup: PathBuf,
    agent: String,
    audit_db: PathBuf,
    governor: u32,
}

impl Watch {
    fn from_args(args: Args) -> Watch {
        // SAFETY: the descriptors were inherited from governor for this process alone.
        let (supervisor, pipe) = unsafe { (OwnedFd::from_raw_fd(args.supervisor), File::from_raw_fd(args.pipe)) };
        Watch {
            supervisor,
            pipe,
            cgroup: args.cgroup,
            agent: args.agent,
            audit_db: args.audit_db,
            governor: args.governor,
        }
    }

    fn run(mut self, record: bool) -> ! {
        // Waits for governor to end (POLLIN on its pidfd, pidfd_open(2)).
        loop {
            let mut fds = [PollFd::new(self.supervisor.as_fd(), PollFlags::POLLIN)];
            if poll(&mut fds, PollTimeout::NONE).is_ok() && fds[0].revents().is_some_and(|events| !events.is_empty()) {
                break;
            }
        }
        // What governor said before it ended; non-blocking, since a process forked from it
        // might still hold the write end (it is close-on-exec).
        let _ = nix::fcntl::fcntl(&self.pipe, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK));
        let mut said = Vec::new();
        let _ = self.pipe.read_to_end(&mut said);
        if said.contains(&DONE) {
            exit(0);
        }
        let killed = self.kill();
        if said.contains(&STARTED) && record {
            self.record(killed);
        }
        exit(0)
    }

    /// Kills what is in the agent's cgroup and removes it; says whether anything was left.
    fn kill(&self) -> bool {
        let Some(root) = self.cgroup.parent().and_then(Path::parent) else { return false };
        let Ok(cgroup) = Cgroup::open(root, &self.agent) else { return false };
        let left = cgroup.populated().unwrap_or(true);
        if left {
            let _ = cgroup.kill();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while cgroup.populated().unwrap_or(false) && Instant::now() < deadline {
            let _ = cgroup.wait_empty(Duration::from_millis(50));
        }
        let _ = std::fs::remove_dir(&self.cgroup);
        left
    }

    /// The loss, in the store: an incident, the kill and the end of the agent.
    fn record(&self, killed: bool) {
        let Ok(mut connection) = audit::open(&self.audit_db) else { return };
        let reason = format!(
            "governor (pid {}) ended without cleaning up; its warden {} the agent's cgroup",
            self.governor,
            if killed { "killed" } else { "removed" }
        );
        let rows = [
            audit::Row {
                table: "incidents",
                values: vec![
                    audit::text(&self.agent),
                    audit::int(audit::now_ns()),
                    audit::text("supervisor-lost"),
                    audit::text("high"),
                    audit::text("kill"),
                    audit::text(&reason),
                    audit::text(serde_json::json!({ "governor_pid": self.governor }).to_string()),
                ],
            },
            audit::action(&self.agent, "kill", "governor-warden", &reason),
            audit::action(&self.agent, "exit", "governor-warden", "exit status unknown: killed with its supervisor"),
        ];
        let _ = audit::insert(&mut connection, &rows);
    }
}

/// Out of governor's session and process group, its terminal and its descriptors (but
/// `keep` and the links, which are left open across exec), and never chosen by the OOM killer.
fn detach(keep: &[i32]) {
    // SAFETY: plain system calls on the calling (forked, single-threaded) process.
    unsafe {
        libc::setsid();
        // Ignored dispositions survive exec.
        for signal in [
            libc::SIGINT,
            libc::SIGQUIT,
            libc::SIGHUP,
            libc::SIGTERM,
            libc::SIGPIPE,
            libc::SIGTSTP,
            libc::SIGTTIN,
            libc::SIGTTOU,
            libc::SIGUSR1,
            libc::SIGUSR2,
        ] {
            libc::signal(signal, libc::SIG_IGN);
        }
    }
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_UNBLOCK,
        Some(&nix::sys::signal::SigSet::all()),
        None,
    );
    let _ = std::fs::write("/proc/self/oom_score_adj", "-1000");
    for (fd, target) in crate::probes::open_fds() {
        if fd <= 2 {
            continue;
        }
        if keep.contains(&fd) || target == "anon_inode:bpf_link" {
            // SAFETY: clearing close-on-exec on a descriptor of this process.
            unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
        } else {
            // SAFETY: closing descriptors of this forked process that nothing here uses.
            unsafe { libc::close(fd) };
        }
    }
    // stdio to /dev/null: a reader of governor's output sees its end when governor ends.
    if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors of this process.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

fn exit(code: i32) -> ! {
    // SAFETY: leave without running destructors that belong to governor.
    unsafe { libc::_exit(code) }
}
