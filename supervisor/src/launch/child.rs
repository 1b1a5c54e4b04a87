//! The agent's side of the fork: its argv and environment (built before the fork), the
//! fork straight into its cgroup, the private mounts that hide the control socket and the
//! secrets, and the steps between fork and exec. The child joins the cgroup, drops
//! privileges, sets `no_new_privs`, enters the Landlock domain, installs seccomp last and
//! `exec`s. The parent is single-threaded up to the fork, so the child may allocate.

use std::{
    ffi::{CString, OsStr, OsString},
    fs::File,
    os::unix::ffi::{OsStrExt as _, OsStringExt as _},
    path::{Path, PathBuf},
};

use nix::{
    errno::Errno,
    sys::signal::{SigSet, SigmaskHow, sigprocmask},
    unistd::{ForkResult, Pid, fork},
};

use super::{Error, Prepared, cache_dir, cache_env, env_withheld, granted, readable, sys};
use crate::{
    cgroup, exit,
    policy::Trust,
    sandbox::{Confinement, carve::RealFs, landlock, privileges, seccomp},
};

/// Where governor's control socket lives (the daemon's; `/run/governor/governor.sock`).
pub const CONTROL_DIR: &std::ffi::CStr = c"/run/governor";

/// Below admin, the agent's view of `CONTROL_DIR` is an empty, read-only tmpfs of mode 000,
/// in a mount namespace of its own (mounts from the host still propagate in): a path walk
/// into it is EACCES even for an agent running as uid 0, which has no capability to override
/// the mode. Landlock cannot keep an agent from connecting to a pathname socket before ABI 9,
/// and the socket's owner check would let a uid-0 agent in. Needs CAP_SYS_ADMIN, still held
/// here; without it (governor not root) the directory's own mode 0700 keeps others out.
///
/// The secrets that exist at launch are masked the same way: an empty read-only tmpfs of
/// mode 000 over each secret directory, an empty file bound read-only over each secret
/// file. Landlock already refuses to read them (no rule grants them); the mask keeps the
/// names inside a secret directory out of sight too, now that the trees they sit in may be
/// listed (`ls ~`, `ls /etc`). The file's mask is mode 0444 and empty: reading it is
/// refused by Landlock (its path walk skips the hidden mount point and finds no rule), with
/// EACCES as before, and Landlock's audit record reports it on the notify backend, where a
/// refusal by the file mode would have gone unseen. Landlock stays the guarantee: a mask is lost when someone
/// outside replaces the file (the kernel detaches mounts from an unlinked mountpoint), and a
/// secret created later has nothing to mount on.
///
/// Each socket of `unix_masks` (see `sandbox::unix`) gets a mode-000 FIFO, made in that
/// tmpfs before it is made read-only, bind-mounted over it, so a connect is EACCES. A socket
/// gone meanwhile is skipped.
/// A mount namespace of the caller's own, whose mounts receive the host's and send none
/// back; false when it could not be made so.
fn own_namespace() -> bool {
    // SAFETY: unshare(2) and mount(2) on the calling single-threaded process, with valid
    // NUL-terminated strings.
    unsafe {
        libc::unshare(libc::CLONE_NEWNS) == 0
            && libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_SLAVE,
                std::ptr::null(),
            ) == 0
    }
}

