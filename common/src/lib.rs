//! Types shared by the eBPF programs and the supervisor. Everything that crosses the
//! kernel/user boundary is `#[repr(C)]`, `Copy` and made of fixed-width integers only, with
//! explicit padding, so both sides agree on the layout byte for byte.
#![no_std]

/// Event kinds. A number, once given, is never reused for another kind.
pub mod kind {
    /// A process in an agent's cgroup called execve/execveat (or, LSM: is about to run a binary).
    pub const EXEC: u32 = 1;
    /// openat/openat2 (or, LSM: a file is being opened).
    pub const OPEN: u32 = 2;
    /// connect(2) on any socket (tracepoint, LSM) or an IP connect decided by the cgroup hook.
    pub const CONNECT: u32 = 3;
    /// sendmsg/sendto with a destination address, decided by the cgroup socket hook.
    pub const SENDMSG: u32 = 4;
    /// `sched_process_exec`: the binary a process now runs.
    pub const EXECED: u32 = 5;
    /// A refused change of the filesystem by path: mkdir, rmdir, unlink, rename, link,
    /// symlink, truncate, mknod, chmod, chown and their `*at` forms ([`super::FsEvent`]).
    pub const FS: u32 = 6;
    /// The working directory of a task, walked by the kernel before the first relative open
    /// (or filesystem change) it makes from there ([`super::CwdEvent`]).
    pub const CWD: u32 = 7;
    /// listen(2) on an unbound inet socket, refused by the BPF LSM where the ring restricts
    /// TCP binds (the kernel would pick a port no bind rule sees): a [`super::NetEvent`]
    /// with no address. From the cgroup `skb` hook (every backend): a connection refused
    /// to such a listener, with the local port and the peer's address (no pid: the packet
    /// is not the agent's syscall).
    pub const LISTEN: u32 = 8;
    /// A connect or datagram to a pathname UNIX socket refused by the BPF LSM: bound by
    /// something outside the agent after it started, or otherwise not on its list
    /// ([`super::UnixEvent`]; reported as a `connect` or `sendmsg`).
    pub const UNIX: u32 = 9;
}

/// Where an event was observed.
pub mod source {
    pub const TRACEPOINT: u16 = 1;
    pub const LSM: u16 = 2;
    pub const CGROUP_SOCK_ADDR: u16 = 3;
    /// fentry/fexit on the syscall functions: what the raw syscall tracepoints report, on
    /// kernels that run BPF trampolines.
    pub const FENTRY: u16 = 4;
    /// Landlock's audit records, read in userspace (the `notify` backend).
    pub const LANDLOCK_AUDIT: u16 = 5;
    /// fanotify marks on the agent's own mounts, read in userspace (the `notify` backend).
    pub const FANOTIFY: u16 = 6;
    /// A refused syscall of an agent's audit session, read in userspace (the `notify`
    /// backend): refusals Landlock does not make.
    pub const SYSCALL_AUDIT: u16 = 7;
    /// The cgroup `skb` ingress hook on an agent's cgroup: packets to its sockets.
    pub const CGROUP_SKB: u16 = 8;
}

/// What the probe did about the operation.
pub mod verdict {
    /// Observed only: the kernel decided (its result is in `EventHeader::result`).
    pub const OBSERVED: u16 = 0;
    /// A probe rule matched and allowed it.
    pub const ALLOWED: u16 = 1;
    /// A probe rule denied it (enforce mode).
    pub const DENIED: u16 = 2;
    /// A probe rule would have denied it (observe mode).
    pub const WOULD_DENY: u16 = 3;
    /// The probe stopped the process (SIGSTOP) before its first instruction, for the
    /// supervisor to decide: an exec a sequence rule that suspends may be about to match
    /// (`STOP_EXEC`). The supervisor freezes the agent or lets the process go on (SIGCONT).
    pub const STOPPED: u16 = 4;
}

/// Per-agent mode, in [`AgentSlot::mode`].
pub mod mode {
    pub const OBSERVE: u32 = 0;
    pub const ENFORCE: u32 = 1;
}

