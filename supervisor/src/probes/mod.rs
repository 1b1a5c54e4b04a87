//! The eBPF probes: the object built from `ebpf/` (embedded), the choice of backend, loading
//! and attaching, registering agents, and reading the events and drop counters.
//!
//! Backends: BPF LSM's deny hooks where the kernel has it (`bpf` in the active LSM list and
//! the programs load); the events from fentry/fexit on the syscall functions where the kernel
//! runs BPF trampolines, else from the raw syscall tracepoints. Every backend gets the cgroup
//! `sock_addr` hooks, attached to each agent's cgroup, which narrow UDP.

mod btf;
pub mod destinations;
pub mod events;
pub mod fanotify;
pub mod landlock_audit;

use std::{
    collections::HashMap as Table,
    fs::File,
    net::IpAddr,
    path::{Path, PathBuf},
};

use std::os::unix::fs::MetadataExt as _;

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, LpmTrie, MapData, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, FEntry, FExit, Lsm, ProgramError,
        RawTracePoint, links::FdLink,
    },
};
use governor_common::{AgentSlot, InodeKey, NET_KEY_FIXED_BITS, NetKey, NetPolicy, PortKey, StopKey, counter};

/// The object file, aligned for aya's ELF parser.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/governor"));

/// `--probes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Choice {
    /// BPF LSM where the kernel has it, events from the raw syscall tracepoints.
    Auto,
    /// BPF LSM required (events as with auto).
    Lsm,
    /// Events from fentry/fexit on the syscall functions required, BPF LSM where the kernel
    /// has it. Not the default yet: its cost to other processes was measured only under
    /// software emulation, where it did not come out lower (BENCHMARKS.md).
    Fentry,
    /// Events from the raw syscall tracepoints, no BPF LSM.
    Tracepoint,
    /// No syscall tracepoint: execs from `sched_process_exec`, Landlock's refusals from its
    /// audit records (Landlock ABI 7), the cgroup socket hooks. Standalone runs only.
    Notify,
    /// No probes: no kernel events, and no UDP narrowing.
    Off,
}