fn private_mounts(masks: &[(CString, bool)], unix_masks: &[CString]) -> bool {
    const FLAGS: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let options = c"mode=000,size=4k";
    if !own_namespace() {
        return false;
    }
    // SAFETY: mount(2), open(2) and mkfifo(3) on the calling single-threaded process, with
    // valid NUL-terminated strings.
    unsafe {
        let tmpfs = c"tmpfs".as_ptr();
        if libc::mount(tmpfs, CONTROL_DIR.as_ptr(), tmpfs, FLAGS, options.as_ptr().cast()) != 0 {
            return true;
        }
        // The empty file bound over secret files lives in the masked directory itself.
        let empty = c"/run/governor/.empty";
        let fd = libc::open(empty.as_ptr(), libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC, 0o444);
        if fd >= 0 {
            libc::close(fd);
        }
        for (path, is_dir) in masks {
            if *is_dir {
                libc::mount(tmpfs, path.as_ptr(), tmpfs, FLAGS | libc::MS_RDONLY, options.as_ptr().cast());
            } else if fd >= 0
                && libc::mount(empty.as_ptr(), path.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) == 0
            {
                // A bind mount takes its flags only on a remount.
                libc::mount(
                    std::ptr::null(),
                    path.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | FLAGS,
                    std::ptr::null(),
                );
            }
        }
        if !unix_masks.is_empty() {
            // A FIFO, not a regular file: the write permission check of a connect meets the
            // mode (EACCES, a refusal the engine counts), where on a read-only mount a
            // regular file would answer EROFS first (inode_permission's sb_permission).
            let fifo = c"/run/governor/.masked";
            if libc::mkfifo(fifo.as_ptr(), 0) == 0 {
                for socket in unix_masks {
                    libc::mount(fifo.as_ptr(), socket.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null());
                }
            }
        }
        // Read-only from here: the mask files and the directory alike.
        libc::mount(
            std::ptr::null(),
            CONTROL_DIR.as_ptr(),
            std::ptr::null(),
            libc::MS_REMOUNT | libc::MS_RDONLY | FLAGS,
            options.as_ptr().cast(),
        );
    }
    true
}

/// The secrets that exist now, to mask in the agent's mount namespace: each secret's own
/// path (where symlinks lead), or the entries a glob matches; with whether it is a
/// directory. Nothing inside another mask (it is hidden already).
pub fn secret_masks(confinement: &Confinement) -> Vec<(CString, bool)> {
    use crate::sandbox::carve::{FsView as _, Kind};
    let fs = RealFs::default();
    let mut found: Vec<(PathBuf, bool)> = Vec::new();
    for carve in &confinement.secrets {
        let name = carve.path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        let candidates: Vec<PathBuf> = if name.contains(['*', '?', '[']) {
            let Some(parent) = carve.path.parent().and_then(|parent| fs.canonical(parent)) else { continue };
            let Ok(pattern) = CString::new(name) else { continue };
            fs.children(&parent)
                .into_iter()
                .filter(|(child, _)| {
                    CString::new(child.as_bytes()).is_ok_and(|child| {
                        // SAFETY: two NUL-terminated strings; fnmatch only reads them.
                        unsafe { libc::fnmatch(pattern.as_ptr(), child.as_ptr(), libc::FNM_PERIOD) == 0 }
                    })
                })
                .map(|(child, _)| parent.join(child))
                .collect()
        } else {
            fs.canonical(&carve.path).into_iter().collect()
        };
        for path in candidates {
            match fs.kind(&path) {
                Kind::Dir => found.push((path, true)),
                Kind::File => found.push((path, false)),
                Kind::Missing | Kind::Symlink => {}
            }
        }
    }
    found.sort();
    found.dedup();
    let mut masks: Vec<(PathBuf, bool)> = Vec::new();
    for (path, is_dir) in found {
        if masks.iter().any(|(mask, _)| path.starts_with(mask)) {
            continue;
        }
        masks.push((path, is_dir));
    }
    masks
        .into_iter()
        .filter_map(|(path, is_dir)| Some((CString::new(path.into_os_string().into_vec()).ok()?, is_dir)))
        .collect()
}

/// The kernel's `struct sigaction` (x86-64) for rt_sigaction(2).
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: u64,
    restorer: usize,
    mask: u64,
}