/// The fixed header that starts every event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// One of [`kind`].
    pub kind: u32,
    /// The syscall's return value (0 or a negative errno), or the verdict's errno.
    pub result: i32,
    /// `bpf_ktime_get_ns()` at the event.
    pub ktime_ns: u64,
    /// Thread id (the kernel's `pid`).
    pub pid: u32,
    /// Process id (the kernel's `tgid`).
    pub tgid: u32,
    pub uid: u32,
    /// One of [`verdict`].
    pub verdict: u16,
    /// One of [`source`].
    pub source: u16,
    /// cgroup v2 id of the process (the inode number of its cgroup directory).
    pub cgroup_id: u64,
}

/// Longest path an event carries, NUL included.
pub const PATH_LEN: usize = 256;
/// Longest argument an exec event carries, NUL included.
pub const ARG_LEN: usize = 64;
/// Arguments an exec event carries (argv[0..3]).
pub const ARGS: usize = 3;

/// `kind::EXEC` and `kind::EXECED`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecEvent {
    pub header: EventHeader,
    /// The file the kernel runs, from `linux_binprm.file` (`kind::EXECED`; 0 elsewhere):
    /// its device (the kernel's encoding) and inode, and its size. A memfd or a deleted file
    /// has no path left once the process ends; its size still says what it may have been.
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub filename: [u8; PATH_LEN],
    pub argv: [[u8; ARG_LEN]; ARGS],
}

/// `kind::OPEN`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OpenEvent {
    pub header: EventHeader,
    /// open(2) flags.
    pub flags: u32,
    /// The directory a relative path is resolved from: `AT_FDCWD` (-100) for the current
    /// directory, else a descriptor of the opening process (tracepoints); `AT_FDCWD` from
    /// the LSM, whose paths are absolute.
    pub dirfd: i32,
    /// Device and inode of the file (LSM backend; 0 from tracepoints).
    pub dev: u64,
    pub ino: u64,
    pub path: [u8; PATH_LEN],
}

/// `kind::FS`: a change of the filesystem that the kernel refused (EACCES or EPERM).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FsEvent {
    pub header: EventHeader,
    /// The x86-64 syscall number (arch/x86/entry/syscalls/syscall_64.tbl).
    pub syscall: u32,
    /// `AT_FDCWD` (-100) or the directory descriptor `path` is relative to.
    pub dirfd: i32,
    /// The same for `path2`.
    pub dirfd2: i32,
    pub _pad: u32,
    pub path: [u8; PATH_LEN],
    /// The new name of rename, link and symlink (empty for the others).
    pub path2: [u8; PATH_LEN],
}

/// Components of a working directory an event carries at most, and their length.
pub const CWD_DEPTH: usize = 8;
pub const CWD_NAME: usize = 32;
// The walk indexes its components with `count & (CWD_DEPTH - 1)`.
const _: () = assert!(CWD_DEPTH.is_power_of_two());

/// `kind::CWD`: a task's working directory, leaf first (`components[0]` is its own name),
/// read from the kernel's dentries and mounts. `depth` components are set; `truncated` is 1
/// when the walk stopped before the root (too deep) or a name was cut.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CwdEvent {
    pub header: EventHeader,
    pub depth: u32,
    pub truncated: u32,
    pub components: [[u8; CWD_NAME]; CWD_DEPTH],
}

/// `kind::CONNECT` and `kind::SENDMSG`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NetEvent {
    pub header: EventHeader,
    /// `AF_INET`, `AF_INET6`, `AF_UNIX`, ...
    pub family: u16,
    /// Destination port, host byte order.
    pub port: u16,
    /// `SOCK_STREAM`, `SOCK_DGRAM`, ... when known (cgroup hook), else 0.
    pub sock_type: u16,
    pub _pad: u16,
    /// IPv4 in the first 4 bytes, or IPv6, network byte order.
    pub addr: [u8; 16],
}

/// Value of the agents map (key: cgroup id).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentSlot {
    /// The supervisor's number for the agent.
    pub slot: u32,
    /// One of [`mode`].
    pub mode: u32,
}