impl Choice {
    /// Whether a backend loaded elsewhere (a daemon's) is what this choice asks for.
    pub fn accepts(self, backend: Backend) -> bool {
        match self {
            Choice::Auto => true,
            Choice::Lsm => backend.lsm(),
            Choice::Fentry => backend.fentry(),
            Choice::Tracepoint => backend == Backend::Tracepoint,
            Choice::Notify => backend == Backend::Notify,
            Choice::Off => false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// BPF LSM's deny hooks; events from the raw syscall tracepoints.
    Lsm,
    /// BPF LSM's deny hooks; events from fentry/fexit on the syscall functions.
    #[serde(rename = "lsm+fentry")]
    LsmFentry,
    /// Events from fentry/fexit on the syscall functions.
    Fentry,
    /// Events from the raw syscall tracepoints.
    Tracepoint,
    Notify,
}

impl Backend {
    /// Whether BPF LSM's hooks refuse secrets and programs by inode.
    pub fn lsm(self) -> bool {
        matches!(self, Backend::Lsm | Backend::LsmFentry)
    }

    /// Whether the events come from fentry/fexit, which cost only the tasks that call a
    /// hooked function, not every syscall of the machine.
    pub fn fentry(self) -> bool {
        matches!(self, Backend::LsmFentry | Backend::Fentry)
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Lsm => "lsm",
            Backend::LsmFentry => "lsm+fentry",
            Backend::Fentry => "fentry",
            Backend::Tracepoint => "tracepoint",
            Backend::Notify => "notify",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--probes lsm: {0}")]
    NoLsm(String),
    #[error("--probes notify: {0}")]
    NoNotify(String),
    #[error("--probes notify: {0}")]
    Audit(#[from] landlock_audit::Error),
    #[error("--probes fentry: {0}")]
    NoFentry(String),
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("eBPF program {name}: {}", one_line(.source))]
    Program { name: &'static str, source: aya::programs::ProgramError },
    #[error("eBPF map {name}: {source}")]
    Map { name: &'static str, source: aya::maps::MapError },
    #[error("eBPF object has no {0}")]
    Missing(&'static str),
    #[error(transparent)]
    Btf(#[from] btf::Error),
    #[error("reading the kernel's BTF for the LSM programs: {0}")]
    AyaBtf(String),
    #[error("pinning {path}: {reason}")]
    Pin { path: PathBuf, reason: String },
}

/// The raw tracepoint programs, named after their tracepoints. With fentry only the last.
const RAW_TRACEPOINTS: [&str; 3] = ["sys_enter", "sys_exit", "sched_process_exec"];

/// Of those, the ones on the syscall path. Registering a syscall tracepoint puts every task
/// of the machine on the kernel's slow syscall path (`SYSCALL_WORK_SYSCALL_TRACEPOINT`,
/// kernel/tracepoint.c `syscall_regfunc`), whatever the program then filters: they are
/// attached only while at least one agent is watched, so an idle daemon costs the host
/// nothing.
const SYSCALL_TRACEPOINTS: [&str; 2] = ["sys_enter", "sys_exit"];
/// fentry programs and the kernel functions they attach to. Loaded first: neither walks the
/// working directory, so a refusal of these is the kernel's (no BPF trampolines), not the
/// walk's.
const FENTRY: [(&str, &str); 2] = [("enter_execve", "__x64_sys_execve"), ("enter_execveat", "__x64_sys_execveat")];

/// fexit programs and the kernel functions they attach to: every syscall the raw
/// tracepoints report (`__x64_sys_NAME`, the same `const struct pt_regs *` on every x86-64
/// kernel), and `__secure_computing` for those that seccomp refuses before they run.
const FEXIT: [(&str, &str); 29] = [
    ("exit_open", "__x64_sys_open"),
    ("exit_creat", "__x64_sys_creat"),
    ("exit_openat", "__x64_sys_openat"),
    ("exit_openat2", "__x64_sys_openat2"),
    ("exit_connect", "__x64_sys_connect"),
    ("exit_execve", "__x64_sys_execve"),
    ("exit_execveat", "__x64_sys_execveat"),
    ("exit_truncate", "__x64_sys_truncate"),
    ("exit_rename", "__x64_sys_rename"),
    ("exit_renameat", "__x64_sys_renameat"),
    ("exit_renameat2", "__x64_sys_renameat2"),
    ("exit_mkdir", "__x64_sys_mkdir"),
    ("exit_mkdirat", "__x64_sys_mkdirat"),
    ("exit_rmdir", "__x64_sys_rmdir"),
    ("exit_link", "__x64_sys_link"),
    ("exit_linkat", "__x64_sys_linkat"),
    ("exit_unlink", "__x64_sys_unlink"),
    ("exit_unlinkat", "__x64_sys_unlinkat"),
    ("exit_symlink", "__x64_sys_symlink"),
    ("exit_symlinkat", "__x64_sys_symlinkat"),
    ("exit_chmod", "__x64_sys_chmod"),
    ("exit_fchmodat", "__x64_sys_fchmodat"),
    ("exit_fchmodat2", "__x64_sys_fchmodat2"),
    ("exit_chown", "__x64_sys_chown"),
    ("exit_lchown", "__x64_sys_lchown"),
    ("exit_fchownat", "__x64_sys_fchownat"),
    ("exit_mknod", "__x64_sys_mknod"),
    ("exit_mknodat", "__x64_sys_mknodat"),
    ("secure_computing", "__secure_computing"),
];

/// Whether program `name` walks the working directory (a refusal of it may be the walk's).
fn walks_cwd(name: &str) -> bool {
    name == "sys_exit" || name == "secure_computing" || name.starts_with("exit_")
}

/// Whether a part of the probes is loaded: not at all, where it loads, or as required.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    No,
    Try,
    Must,
}

/// The BPF LSM programs, named after their hooks.
const LSM_HOOKS: [&str; 6] =
    ["bprm_check_security", "file_open", "socket_connect", "socket_listen", "unix_stream_connect", "unix_may_send"];

/// The cgroup socket hooks, attached per agent.
const SOCK_ADDR: [&str; 4] = ["connect4", "connect6", "sendmsg4", "sendmsg6"];

/// The cgroup `skb` ingress hook, attached per agent: what arrives for a listener on a port
/// the agent may not bind is dropped.
const SKB_INGRESS: &str = "listener_ingress";

/// Where a daemon pins the links that enforce (bpffs): a link pinned there stays attached
/// when the daemon dies, so an agent's UDP narrowing, denied destinations and (BPF LSM)
/// inode denies never lapse while it runs. `agents/<agent id>/` holds an agent's socket
/// hooks, `lsm/` the LSM hooks; each file is named `<pid>-<program>` after the daemon that
/// pinned it, so a new daemon attaches its own before it removes a predecessor's.
pub const PIN_DIR: &str = "/sys/fs/bpf/governor";

/// Loaded and attached probes.
pub struct Probes {
    ebpf: Ebpf,
    pub backend: Backend,
    /// Why BPF LSM was not used, when `auto` fell back to tracepoints.
    pub fallback: Option<String>,
    /// Why the events do not come from fentry/fexit, when they were tried and did not load.
    pub no_fentry: Option<String>,
    /// Why the kernel's working-directory walk is off, when it is.
    pub cwd_walk: Option<String>,
    /// The attachments, owned here so that their release can be handed off (see `Drop`).
    links: Vec<Box<dyn Send>>,
    /// The syscall tracepoints' links, while an agent is watched (`SYSCALL_TRACEPOINTS`).
    syscalls: Vec<Box<dyn Send>>,
    /// Per watched cgroup: its socket-hook links and the map entries put there for it, so
    /// that a daemon can stop watching an agent and replace its deny rules on reload.
    watched: Table<u64, Watched>,
    /// The daemon's: where enforcing links are pinned (`PIN_DIR`).
    pins: Option<PathBuf>,
    /// The notify backend's reader of Landlock's audit records.
    pub audit: Option<landlock_audit::AuditLog>,
    /// The notify backend's opens: each watched agent's fanotify group.
    pub opens: Vec<fanotify::Opens>,
    /// Events read in userspace (fanotify, Landlock's audit records): produced, though not
    /// by the programs' counters.
    pub read_in_userspace: u64,
}

/// The programs whose exec stops an agent's process before its first instruction
/// (`verdict::STOPPED`), by name.
pub struct Stops {
    map: HashMap<MapData, StopKey, u8>,
}

impl Stops {
    /// Execs by agent `cgroup_id` of the programs named `names` stop from now on, and those
    /// of no other name (the first 15 bytes of a name count, as in the kernel's `comm`). The
    /// new names go in before the old ones go, so a name held before and after is held
    /// throughout, while the agent runs.
    pub fn hold(&mut self, cgroup_id: u64, names: &[String]) -> Result<(), Error> {
        let keys: Vec<StopKey> = names.iter().map(|name| StopKey { cgroup_id, comm: comm_of(name) }).collect();
        for key in &keys {
            self.map.insert(key, 1, 0).map_err(|source| Error::Map { name: "STOP_EXEC", source })?;
        }
        for key in agent_stops(&self.map, cgroup_id) {
            if !keys.contains(&key) {
                let _ = self.map.remove(&key);
            }
        }
        Ok(())
    }
}

/// `name` as the kernel's `comm` holds it: its first 15 bytes, NUL-padded.
fn comm_of(name: &str) -> [u8; 16] {
    let mut comm = [0u8; 16];
    for (to, from) in comm.iter_mut().zip(name.bytes().take(15)) {
        *to = from;
    }
    comm
}

/// The `STOP_EXEC` keys of agent `cgroup_id`.
fn agent_stops<T: std::borrow::Borrow<MapData>>(map: &HashMap<T, StopKey, u8>, cgroup_id: u64) -> Vec<StopKey> {
    map.keys().flatten().filter(|key| key.cgroup_id == cgroup_id).collect()
}

/// Events read in userspace, and losses: in all (`lost`), and those known to be one
/// agent's (`lost_in`: cgroup id, count).
#[derive(Default)]
pub struct Userspace {
    pub events: Vec<events::Event>,
    pub lost: u64,
    pub lost_in: Vec<(u64, u64)>,
}

/// What `watch` and `deny` put into the kernel for one agent.
#[derive(Default)]
struct Watched {
    links: Vec<Box<dyn Send>>,
    /// Its pinned links' directory (a daemon's agents), removed when it is unwatched.
    pin_dir: Option<PathBuf>,
    /// From the ring (`watch`).
    plan: Entries,
    /// From the policy's deny rules (`deny`), replaced as a whole.
    denies: Entries,
}

#[derive(Default, Clone)]
struct Entries {
    net: Vec<(&'static str, NetKey, u32)>,
    inodes: Vec<(&'static str, InodeKey)>,
    ports: Vec<PortKey>,
}

/// The part of an agent's confinement the probes enforce, as data: what a `governor run`
/// hands to the daemon, and what the daemon keeps to watch the agent again after a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProbePlan {
    /// UDP destinations allowed, when UDP is narrowed.
    pub udp: Option<Vec<NetRule>>,
    /// Destinations no connect or datagram may reach.
    pub net_deny: Vec<NetRule>,
    /// Secrets, refused by inode (BPF LSM; empty for the tracepoint backend, which has no
    /// use for them).
    pub deny_open: Vec<PathBuf>,
    /// Programs refused by inode (BPF LSM).
    pub deny_exec: Vec<PathBuf>,
    /// TCP binds are limited to the ports Landlock allows: a listen on an unbound inet
    /// socket is refused too (BPF LSM), and on every backend the connections to a listener
    /// on any other port are dropped (cgroup `skb` hook).
    #[serde(default)]
    pub bind_restricted: bool,
    /// Those ports, when binds are restricted.
    #[serde(default)]
    pub bind_ports: Vec<u16>,
    /// When pathname UNIX sockets are restricted (below admin): those the agent may reach
    /// besides its own, the sockets bound at launch that are not masked (BPF LSM refuses
    /// the others by inode, those bound later included).
    #[serde(default)]
    pub unix: Option<Vec<PathBuf>>,
}

/// What of the `deny` rules the kernel can enforce for one agent, before the syscall
/// returns: files to refuse opening and programs to refuse running (by inode, BPF LSM), and
/// destinations to refuse (cgroup socket hooks). The engine still decides every event; this
/// only moves the refusal into the kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelDenies {
    pub open: Vec<PathBuf>,
    pub exec: Vec<PathBuf>,
    pub net: Vec<NetRule>,
    /// Rules (or patterns) left to the engine alone, and why.
    pub userspace_only: Vec<String>,
}

impl Drop for Probes {
    /// Detaching the perf-event tracepoints the probes first used waited for an RCU grace
    /// period under a kernel-wide mutex (40 to 70 ms each, one after the other). The raw
    /// tracepoints, LSM and cgroup links used now were not measured one by one, so the release
    /// stays off governor's exit path: a child that keeps only the attachments releases them
    /// after governor has gone; governor's own copies then close at once.
    fn drop(&mut self) {
        let mut links = std::mem::take(&mut self.links);
        links.append(&mut self.syscalls);
        links.extend(self.watched.drain().flat_map(|(_, watched)| watched.links));
        if links.is_empty() {
            return;
        }
        // SAFETY: governor runs one thread here (the event loop has ended); the child only
        // closes descriptors and exits.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                // Only the links stay open: a caller waiting for EOF on governor's stdout
                // must not wait for this child. Exiting closes the links.
                for (fd, target) in open_fds() {
                    if target != "anon_inode:bpf_link" {
                        // SAFETY: closing descriptors of this (forked) process.
                        unsafe { libc::close(fd) };
                    }
                }
                // SAFETY: leave without running destructors that belong to the parent.
                unsafe { libc::_exit(0) }
            }
            Ok(nix::unistd::ForkResult::Parent { .. }) | Err(_) => drop(links),
        }
    }
}

/// The descriptors this process has open, with what they point to.
pub fn open_fds() -> Vec<(i32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let entry = entry.ok()?;
        let fd = entry.file_name().to_str()?.parse().ok()?;
        let target = std::fs::read_link(entry.path()).ok()?.to_string_lossy().into_owned();
        Some((fd, target))
    })
    .collect()
}

/// The program `name` of `ebpf`, as its type.
fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, Error>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name).ok_or(Error::Missing(name))?.try_into().map_err(|source| Error::Program { name, source })
}

