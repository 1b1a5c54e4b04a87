//! Types shared by the eBPF programs and the supervisor. Everything that crosses the
//! kernel/user boundary is `#[repr(C)]`, `Copy` and made of fixed-width integers only.
#![no_std]

/// Event kinds. A number, once given, is never reused for another kind.
pub mod kind {
    /// A process in an agent's cgroup completed an `execve`.
    pub const EXEC: u32 = 1;
}

/// The fixed header that starts every event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// One of [`kind`].
    pub kind: u32,
    /// Result of the operation (0 or a negative errno) or the verdict returned.
    pub result: i32,
    /// `bpf_ktime_get_ns()` at the event.
    pub ktime_ns: u64,
    /// Thread id (the kernel's `pid`).
    pub pid: u32,
    /// Process id (the kernel's `tgid`).
    pub tgid: u32,
    pub uid: u32,
    pub _pad: u32,
    /// cgroup v2 id of the process (the inode number of its cgroup directory).
    pub cgroup_id: u64,
}

/// Longest file name an event carries, NUL included.
pub const PATH_LEN: usize = 256;

/// `kind::EXEC`: the binary that a process in an agent cgroup now runs.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecEvent {
    pub header: EventHeader,
    pub filename: [u8; PATH_LEN],
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` structs of integers with explicit padding; every bit
    // pattern is a valid value.
    unsafe impl aya::Pod for super::EventHeader {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ExecEvent {}
}