/// Per-agent socket policy (key: cgroup id).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetPolicy {
    /// 1: UDP destinations are restricted to `UDP_ALLOW` entries; 0: any.
    pub udp_restricted: u32,
    /// 1: the ring lets TCP bind only the ports Landlock allows, so a listen(2) on an
    /// unbound inet socket (which takes a port of the kernel's choosing) is refused.
    pub bind_restricted: u32,
    /// 1: the socket hooks report allowed connects and datagrams too (the notify backend,
    /// which has no syscall tracepoint to see them).
    pub report_allowed: u32,
    /// 1: connects and datagrams to pathname UNIX sockets are limited to the agent's own
    /// and those in `UNIX_ALLOW` (BPF LSM).
    pub unix_restricted: u32,
}

/// `kind::UNIX`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UnixEvent {
    pub header: EventHeader,
    /// The socket file's device (the kernel's encoding) and inode.
    pub dev: u64,
    pub ino: u64,
    /// `SOCK_STREAM`, `SOCK_DGRAM` or `SOCK_SEQPACKET` (that of the agent's socket).
    pub sock_type: u32,
    pub _pad: u32,
    /// The address the peer bound, as it gave it (`sun_path`, NUL-terminated).
    pub path: [u8; UNIX_PATH_LEN],
}

/// `sun_path`'s size, and a terminating NUL.
pub const UNIX_PATH_LEN: usize = 112;

/// Key of the address rules (UDP allow list, connect deny list), LPM tries: the prefix
/// covers `cgroup_id`, `family` and `port` fully (96 bits) and then as many address bits as
/// the rule's CIDR has. Port 0 means any port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetKey {
    pub cgroup_id: u64,
    pub family: u16,
    /// Network byte order, as the cgroup hook sees it.
    pub port: u16,
    pub addr: [u8; 16],
    pub _pad: u32,
}

/// Bits of [`NetKey`] before the address.
pub const NET_KEY_FIXED_BITS: u32 = 96;

/// Key of the TCP ports an agent may listen on (those its Landlock rules let it bind),
/// when its ring restricts binds. Host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortKey {
    pub cgroup_id: u64,
    pub port: u32,
    pub _pad: u32,
}

/// Key of the programs whose exec stops the process at once (`verdict::STOPPED`): an
/// agent's cgroup and the program's name as the kernel sets `comm` at exec (the file name's
/// last component, its first 15 bytes, NUL-padded).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StopKey {
    pub cgroup_id: u64,
    pub comm: [u8; 16],
}

/// Key of the per-agent inode deny lists: a file by device and inode, which no path (hard
/// link, bind mount) can get around.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InodeKey {
    pub cgroup_id: u64,
    /// The kernel's dev_t (`MAJOR << 20 | MINOR`), not glibc's encoding.
    pub dev: u64,
    pub ino: u64,
}

/// Counters, per CPU, index into the `COUNTERS` array.
pub mod counter {
    /// Events the ring buffer had no room for.
    pub const DROPPED: u32 = 0;
    /// Events emitted (delivered or dropped).
    pub const PRODUCED: u32 = 1;
    /// Internal errors of a probe (a read that failed): the event was still emitted.
    pub const ERRORS: u32 = 2;
    pub const COUNT: u32 = 3;
}

#[cfg(feature = "user")]
mod user {
    // SAFETY (all): plain `#[repr(C)]` structs of integers with explicit padding; every bit
    // pattern is a valid value.
    unsafe impl aya::Pod for super::EventHeader {}
    unsafe impl aya::Pod for super::ExecEvent {}
    unsafe impl aya::Pod for super::OpenEvent {}
    unsafe impl aya::Pod for super::FsEvent {}
    unsafe impl aya::Pod for super::CwdEvent {}
    unsafe impl aya::Pod for super::NetEvent {}
    unsafe impl aya::Pod for super::AgentSlot {}
    unsafe impl aya::Pod for super::NetPolicy {}
    unsafe impl aya::Pod for super::NetKey {}
    unsafe impl aya::Pod for super::InodeKey {}
    unsafe impl aya::Pod for super::PortKey {}
    unsafe impl aya::Pod for super::UnixEvent {}
    unsafe impl aya::Pod for super::StopKey {}
}