/// Attaches the (loaded) raw tracepoint program `name` to the tracepoint of that name.
fn attach_raw(ebpf: &mut Ebpf, name: &'static str) -> Result<Box<dyn Send>, Error> {
    let program: &mut RawTracePoint = program(ebpf, name)?;
    let id = program.attach(name).map_err(|source| Error::Program { name, source })?;
    let link = program.take_link(id).map_err(|source| Error::Program { name, source })?;
    Ok(Box::new(link))
}

/// Loads (verifies) the BPF LSM programs.
fn load_lsm(ebpf: &mut Ebpf, btf: &aya::Btf) -> Result<(), Error> {
    for name in LSM_HOOKS {
        let program: &mut Lsm = program(ebpf, name)?;
        program.load(name, btf).map_err(|source| Error::Program { name, source })?;
    }
    Ok(())
}

/// Loads (verifies) the fentry and fexit programs; returns those loaded. A function the
/// kernel does not have (`fchmodat2` before Linux 6.6) is a syscall no one can make there:
/// its program is left out.
fn load_fentry(ebpf: &mut Ebpf, btf: &aya::Btf) -> Result<Vec<&'static str>, Error> {
    let absent = |error: &ProgramError| matches!(error, ProgramError::Btf(aya::BtfError::UnknownBtfTypeName { .. }));
    let mut loaded = Vec::new();
    for (name, function) in FENTRY {
        let program: &mut FEntry = program(ebpf, name)?;
        match program.load(function, btf) {
            Ok(()) => loaded.push(name),
            Err(error) if absent(&error) => {}
            Err(source) => return Err(Error::Program { name, source }),
        }
    }
    for (name, function) in FEXIT {
        let program: &mut FExit = program(ebpf, name)?;
        match program.load(function, btf) {
            Ok(()) => loaded.push(name),
            Err(error) if absent(&error) => {}
            Err(source) => return Err(Error::Program { name, source }),
        }
    }
    Ok(loaded)
}

/// Totals of the per-CPU counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub produced: u64,
    pub dropped: u64,
    pub errors: u64,
}

/// A network (address and prefix) and port, 0 for any port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetRule {
    pub addr: IpAddr,
    pub prefix: u8,
    pub port: u16,
}

/// Whether the kernel runs BPF LSM programs: `bpf` must be in the active LSM list
/// (`/sys/kernel/security/lsm`; securityfs is mounted when it is not yet).
pub fn bpf_lsm_active() -> Option<bool> {
    mount_securityfs();
    std::fs::read_to_string("/sys/kernel/security/lsm").ok().map(|lsms| lsms.trim().split(',').any(|lsm| lsm == "bpf"))
}