/// `struct clone_args` of clone3(2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `CLONE_INTO_CGROUP` (Linux 5.7), from <linux/sched.h>.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Forks a child that starts life in the agent's cgroup (clone3 with `CLONE_INTO_CGROUP`):
/// moving a running process by writing `cgroup.procs` takes the cgroup threadgroup lock for
/// writing, which waits for an RCU grace period and cost about 1.3 ms per launch here. Falls
/// back to fork (and the child joining by itself) on kernels without it; the second value
/// says whether the child is already in the cgroup.
///
/// A raw clone3 skips glibc's fork bookkeeping, so the child must not rely on glibc's cached
/// thread id: it only makes plain syscalls up to exec, as crun's child does after clone3.
pub fn fork_into(cgroup_dir: &File) -> Result<(ForkResult, bool), Error> {
    use std::os::fd::AsRawFd as _;
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup_dir.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 with a valid clone_args of the size passed; no stack, so the child
    // continues on a copy of this stack like fork(2). governor has one thread here.
    let ret = unsafe { libc::syscall(libc::SYS_clone3, &raw const args, size_of::<CloneArgs>()) };
    match ret {
        0 => Ok((ForkResult::Child, true)),
        pid if pid > 0 => Ok((ForkResult::Parent { child: Pid::from_raw(pid as i32) }, true)),
        _ => match Errno::last() {
            Errno::ENOSYS | Errno::E2BIG | Errno::EINVAL | Errno::EOPNOTSUPP | Errno::EPERM => {
                // SAFETY: governor has one thread here, so the child may run any code before exec.
                let forked = unsafe { fork() }.map_err(sys("fork"))?;
                Ok((forked, false))
            }
            errno => Err(Error::Sys { what: "clone3 into the agent's cgroup".into(), errno }),
        },
    }
}

/// The process's argv and environment, built before the fork.
pub struct Command {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    workspace: CString,
    /// Secrets to mask in the agent's mount namespace, and whether each is a directory.
    pub masks: Vec<(CString, bool)>,
    /// Pathname UNIX sockets masked in the agent's mount namespace.
    pub unix_masks: Vec<CString>,
    /// The notify backend: the fanotify group to mark the agent's mounts in, and the mount
    /// points to mark (the host's, read before the fork; the masks are added).
    pub marks: Option<(std::os::fd::RawFd, Vec<CString>)>,
    /// Written once the mounts are marked (close-on-exec): the parent then takes a hold
    /// of the agent's mount namespace.
    pub marked: Option<std::os::fd::RawFd>,
}