/// Runs `job` on a thread of its own, after the jobs given before it: cleanups that wait on
/// the kernel (the last close of a fanotify group: a grace period of milliseconds) and that
/// the daemon's loop must not wait for. The thread starts on first
/// use; if it cannot, the job runs here.
pub fn later(job: impl FnOnce() + Send + 'static) {
    type Job = Box<dyn FnOnce() + Send>;
    static QUEUE: std::sync::Mutex<Option<std::sync::mpsc::Sender<Job>>> = std::sync::Mutex::new(None);
    let Ok(mut queue) = QUEUE.lock() else { return job() };
    let mut job: Job = Box::new(job);
    if let Some(sender) = queue.as_ref() {
        match sender.send(job) {
            Ok(()) => return,
            Err(std::sync::mpsc::SendError(back)) => job = back,
        }
    }
    let (sender, receiver) = std::sync::mpsc::channel::<Job>();
    let started = std::thread::Builder::new().name("governor-later".into()).spawn(move || {
        for job in receiver {
            job();
        }
    });
    match started {
        Ok(_) => match sender.send(job) {
            Ok(()) => *queue = Some(sender),
            Err(std::sync::mpsc::SendError(job)) => job(),
        },
        Err(_) => job(),
    }
}

impl Probes {
    /// Loads the probes for `choice`; `None` for `--probes off`. `auto` tries BPF LSM where
    /// the kernel lists it and falls back to tracepoints, saying why in `fallback`.
    pub fn load(choice: Choice) -> Result<Option<Probes>, Error> {
        Probes::load_with(choice, None, None)
    }

    /// Like `load`, and the enforcing links (the LSM hooks now, each agent's socket hooks as
    /// it is watched) are pinned under `dir` (bpffs; mounted when it is not): a daemon's.
    /// The ring buffer holds `ring_bytes` (a power of two; the daemon's is larger than a
    /// standalone run's 16 MiB: it takes the bursts of every agent at once).
    ///
    /// A daemon's `auto` takes the notify backend where BPF LSM does not run and Landlock's
    /// audit records are there (ABI 7): a service that attached the syscall tracepoints
    /// would put every process of the host on the slow syscall path while an agent runs.
    pub fn load_pinned(choice: Choice, dir: &Path, ring_bytes: u32) -> Result<Option<Probes>, Error> {
        mount_bpffs(dir)?;
        make_dir(&dir.join("lsm"))?;
        make_dir(&dir.join("agents"))?;
        let probes = Probes::load_with(choice, Some(dir), Some(ring_bytes))?;
        match probes {
            Some(probes)
                if choice == Choice::Auto
                    && probes.backend == Backend::Tracepoint
                    && crate::sandbox::landlock::kernel_abi() >= 7 =>
            {
                probes.into_notify().map(Some)
            }
            other => Ok(other),
        }
    }

    /// The tracepoint backend's programs as the notify backend: the same programs, whose
    /// syscall tracepoints are never attached, and the reader of Landlock's audit records.
    fn into_notify(mut self) -> Result<Probes, Error> {
        self.backend = Backend::Notify;
        self.audit = Some(landlock_audit::AuditLog::open()?);
        Ok(self)
    }

    fn load_with(choice: Choice, pins: Option<&Path>, ring: Option<u32>) -> Result<Option<Probes>, Error> {
        if choice == Choice::Notify {
            let abi = crate::sandbox::landlock::kernel_abi();
            if abi < 7 {
                return Err(Error::NoNotify(format!(
                    "Landlock's audit records need Landlock ABI 7 (Linux 6.15); this kernel has ABI {abi}"
                )));
            }
            return Probes::load_backend(Want::No, Want::No, pins, ring)?.into_notify().map(Some);
        }
        let (lsm, fentry) = match choice {
            Choice::Off => return Ok(None),
            Choice::Auto => (Want::Try, Want::No),
            Choice::Lsm => (Want::Must, Want::No),
            Choice::Fentry => (Want::Try, Want::Must),
            Choice::Tracepoint | Choice::Notify => (Want::No, Want::No),
        };
        // BPF LSM programs are tried only where the kernel lists BPF among its LSMs.
        let not_listed = match bpf_lsm_active() {
            _ if lsm == Want::No => None,
            Some(true) => None,
            Some(false) => Some("'bpf' is not in this kernel's active LSM list (/sys/kernel/security/lsm)"),
            None => Some("cannot read /sys/kernel/security/lsm (securityfs)"),
        };
        if let Some(reason) = not_listed {
            if lsm == Want::Must {
                return Err(Error::NoLsm(format!("{reason}; boot with lsm=...,bpf")));
            }
            let mut probes = Probes::load_backend(Want::No, fentry, pins, ring)?;
            probes.fallback = Some(reason.to_owned());
            return Ok(Some(probes));
        }
        let probes = Probes::load_backend(lsm, fentry, pins, ring);
        match probes {
            Err(error) if lsm == Want::Must && !matches!(error, Error::NoLsm(_) | Error::NoFentry(_)) => {
                Err(Error::NoLsm(error.to_string()))
            }
            other => other.map(Some),
        }
    }

    /// Both kinds of events need `sched_process_exec`, and BPF LSM adds the hooks that deny
    /// by inode and address in the kernel. The syscalls are reported from their exit (only
    /// there is what Landlock, which runs before BPF in the LSM order, refused known): by
    /// fexit programs on the syscall functions where they load, else by the raw syscall
    /// tracepoints. Loads with the working-directory walk of those programs (relative
    /// paths resolved from the kernel's dentries: 6.1's, 6.12's and 6.18's verifiers take
    /// it); a verifier that refuses a program with it gets it without, the walk's code then
    /// dead to the verifier (its offset is a read-only zero), and `cwd_walk` says why.
    fn load_backend(lsm: Want, fentry: Want, pins: Option<&Path>, ring: Option<u32>) -> Result<Probes, Error> {
        match Probes::load_backend_with(lsm, fentry, pins, ring, true) {
            Err(Error::Program { name, source }) if walks_cwd(name) => {
                let mut probes = Probes::load_backend_with(lsm, fentry, pins, ring, false)?;
                probes.cwd_walk = Some(format!(
                    "the kernel's verifier refused {name} with the working-directory walk ({}); relative paths are resolved from procfs",
                    one_line(&source).chars().take(120).collect::<String>()
                ));
                Ok(probes)
            }
            other => other,
        }
    }

    fn load_backend_with(
        lsm: Want,
        fentry: Want,
        pins: Option<&Path>,
        ring: Option<u32>,
        cwd: bool,
    ) -> Result<Probes, Error> {
        let mut loader = EbpfLoader::new();
        if let Some(bytes) = ring {
            loader.map_max_entries("EVENTS", bytes);
        }
        // The kernel's BTF, read once (about 6 MB) for the offsets and, where trampolines
        // are tried, for aya's attach points.
        let raw = btf::Btf::read_sys_fs()?;
        // sched_process_exec reads linux_binprm too, so every backend needs the offsets.
        let mut offsets = btf::lsm_offsets(&btf::Btf::parse(&raw)?)?;
        if !cwd {
            for (global, offset) in &mut offsets {
                if *global == "TASK_STRUCT_FS" {
                    *offset = 0;
                }
            }
        }
        for (global, offset) in &offsets {
            loader.override_global(global, offset, true);
        }
        let mut ebpf = loader.load(OBJECT)?;
        // Everything is verified before anything is attached: a refusal here is retried
        // without the walk, or without the part refused, with nothing attached or pinned yet.
        let btf = if lsm == Want::No && fentry == Want::No {
            None
        } else {
            Some(aya::Btf::parse(&raw, aya::Endianness::default()).map_err(|error| Error::AyaBtf(error.to_string()))?)
        };
        let mut fallback = None;
        let with_lsm = match &btf {
            Some(btf) if lsm != Want::No => match load_lsm(&mut ebpf, btf) {
                Ok(()) => true,
                Err(error) if lsm == Want::Must => return Err(Error::NoLsm(error.to_string())),
                Err(error) => {
                    fallback = Some(error.to_string());
                    false
                }
            },
            _ => false,
        };
        let mut no_fentry = None;
        let hooked = match &btf {
            Some(btf) if fentry != Want::No => match load_fentry(&mut ebpf, btf) {
                Ok(hooked) => hooked,
                Err(Error::Program { name, source }) if cwd && walks_cwd(name) => {
                    return Err(Error::Program { name, source });
                }
                Err(error) if fentry == Want::Must => return Err(Error::NoFentry(error.to_string())),
                Err(error) => {
                    no_fentry = Some(error.to_string());
                    Vec::new()
                }
            },
            _ => Vec::new(),
        };
        let with_fentry = !hooked.is_empty();
        let raw = if with_fentry { &RAW_TRACEPOINTS[2..] } else { &RAW_TRACEPOINTS[..] };
        for &name in raw {
            let program: &mut RawTracePoint = program(&mut ebpf, name)?;
            program.load().map_err(|source| Error::Program { name, source })?;
        }
        for name in SOCK_ADDR {
            let program: &mut CgroupSockAddr = program(&mut ebpf, name)?;
            program.load().map_err(|source| Error::Program { name, source })?;
        }
        let skb: &mut CgroupSkb = program(&mut ebpf, SKB_INGRESS)?;
        skb.load().map_err(|source| Error::Program { name: SKB_INGRESS, source })?;
        let mut links: Vec<Box<dyn Send>> = Vec::new();
        if with_lsm {
            for name in LSM_HOOKS {
                let program: &mut Lsm = program(&mut ebpf, name)?;
                let id = program.attach().map_err(|source| Error::Program { name, source })?;
                let link = program.take_link(id).map_err(|source| Error::Program { name, source })?;
                match pins {
                    Some(dir) => {
                        let path = dir.join("lsm").join(format!("{}-{name}", std::process::id()));
                        let pinned = aya::programs::links::FdLink::from(link)
                            .pin(&path)
                            .map_err(|error| Error::Pin { path: path.clone(), reason: error.to_string() })?;
                        links.push(Box::new(pinned));
                    }
                    None => links.push(Box::new(link)),
                }
            }
        }
        for name in hooked {
            if FENTRY.iter().any(|(entry, _)| *entry == name) {
                let program: &mut FEntry = program(&mut ebpf, name)?;
                let id = program.attach().map_err(|source| Error::Program { name, source })?;
                links.push(Box::new(program.take_link(id).map_err(|source| Error::Program { name, source })?));
            } else {
                let program: &mut FExit = program(&mut ebpf, name)?;
                let id = program.attach().map_err(|source| Error::Program { name, source })?;
                links.push(Box::new(program.take_link(id).map_err(|source| Error::Program { name, source })?));
            }
        }
        for &name in raw.iter().filter(|name| !SYSCALL_TRACEPOINTS.contains(name)) {
            links.push(attach_raw(&mut ebpf, name)?);
        }
        let backend = match (with_lsm, with_fentry) {
            (true, true) => Backend::LsmFentry,
            (true, false) => Backend::Lsm,
            (false, true) => Backend::Fentry,
            (false, false) => Backend::Tracepoint,
        };
        Ok(Probes {
            ebpf,
            backend,
            fallback,
            no_fentry,
            cwd_walk: None,
            links,
            syscalls: Vec::new(),
            watched: Table::new(),
            pins: pins.map(Path::to_path_buf),
            audit: None,
            opens: Vec::new(),
            read_in_userspace: 0,
        })
    }

    /// Removes the LSM pins of daemons that are gone (this daemon's own are attached by
    /// now), and the pin directories of agents whose cgroup is gone (ended while no daemon
    /// ran) and that no daemon watches (`keep`: this one's). Another daemon's pins stay.
    pub fn sweep_pins(&self, cgroup_root: &Path, keep: &[String]) {
        let Some(dir) = &self.pins else { return };
        let alive = |name: &std::ffi::OsStr| {
            let name = name.to_string_lossy();
            let pid = name.split('-').next().and_then(|pid| pid.parse::<u32>().ok());
            pid.is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
        };
        if let Ok(entries) = std::fs::read_dir(dir.join("lsm")) {
            for entry in entries.flatten() {
                if !alive(&entry.file_name()) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(dir.join("agents")) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let watched = keep.iter().any(|agent| name == agent.as_str());
                let running = cgroup_root.join(crate::cgroup::BASE).join(&name).exists();
                if !watched && !running {
                    remove_pins(&entry.path());
                }
            }
        }
    }