impl Command {
    pub fn new(prepared: &Prepared, tmpdir: &Path, landlock: &landlock::Plan) -> Result<Command, Error> {
        let cstring =
            |bytes: &[u8]| CString::new(bytes).map_err(|_| Error::Usage("an argument contains a NUL byte".into()));
        let argv = prepared.request.command.iter().map(|arg| cstring(arg.as_bytes())).collect::<Result<Vec<_>, _>>()?;
        let program = argv.first().cloned().ok_or_else(|| Error::Usage("no command given".into()))?;
        let identity = &prepared.identity;
        let mut overrides: Vec<(&str, OsString)> = vec![
            ("TMPDIR", tmpdir.as_os_str().to_owned()),
            ("GOVERNOR_AGENT_ID", prepared.agent_id.clone().into()),
            ("GOVERNOR_TRUST", prepared.ring.trust.as_str().into()),
        ];
        // Library search paths the ring cannot read would only make the loader collect a
        // refusal per directory on every exec (and trip the repeated-denials rule).
        if let Some(search) = std::env::var_os("LD_LIBRARY_PATH") {
            let kept = readable_search_path(&search, landlock);
            if kept != search && prepared.request.verbose {
                say!("governor: LD_LIBRARY_PATH: entries the ring cannot read were left out");
            }
            overrides.push(("LD_LIBRARY_PATH", kept));
        }
        // Programs along PATH the ring may not run would be refused one directory after
        // another (and a shell that hashes the first one it finds fails with 126 instead of
        // trying the next): the agent's PATH keeps the directories it may execute from.
        if let Some(search) = std::env::var_os("PATH") {
            let kept = executable_search_path(&search, landlock);
            if kept != search && prepared.request.verbose {
                say!("governor: PATH: directories the ring cannot execute from were left out");
            }
            overrides.push(("PATH", kept));
        }
        let below_admin = prepared.ring.trust != Trust::Admin;
        let cache = cache_dir(prepared, tmpdir);
        if below_admin {
            for (name, dir) in cache_env(&cache) {
                overrides.push((name, dir.into_os_string()));
            }
        }
        // A ring that cannot read the user's home (low) gets a home of its own in $CACHE:
        // git, pip and the rest refuse to run when their configuration is unreadable, and
        // treat a missing one as empty.
        // A home with secrets carved out of it keeps a listing rule at its root.
        let home_readable = readable(&identity.home, landlock)
            || landlock
                .paths
                .iter()
                .any(|rule| rule.path == identity.home && rule.access.contains(&crate::policy::Access::List));
        let home = if below_admin && !home_readable { cache.join("home") } else { identity.home.clone() };
        if identity.switch || home != identity.home {
            overrides.push(("HOME", home.into_os_string()));
        }
        if identity.switch {
            overrides.push(("USER", identity.name.clone().into()));
            overrides.push(("LOGNAME", identity.name.clone().into()));
        }
        // Handles to the operator's key agents: Landlock (before ABI 9) does not cover
        // pathname sockets, so below admin the agent is not told where they are.
        let withheld: &[&str] = if prepared.ring.trust == Trust::Admin {
            &[]
        } else {
            &["SSH_AUTH_SOCK", "SSH_AGENT_PID", "GPG_AGENT_INFO"]
        };
        // Secret-looking variables (GITHUB_TOKEN, AWS_SECRET_ACCESS_KEY): an agent would hand
        // them on with every request it makes. Said by name only, never by value.
        let secret_env = env_withheld(prepared);
        if prepared.request.verbose && !secret_env.is_empty() {
            let names: Vec<&str> = secret_env.iter().map(|withheld| withheld.name.as_str()).collect();
            say!(
                "governor: environment withheld (secret-looking names, see [env] of secrets.toml): {}",
                names.join(" ")
            );
        }
        let mut envp = Vec::new();
        for (key, value) in std::env::vars_os() {
            if overrides.iter().any(|(name, _)| OsStr::new(name) == key)
                || withheld.iter().any(|name| OsStr::new(name) == key)
                || secret_env.iter().any(|withheld| OsStr::new(&withheld.name) == key)
                || key.as_bytes().contains(&b'=')
            {
                continue;
            }
            let mut entry = key.as_bytes().to_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            envp.push(cstring(&entry)?);
        }
        for (key, value) in overrides {
            let mut entry = key.as_bytes().to_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            envp.push(cstring(&entry)?);
        }
        Ok(Command {
            program,
            argv,
            envp,
            workspace: cstring(prepared.workspace.as_os_str().as_bytes())?,
            masks: Vec::new(),
            unix_masks: Vec::new(),
            marks: None,
            marked: None,
        })
    }
}

/// The entries of a `:`-separated search path that the Landlock plan lets the agent read
/// (all of them when there is no Landlock domain).
fn readable_search_path(search: &OsStr, plan: &landlock::Plan) -> OsString {
    if !plan.enforce {
        return search.to_owned();
    }
    let readable = |dir: &Path| {
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        plan.paths.iter().any(|rule| dir.starts_with(&rule.path) && rule.access.contains(&crate::policy::Access::Read))
    };
    let kept: Vec<&[u8]> = search
        .as_bytes()
        .split(|byte| *byte == b':')
        .filter(|entry| !entry.is_empty() && readable(Path::new(OsStr::from_bytes(entry))))
        .collect();
    OsString::from_vec(kept.join(&b':'))
}

/// The entries of PATH the Landlock plan lets the agent execute from (all of them when there
/// is no Landlock domain); relative and empty entries (the current directory) are left out.
fn executable_search_path(search: &OsStr, plan: &landlock::Plan) -> OsString {
    if !plan.enforce {
        return search.to_owned();
    }
    let kept: Vec<&[u8]> = search
        .as_bytes()
        .split(|byte| *byte == b':')
        .filter(|entry| entry.starts_with(b"/"))
        .filter(|entry| granted(Path::new(OsStr::from_bytes(entry)), plan, crate::policy::Access::Exec))
        .collect();
    OsString::from_vec(kept.join(&b':'))
}