    /// Starts watching the agent in cgroup `cgroup_id` (its directory is `cgroup_dir`): the
    /// probes report its events, the socket hooks enforce its UDP and destination rules, and
    /// (LSM) its secrets and denied programs are refused by inode.
    pub fn watch(
        &mut self,
        cgroup_id: u64,
        agent: &str,
        cgroup_dir: &File,
        slot: AgentSlot,
        plan: &ProbePlan,
    ) -> Result<(), Error> {
        // Before the agent is in the agents map: its first syscall is seen. The notify
        // backend has none.
        let attach = if matches!(self.backend, Backend::Notify) || self.backend.fentry() {
            Ok(())
        } else {
            self.attach_syscalls()
        };
        let result = attach.and_then(|()| self.watch_cgroup(cgroup_id, agent, cgroup_dir, slot, plan));
        if result.is_err() && self.watched.is_empty() {
            self.syscalls.clear();
        }
        result
    }

    fn attach_syscalls(&mut self) -> Result<(), Error> {
        if self.syscalls.is_empty() {
            for name in SYSCALL_TRACEPOINTS {
                let link = attach_raw(&mut self.ebpf, name)?;
                self.syscalls.push(link);
            }
        }
        Ok(())
    }

    fn watch_cgroup(
        &mut self,
        cgroup_id: u64,
        agent: &str,
        cgroup_dir: &File,
        slot: AgentSlot,
        plan: &ProbePlan,
    ) -> Result<(), Error> {
        let mut watched = Watched::default();
        let pin_dir = self.pins.as_ref().map(|dir| dir.join("agents").join(agent));
        if let Some(dir) = &pin_dir {
            make_dir(dir)?;
        }
        for name in SOCK_ADDR.into_iter().chain([SKB_INGRESS]) {
            let link = self.attach_cgroup(name, cgroup_dir)?;
            match &pin_dir {
                Some(dir) => {
                    let path = dir.join(format!("{}-{name}", std::process::id()));
                    let pinned = link
                        .pin(&path)
                        .map_err(|error| Error::Pin { path: path.clone(), reason: error.to_string() })?;
                    watched.links.push(Box::new(pinned));
                }
                None => watched.links.push(Box::new(link)),
            }
        }
        // A predecessor's links for this agent go once this daemon's are attached: the
        // agent's rules hold without a gap.
        if let Some(dir) = &pin_dir {
            let mine = format!("{}-", std::process::id());
            if let Ok(entries) = std::fs::read_dir(dir) {
                for entry in entries.flatten() {
                    if !entry.file_name().to_string_lossy().starts_with(&mine) {
                        let _ = std::fs::remove_file(entry.path());
                    }
                }
            }
        }
        watched.pin_dir = pin_dir;
        {
            let report_allowed = self.backend == Backend::Notify;
            let unix_restricted = self.backend.lsm() && plan.unix.is_some();
            let mut policy: HashMap<_, u64, NetPolicy> = self.map("NET_POLICY")?;
            let value = NetPolicy {
                udp_restricted: u32::from(plan.udp.is_some()),
                bind_restricted: u32::from(plan.bind_restricted),
                report_allowed: u32::from(report_allowed),
                unix_restricted: u32::from(unix_restricted),
            };
            policy.insert(cgroup_id, value, 0).map_err(|source| Error::Map { name: "NET_POLICY", source })?;
        }
        let udp = destinations::allow_entries(plan.udp.as_deref().unwrap_or_default());
        self.insert_net("UDP_ALLOW", cgroup_id, &udp, &mut watched.plan)?;
        self.insert_net("NET_DENY", cgroup_id, &destinations::deny_entries(&plan.net_deny), &mut watched.plan)?;
        if plan.bind_restricted {
            let mut ports: HashMap<_, PortKey, u8> = self.map("LISTEN_ALLOW")?;
            for &port in &plan.bind_ports {
                let key = PortKey { cgroup_id, port: u32::from(port), _pad: 0 };
                ports.insert(key, 1, 0).map_err(|source| Error::Map { name: "LISTEN_ALLOW", source })?;
                watched.plan.ports.push(key);
            }
        }
        if self.backend.lsm() {
            self.insert_inodes("DENY_OPEN", cgroup_id, &plan.deny_open, &mut watched.plan)?;
            self.insert_inodes("DENY_EXEC", cgroup_id, &plan.deny_exec, &mut watched.plan)?;
            if let Some(unix) = &plan.unix {
                self.insert_inodes("UNIX_ALLOW", cgroup_id, unix, &mut watched.plan)?;
            }
        }
        // Last: from here on the agent's events are reported.
        let mut agents: HashMap<_, u64, AgentSlot> = self.map("AGENTS")?;
        agents.insert(cgroup_id, slot, 0).map_err(|source| Error::Map { name: "AGENTS", source })?;
        self.watched.insert(cgroup_id, watched);
        Ok(())
    }

    /// A handle on the programs whose exec stops an agent's process (`STOP_EXEC`), for the
    /// agent's event output, which holds its engine's names there (again on reload).
    pub fn stops(&self) -> Result<Stops, Error> {
        let name = "STOP_EXEC";
        let map = self.ebpf.map(name).ok_or(Error::Missing(name))?;
        let fd = match map {
            aya::maps::Map::HashMap(data) => std::os::fd::AsFd::as_fd(data.fd()).try_clone_to_owned(),
            _ => return Err(Error::Missing(name)),
        }
        .map_err(|error| Error::Map {
            name,
            source: aya::maps::MapError::SyscallError(aya::sys::SyscallError { call: "dup", io_error: error }),
        })?;
        let data = MapData::from_fd(fd).map_err(|source| Error::Map { name, source })?;
        let map = HashMap::try_from(aya::maps::Map::HashMap(data)).map_err(|source| Error::Map { name, source })?;
        Ok(Stops { map })
    }