/// What went wrong in the child before or at `exec`, sent to the parent through a pipe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildFailure {
    Cgroup(i32),
    Privileges(privileges::Step, i32),
    NoNewPrivs(i32),
    Landlock(i32),
    Seccomp(i32),
    Chdir(i32),
    Exec(i32),
    /// The notify backend could not mark the agent's mounts (or it has no mount namespace
    /// of its own, where marks would see other processes' opens).
    Marks(i32),
}

impl ChildFailure {
    pub fn encode(self) -> [u8; 6] {
        let (stage, detail, errno) = match self {
            ChildFailure::Cgroup(errno) => (1, 0, errno),
            ChildFailure::Privileges(step, errno) => (2, step as u8, errno),
            ChildFailure::NoNewPrivs(errno) => (3, 0, errno),
            ChildFailure::Landlock(errno) => (4, 0, errno),
            ChildFailure::Seccomp(errno) => (5, 0, errno),
            ChildFailure::Chdir(errno) => (6, 0, errno),
            ChildFailure::Exec(errno) => (7, 0, errno),
            ChildFailure::Marks(errno) => (8, 0, errno),
        };
        let errno = errno.to_le_bytes();
        [stage, detail, errno[0], errno[1], errno[2], errno[3]]
    }

    pub fn decode(bytes: &[u8]) -> Option<ChildFailure> {
        let [stage, detail, a, b, c, d] = *bytes else {
            return None;
        };
        let errno = i32::from_le_bytes([a, b, c, d]);
        let step = [
            privileges::Step::Bounding,
            privileges::Step::Securebits,
            privileges::Step::Groups,
            privileges::Step::Gid,
            privileges::Step::Uid,
            privileges::Step::Capabilities,
        ]
        .into_iter()
        .find(|step| *step as u8 == detail)?;
        Some(match stage {
            1 => ChildFailure::Cgroup(errno),
            2 => ChildFailure::Privileges(step, errno),
            3 => ChildFailure::NoNewPrivs(errno),
            4 => ChildFailure::Landlock(errno),
            5 => ChildFailure::Seccomp(errno),
            6 => ChildFailure::Chdir(errno),
            7 => ChildFailure::Exec(errno),
            8 => ChildFailure::Marks(errno),
            _ => return None,
        })
    }

    pub fn exit_code(self) -> i32 {
        match self {
            ChildFailure::Exec(errno) if errno == libc::ENOENT => exit::NOT_FOUND,
            ChildFailure::Exec(_) => exit::CANNOT_EXECUTE,
            _ => exit::FAILURE,
        }
    }

    pub fn describe(self, command: &OsStr) -> String {
        let errno = |errno: i32| Errno::from_raw(errno).desc();
        let command = command.to_string_lossy();
        match self {
            ChildFailure::Exec(code) if code == libc::ENOENT => format!("{command}: command not found"),
            ChildFailure::Exec(code) if code == libc::EACCES || code == libc::EPERM => {
                format!("{command}: cannot execute: {} (the ring may forbid it)", errno(code))
            }
            ChildFailure::Exec(code) => format!("{command}: cannot execute: {}", errno(code)),
            ChildFailure::Cgroup(code) => {
                format!("joining the agent's cgroup failed: {}; the agent did not run", errno(code))
            }
            ChildFailure::Privileges(step, code) => {
                format!("{} failed: {}; the agent did not run", step.describe(), errno(code))
            }
            ChildFailure::NoNewPrivs(code) => {
                format!("setting no_new_privs failed: {}; the agent did not run", errno(code))
            }
            ChildFailure::Landlock(code) => {
                format!("entering the Landlock domain failed: {}; the agent did not run", errno(code))
            }
            ChildFailure::Seccomp(code) => {
                format!("installing the seccomp filter failed: {}; the agent did not run", errno(code))
            }
            ChildFailure::Chdir(code) => {
                format!("entering the workspace failed: {}; the agent did not run", errno(code))
            }
            ChildFailure::Marks(code) => format!(
                "marking the agent's mounts for fanotify (--probes notify) failed: {}; the agent did not run",
                errno(code)
            ),
        }
    }
}