    /// Attaches the cgroup program `name` (a socket hook or the `skb` ingress hook) to
    /// `cgroup_dir`, as a link that can be pinned.
    fn attach_cgroup(&mut self, name: &'static str, cgroup_dir: &File) -> Result<FdLink, Error> {
        let failed = |source| Error::Program { name, source };
        // A legacy attachment (no bpf_link: before Linux 5.7) cannot be pinned.
        let link_error = |error: aya::programs::links::LinkError| Error::Pin {
            path: PathBuf::from(name),
            reason: error.to_string(),
        };
        // Single: with bpf_link (Linux 5.7+) a cgroup takes any number of links whatever the
        // mode, and the kernel refuses link flags; the mode only matters for legacy attach.
        if name == SKB_INGRESS {
            let program: &mut CgroupSkb = program(&mut self.ebpf, name)?;
            let id =
                program.attach(cgroup_dir, CgroupSkbAttachType::Ingress, CgroupAttachMode::Single).map_err(failed)?;
            FdLink::try_from(program.take_link(id).map_err(failed)?).map_err(link_error)
        } else {
            let program: &mut CgroupSockAddr = program(&mut self.ebpf, name)?;
            let id = program.attach(cgroup_dir, CgroupAttachMode::Single).map_err(failed)?;
            FdLink::try_from(program.take_link(id).map_err(failed)?).map_err(link_error)
        }
    }

    /// Stops watching an agent: its events are no longer reported, its map entries are
    /// removed and its socket-hook links released. Unknown ids are ignored.
    pub fn unwatch(&mut self, cgroup_id: u64) {
        if let Some(audit) = self.audit.as_mut() {
            audit.unwatch(cgroup_id);
        }
        // The last close of a fanotify group waits for the kernel to let go of its marks (an
        // SRCU grace period, milliseconds): not on the daemon's loop.
        let gone: Vec<_> = self.opens.extract_if(.., |opens| opens.cgroup_id() == cgroup_id).collect();
        if !gone.is_empty() {
            later(move || drop(gone));
        }
        if let Ok(mut agents) = self.map::<HashMap<_, u64, AgentSlot>>("AGENTS") {
            let _ = agents.remove(&cgroup_id);
        }
        if let Ok(mut policy) = self.map::<HashMap<_, u64, NetPolicy>>("NET_POLICY") {
            let _ = policy.remove(&cgroup_id);
        }
        if let Ok(mut stops) = self.map::<HashMap<_, StopKey, u8>>("STOP_EXEC") {
            for key in agent_stops(&stops, cgroup_id) {
                let _ = stops.remove(&key);
            }
        }
        if let Ok(mut lost) = self.map::<aya::maps::PerCpuHashMap<_, u64, u64>>("LOST") {
            let _ = lost.remove(&cgroup_id);
        }
        let Some(watched) = self.watched.remove(&cgroup_id) else { return };
        self.remove(&watched.plan);
        self.remove(&watched.denies);
        drop(watched.links);
        if let Some(dir) = &watched.pin_dir {
            remove_pins(dir);
        }
        if self.watched.is_empty() {
            // The last agent is gone: the host leaves the slow syscall path.
            self.syscalls.clear();
        }
    }

    /// What the notify backend reads in userspace (fanotify, Landlock's audit records), in
    /// that order, with what was lost on the way.
    pub fn read_userspace(&mut self) -> Userspace {
        let mut read = Userspace::default();
        for opens in &mut self.opens {
            let lost = opens.take_lost();
            if lost > 0 {
                read.lost += lost;
                read.lost_in.push((opens.cgroup_id(), lost));
            }
            read.events.extend(opens.drain());
        }
        if let Some(audit) = self.audit.as_mut() {
            read.lost += audit.lost();
            read.events.extend(audit.drain());
        }
        self.read_in_userspace += read.events.len() as u64;
        read
    }

    /// Whether the syscall tracepoints are attached now (an agent is watched).
    pub fn syscalls_attached(&self) -> bool {
        !self.syscalls.is_empty()
    }

    /// Puts the kernel's share of the policy's deny rules into the maps for the agent's
    /// cgroup, in place of those put there before: destinations on every backend (cgroup
    /// socket hooks), files and programs by inode with BPF LSM. Returns what it put there,
    /// to report.
    pub fn deny(&mut self, cgroup_id: u64, denies: &KernelDenies) -> Result<String, Error> {
        let mut entries = Entries::default();
        let previous = self.watched.get_mut(&cgroup_id).map(|watched| std::mem::take(&mut watched.denies));
        if let Some(previous) = previous {
            // An entry the ring put there too stays.
            let plan = self.watched.get(&cgroup_id).map(|watched| watched.plan.clone()).unwrap_or_default();
            let only_denies = Entries {
                net: previous.net.into_iter().filter(|entry| !plan.net.contains(entry)).collect(),
                inodes: previous.inodes.into_iter().filter(|entry| !plan.inodes.contains(entry)).collect(),
                ports: Vec::new(),
            };
            self.remove(&only_denies);
        }
        self.insert_net("NET_DENY", cgroup_id, &destinations::deny_entries(&denies.net), &mut entries)?;
        let report = if self.backend.lsm() {
            self.insert_inodes("DENY_OPEN", cgroup_id, &denies.open, &mut entries)?;
            self.insert_inodes("DENY_EXEC", cgroup_id, &denies.exec, &mut entries)?;
            format!("{} destinations, {} files, {} programs", denies.net.len(), denies.open.len(), denies.exec.len())
        } else {
            format!("{} destinations (file and program rules decided in userspace: no BPF LSM)", denies.net.len())
        };
        if let Some(watched) = self.watched.get_mut(&cgroup_id) {
            watched.denies = entries;
        }
        Ok(report)
    }

    fn remove(&mut self, entries: &Entries) {
        for (name, key, bits) in &entries.net {
            if let Ok(mut map) = self.map::<LpmTrie<_, NetKey, u8>>(name) {
                let _ = map.remove(&Key::new(*bits, *key));
            }
        }
        for (name, key) in &entries.inodes {
            if let Ok(mut map) = self.map::<HashMap<_, InodeKey, u8>>(name) {
                let _ = map.remove(key);
            }
        }
        if let Ok(mut map) = self.map::<HashMap<_, PortKey, u8>>("LISTEN_ALLOW") {
            for key in &entries.ports {
                let _ = map.remove(key);
            }
        }
    }