/// The child, between fork and exec. Returns only on failure.
pub fn child_main(
    prepared: &Prepared,
    confinement: &Confinement,
    ruleset: Option<::landlock::RulesetCreated>,
    filters: &[seccompiler::BpfProgram],
    command: &Command,
    join: Option<&mut File>,
    old_mask: &SigSet,
) -> ChildFailure {
    // Signals: every disposition back to default, the mask back to what governor was started
    // with. An ignored signal stays ignored across exec: the Rust runtime ignores SIGPIPE
    // (`yes | head -1` would then complain of a broken pipe instead of ending quietly), and
    // a shell starting governor in the background ignores SIGINT.
    // The raw system call: glibc refuses signals 32 and 33, which it keeps for itself.
    let default = KernelSigaction { handler: libc::SIG_DFL, flags: 0, restorer: 0, mask: 0 };
    for signal in 1..=64 {
        // SAFETY: rt_sigaction(2) with a valid kernel sigaction; SIGKILL and SIGSTOP refuse
        // with EINVAL, which changes nothing.
        unsafe {
            libc::syscall(libc::SYS_rt_sigaction, signal, &raw const default, std::ptr::null_mut::<u8>(), 8usize)
        };
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(old_mask), None);

    // Descriptors governor was started with stay out of the agent: an open file is beyond
    // Landlock's reach. Marked close-on-exec (not closed) so the report pipe works until exec.
    // SAFETY: close_range(2) on descriptors >= 3 of the calling process.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    if let Some(procs) = join
        && let Err(error) = cgroup::join(procs)
    {
        return ChildFailure::Cgroup(error.raw_os_error().unwrap_or(libc::EIO));
    }
    // A System V IPC namespace of its own (shared memory, semaphores, message queues): those
    // are keyed by numbers, not paths, and Landlock does not see them. Needs CAP_SYS_ADMIN,
    // which is still held here; without it (governor not root) the host's stay visible.
    // Whether the agent has a mount namespace of its own, or the errno saying why not.
    let namespace = if confinement.drop_capabilities {
        // SAFETY: unshare(2) on the calling single-threaded process.
        let _ = unsafe { libc::unshare(libc::CLONE_NEWIPC) };
        if private_mounts(&command.masks, &command.unix_masks) { Ok(()) } else { Err(libc::EPERM) }
    } else if command.marks.is_some() {
        // An admin agent keeps its capabilities and the host's mounts; a namespace of its
        // own, mounts propagating in, is what its marks need.
        if own_namespace() { Ok(()) } else { Err(Errno::last_raw()) }
    } else {
        Ok(())
    };
    if let Some((group, points)) = &command.marks {
        // Marks on a namespace shared with the host would see other processes' opens.
        if let Err(errno) = namespace.and_then(|()| crate::probes::fanotify::mark_mounts(*group, points)) {
            return ChildFailure::Marks(errno);
        }
        if let Some(fd) = command.marked {
            // SAFETY: write(2) of one byte from a static buffer.
            unsafe { libc::write(fd, b"m".as_ptr().cast(), 1) };
        }
    }
    if let Err((step, errno)) = privileges::drop_in_child(&prepared.identity, confinement.drop_capabilities) {
        return ChildFailure::Privileges(step, errno);
    }
    // SAFETY: prctl with integer arguments on the calling thread.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return ChildFailure::NoNewPrivs(Errno::last_raw());
    }
    // The workspace is entered before Landlock, while the path is still reachable.
    // SAFETY: chdir with a NUL-terminated path.
    if unsafe { libc::chdir(command.workspace.as_ptr()) } != 0 {
        return ChildFailure::Chdir(Errno::last_raw());
    }
    if let Some(ruleset) = ruleset
        && let Err(error) = ruleset.restrict_self()
    {
        let errno = std::error::Error::source(&error)
            .and_then(|source| source.downcast_ref::<std::io::Error>())
            .and_then(std::io::Error::raw_os_error)
            .unwrap_or(libc::EPERM);
        return ChildFailure::Landlock(errno);
    }
    if let Err(error) = seccomp::install(filters) {
        let errno = match error {
            seccomp::Error::Build(seccompiler::Error::Prctl(io)) => io.raw_os_error().unwrap_or(libc::EPERM),
            _ => libc::EINVAL,
        };
        return ChildFailure::Seccomp(errno);
    }
    // execvpe searches PATH like a shell: ENOENT when no candidate exists, EACCES when one
    // exists but may not be executed (Landlock denies exec with EACCES).
    let errno = match nix::unistd::execvpe(&command.program, &command.argv, &command.envp) {
        Err(errno) => errno as i32,
        Ok(never) => match never {},
    };
    ChildFailure::Exec(errno)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_failures_round_trip_through_the_pipe() {
        for failure in [
            ChildFailure::Exec(libc::ENOENT),
            ChildFailure::Privileges(privileges::Step::Uid, libc::EPERM),
            ChildFailure::Landlock(libc::E2BIG),
        ] {
            assert_eq!(ChildFailure::decode(&failure.encode()), Some(failure));
        }
        assert_eq!(ChildFailure::decode(&[]), None);
    }

    #[test]
    fn exec_errors_map_to_shell_exit_codes() {
        assert_eq!(ChildFailure::Exec(libc::ENOENT).exit_code(), 127);
        assert_eq!(ChildFailure::Exec(libc::EACCES).exit_code(), 126);
        assert_eq!(ChildFailure::Seccomp(libc::EINVAL).exit_code(), 125);
    }

    #[test]
    fn library_search_paths_keep_what_the_ring_can_read() {
        let rule = |path: &str, access: Vec<crate::policy::Access>| landlock::PathRule {
            path: path.into(),
            is_dir: true,
            access,
            origin: String::new(),
        };
        let plan = landlock::Plan {
            enforce: true,
            paths: vec![
                rule("/usr", vec![crate::policy::Access::Read]),
                rule("/srv/w", vec![crate::policy::Access::Exec]),
            ],
            ..landlock::Plan::default()
        };
        let kept = readable_search_path(OsStr::new("/root/.rustup/lib:/usr/lib::/srv/w/lib"), &plan);
        assert_eq!(kept, OsString::from("/usr/lib"));
        let open = landlock::Plan::default();
        assert_eq!(readable_search_path(OsStr::new("/root/lib"), &open), OsString::from("/root/lib"));
    }

    #[test]
    fn path_keeps_the_directories_the_ring_may_execute_from() {
        use crate::policy::Access;
        let rule = |path: &str, access: Vec<Access>| landlock::PathRule {
            path: path.into(),
            is_dir: true,
            access,
            origin: String::new(),
        };
        let plan = landlock::Plan {
            enforce: true,
            paths: vec![
                rule("/usr", vec![Access::Read, Access::Exec]),
                rule("/nonexistent/home", vec![Access::List]),
                rule("/nonexistent/home/.cargo/bin", vec![Access::Read, Access::Exec]),
                rule("/nonexistent/home/notes", vec![Access::Read]),
            ],
            ..landlock::Plan::default()
        };
        // A shim directory the ring cannot execute from, an empty and a relative entry go;
        // the toolchain directory granted exec stays, in order.
        let path = "/nonexistent/other/.pyenv/shims:/nonexistent/home/.cargo/bin::bin:/nonexistent/home/notes:/usr/bin";
        let kept = executable_search_path(OsStr::new(path), &plan);
        assert_eq!(kept, OsString::from("/nonexistent/home/.cargo/bin:/usr/bin"));
        let open = landlock::Plan::default();
        assert_eq!(executable_search_path(OsStr::new("/root/bin"), &open), OsString::from("/root/bin"));
    }
}