    /// Puts `rules` into the LPM map `name` as they are: callers pass them through
    /// [`destinations`] first, which turns a rule into the entries the hooks must find.
    fn insert_net(
        &mut self,
        name: &'static str,
        cgroup_id: u64,
        rules: &[NetRule],
        entries: &mut Entries,
    ) -> Result<(), Error> {
        let mut map: LpmTrie<_, NetKey, u8> = self.map(name)?;
        for rule in rules {
            let (family, addr) = match rule.addr {
                IpAddr::V4(v4) => {
                    let mut addr = [0u8; 16];
                    addr[..4].copy_from_slice(&v4.octets());
                    (libc::AF_INET as u16, addr)
                }
                IpAddr::V6(v6) => (libc::AF_INET6 as u16, v6.octets()),
            };
            let key = NetKey { cgroup_id, family, port: rule.port.to_be(), addr, _pad: 0 };
            let bits = NET_KEY_FIXED_BITS + u32::from(rule.prefix);
            map.insert(&Key::new(bits, key), 1, 0).map_err(|source| Error::Map { name, source })?;
            entries.net.push((name, key, bits));
        }
        Ok(())
    }

    /// Adds the inodes of `paths` that exist (a path that does not exist has no inode to deny;
    /// Landlock keeps it unreadable by path).
    fn insert_inodes(
        &mut self,
        name: &'static str,
        cgroup_id: u64,
        paths: &[PathBuf],
        entries: &mut Entries,
    ) -> Result<(), Error> {
        let mut map: HashMap<_, InodeKey, u8> = self.map(name)?;
        for path in paths {
            let Ok(meta) = std::fs::metadata(path) else { continue };
            let key = InodeKey { cgroup_id, dev: kernel_dev(meta.dev()), ino: meta.ino() };
            map.insert(key, 1, 0).map_err(|source| Error::Map { name, source })?;
            entries.inodes.push((name, key));
        }
        Ok(())
    }

    fn map<'a, T>(&'a mut self, name: &'static str) -> Result<T, Error>
    where
        T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
    {
        let map = self.ebpf.map_mut(name).ok_or(Error::Missing(name))?;
        T::try_from(map).map_err(|source| Error::Map { name, source })
    }

    /// The ring buffer the events arrive in (taken once).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, Error> {
        let map = self.ebpf.take_map("EVENTS").ok_or(Error::Missing("EVENTS"))?;
        RingBuf::try_from(map).map_err(|source| Error::Map { name: "EVENTS", source })
    }

    /// Events the ring buffer dropped, per agent (cgroup id), summed over CPUs.
    pub fn lost_by_agent(&mut self) -> Result<Table<u64, u64>, Error> {
        let lost: aya::maps::PerCpuHashMap<_, u64, u64> = self.map("LOST")?;
        let mut out = Table::new();
        for entry in lost.iter() {
            let (cgroup_id, values) = entry.map_err(|source| Error::Map { name: "LOST", source })?;
            out.insert(cgroup_id, values.iter().sum());
        }
        Ok(out)
    }

    /// The counters summed over CPUs.
    pub fn counters(&mut self) -> Result<Counters, Error> {
        let counters: PerCpuArray<_, u64> = self.map("COUNTERS")?;
        let sum = |index: u32| -> Result<u64, Error> {
            let values = counters.get(&index, 0).map_err(|source| Error::Map { name: "COUNTERS", source })?;
            Ok(values.iter().sum())
        };
        Ok(Counters {
            produced: sum(counter::PRODUCED)?,
            dropped: sum(counter::DROPPED)?,
            errors: sum(counter::ERRORS)?,
        })
    }
}

/// `BPF_FS_MAGIC` (include/uapi/linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Mounts bpffs at the parent of `dir` (`/sys/fs/bpf`) when it is not, and makes `dir`.
fn mount_bpffs(dir: &Path) -> Result<(), Error> {
    let base = dir.parent().unwrap_or(dir);
    let is_bpffs = |path: &Path| nix::sys::statfs::statfs(path).is_ok_and(|fs| fs.filesystem_type().0 == BPF_FS_MAGIC);
    if !is_bpffs(base) {
        let _ = std::fs::create_dir_all(base);
        nix::mount::mount(Some("bpf"), base, Some("bpf"), nix::mount::MsFlags::empty(), None::<&str>)
            .map_err(|errno| Error::Pin { path: base.to_path_buf(), reason: format!("mounting bpffs: {errno}") })?;
    }
    make_dir(dir)
}

fn make_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|error| Error::Pin { path: dir.to_path_buf(), reason: error.to_string() })
}

/// Unpins every link in `dir` (each is detached once nothing else holds it) and removes it.
pub fn remove_pins(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Mounts securityfs at /sys/kernel/security when it is not, so the LSM list can be read.
fn mount_securityfs() {
    let path = "/sys/kernel/security";
    if !Path::new(path).join("lsm").exists() {
        let _ =
            nix::mount::mount(Some("securityfs"), path, Some("securityfs"), nix::mount::MsFlags::empty(), None::<&str>);
    }
}

/// glibc's dev_t (stat) to the kernel's internal one (`MAJOR << 20 | MINOR`), which
/// `super_block.s_dev` holds.
pub fn kernel_dev(dev: u64) -> u64 {
    let major = libc::major(dev) as u64;
    let minor = libc::minor(dev) as u64;
    (major << 20) | minor
}

/// An error with its sources, on one line (aya appends an often empty verifier log).
fn one_line(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    // aya appends "Verifier output:" and the log, which is empty for a refused load; and the
    // io error repeats as a source.
    let mut parts: Vec<String> = Vec::new();
    for part in text.split(": ") {
        let part = part.split_whitespace().collect::<Vec<_>>().join(" ");
        let part = part.trim_end_matches("Verifier output:").trim_end_matches("Verifier output").trim().to_owned();
        if !part.is_empty() && !parts.iter().any(|seen| seen.contains(&part)) {
            parts.push(part);
        }
    }
    parts.join(": ")
}

/// The resolvers in `/etc/resolv.conf` (or `path`), which `resolvers` in a ring stands for.
pub fn resolvers(path: &Path) -> Vec<IpAddr> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().split('%').next()?.parse().ok())
        .collect()
}

/// `/etc/resolv.conf`.
pub fn resolv_conf() -> PathBuf {
    PathBuf::from("/etc/resolv.conf")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolvers_come_from_nameserver_lines() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let path = dir.path().join("resolv.conf");
        std::fs::write(
            &path,
            "# comment\nnameserver 10.0.0.2\nsearch example\nnameserver fe80::1%eth0\nnameserver bogus\n",
        )
        .unwrap_or_else(|error| panic!("{error}"));
        let found: Vec<String> = resolvers(&path).iter().map(IpAddr::to_string).collect();
        assert_eq!(found, ["10.0.0.2", "fe80::1"]);
    }
}
