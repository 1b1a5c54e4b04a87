//! The notify backend's opens: fanotify marks on the mounts of an agent's own mount
//! namespace, so that every file it opens is reported without a syscall tracepoint.
//!
//! Below admin, a root governor gives the agent a mount namespace of its own (see
//! `launch::child`), a copy of the host's mounts. A mount mark (`FAN_MARK_MOUNT`) sees the
//! opens made through that one mount, so marks on the copies see the agent's opens and no
//! other process's. The group is made by `governor run` before the fork, the child marks
//! every mount of its namespace before it drops its capabilities (`mark_mounts`), and the
//! group is read by whoever supervises the agent: `governor run` itself, or the daemon, which
//! takes a duplicate of the descriptor (`pidfd_getfd`).
//!
//! Each event carries the opening process (its tgid) and a descriptor of the file, whose
//! path is read and the descriptor closed. `FAN_OPEN` is an open (reported as a read), and
//! `FAN_CLOSE_WRITE` a file that was open for writing (reported as a write open, at its
//! close). The kernel merges events of one file by one process while they wait in the queue:
//! repeated opens of a file may arrive as one. The queue is unlimited (no event is dropped;
//! its memory is charged to the supervisor's cgroup); an overflow would still be reported as
//! lost.
//!
//! Not seen: opens the kernel refused before the open completed (Landlock's refusals come
//! from its audit records; a permission refusal, as of a masked secret, from neither), and
//! mounts that appear in the agent's namespace after it started (propagated from the host).

use std::{
    ffi::CString,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
};

use governor_common::{kind, source};

use super::events::Event;

const FAN_CLOEXEC: u32 = 0x1;
const FAN_NONBLOCK: u32 = 0x2;
const FAN_CLASS_NOTIF: u32 = 0x0;
const FAN_UNLIMITED_QUEUE: u32 = 0x10;
const FAN_MARK_ADD: u32 = 0x1;
const FAN_MARK_MOUNT: u32 = 0x10;
const FAN_CLOSE_WRITE: u64 = 0x8;
const FAN_OPEN: u64 = 0x20;
const FAN_Q_OVERFLOW: u64 = 0x4000;
const FAN_ONDIR: u64 = 0x4000_0000;
const FAN_NOFD: i32 = -1;
/// What the marks ask for: opens of files and directories, and closes after writing.
pub const MASK: u64 = FAN_OPEN | FAN_CLOSE_WRITE | FAN_ONDIR;

/// `struct fanotify_event_metadata`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Metadata {
    event_len: u32,
    vers: u8,
    reserved: u8,
    metadata_len: u16,
    mask: u64,
    fd: i32,
    pid: i32,
}

/// One agent's fanotify group.
pub struct Opens {
    group: OwnedFd,
    cgroup_id: u64,
    /// The agent's cgroup as `/proc/PID/cgroup` names it (`/governor/ID`).
    cgroup: String,
    /// Whether each pid seen is the agent's.
    pids: std::collections::HashMap<u32, bool>,
    /// Queue overflows seen (each an unknown number of events lost).
    lost: u64,
}

/// A fanotify group for one agent's marks: non-blocking, close-on-exec, unlimited queue.
pub fn group() -> std::io::Result<OwnedFd> {
    // SAFETY: fanotify_init(2) with flag arguments; the descriptor is checked and owned.
    let fd = unsafe {
        libc::fanotify_init(
            FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | FAN_UNLIMITED_QUEUE,
            (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC | libc::O_NOATIME) as u32,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor just returned to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The mount points of this process's mount namespace, as `/proc/self/mountinfo` names them
/// (octal escapes undone), to be marked by the child in its copy of the namespace. Read by
/// the parent before the fork: the child adds only the masks, which `mark_mounts` is given
/// too.
pub fn mount_points() -> std::io::Result<Vec<CString>> {
    let text = std::fs::read("/proc/self/mountinfo")?;
    let mut points = Vec::new();
    for line in text.split(|&byte| byte == b'\n') {
        // mount ID, parent ID, major:minor, root, mount point, ...
        let Some(point) = line.split(|&byte| byte == b' ').nth(4) else { continue };
        if let Ok(point) = CString::new(unescape(point)) {
            points.push(point);
        }
    }
    Ok(points)
}

/// mountinfo's escapes: `\040` (space), `\011`, `\012`, `\134` (backslash).
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut index = 0;
    while index < field.len() {
        if field[index] == b'\\'
            && let Some(digits) = field.get(index + 1..index + 4)
            && digits.iter().all(|digit| (b'0'..=b'7').contains(digit))
        {
            out.push(digits.iter().fold(0u8, |value, digit| value.wrapping_mul(8) + (digit - b'0')));
            index += 4;
        } else {
            out.push(field[index]);
            index += 1;
        }
    }
    out
}

/// In the child, in its own mount namespace and with CAP_SYS_ADMIN still held: marks each
/// mount that `points` reach. A point that no longer resolves (ENOENT, ENOTDIR: a mount
/// under a path that is gone or hidden) cannot be reached by the agent either and is
/// skipped; any other failure is returned (fail closed: the agent's opens there would go
/// unreported). No allocation: the child of a fork may not.
pub fn mark_mounts(group: RawFd, points: &[CString]) -> Result<(), i32> {
    for point in points {
        // SAFETY: fanotify_mark(2) with a NUL-terminated path.
        let marked =
            unsafe { libc::fanotify_mark(group, FAN_MARK_ADD | FAN_MARK_MOUNT, MASK, libc::AT_FDCWD, point.as_ptr()) };
        if marked != 0 {
            let errno = nix::errno::Errno::last_raw();
            if errno != libc::ENOENT && errno != libc::ENOTDIR {
                return Err(errno);
            }
        }
    }
    Ok(())
}

impl Opens {
    /// `cgroup`: the agent's cgroup directory, below the cgroup2 root `root`.
    pub fn new(group: OwnedFd, cgroup_id: u64, cgroup: &std::path::Path, root: &std::path::Path) -> Opens {
        let cgroup = cgroup
            .strip_prefix(root)
            .map_or_else(|_| cgroup.display().to_string(), |path| format!("/{}", path.display()));
        Opens { group, cgroup_id, cgroup, pids: std::collections::HashMap::new(), lost: 0 }
    }

    /// Whether process `pid` is the agent's. A process outside the agent's namespace opens
    /// through its marked mounts by way of `/proc/PID/root` (a scanner, `lsof`, an operator):
    /// not the agent's. A process already gone cannot be asked and counts as the agent's
    /// (the events of its short-lived processes would otherwise be lost).
    fn is_agents(&mut self, pid: u32) -> bool {
        if self.pids.len() > 4096 {
            self.pids.clear();
        }
        let cgroup = &self.cgroup;
        *self.pids.entry(pid).or_insert_with(|| match std::fs::read_to_string(format!("/proc/{pid}/cgroup")) {
            Ok(text) => text.lines().filter_map(|line| line.strip_prefix("0::")).any(|path| {
                path == cgroup || path.strip_prefix(cgroup.as_str()).is_some_and(|rest| rest.starts_with('/'))
            }),
            Err(_) => true,
        })
    }

    pub fn cgroup_id(&self) -> u64 {
        self.cgroup_id
    }

    pub fn fd(&self) -> RawFd {
        self.group.as_raw_fd()
    }

    /// Queue overflows seen since the last call (each at least one event lost).
    pub fn take_lost(&mut self) -> u64 {
        std::mem::take(&mut self.lost)
    }

    /// Every event queued now, as open events of the agent.
    pub fn drain(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        // Each event read comes with a new descriptor: a read of at most 128 events keeps
        // them well below the descriptor limit (an event whose descriptor cannot be made is
        // lost: the read fails with EMFILE).
        let mut buffer = vec![0u8; 128 * size_of::<Metadata>()];
        loop {
            // SAFETY: read(2) into a buffer of the length given, non-blocking descriptor.
            let len = unsafe { libc::read(self.group.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len()) };
            if len < 0 {
                let errno = nix::errno::Errno::last();
                if errno != nix::errno::Errno::EAGAIN && errno != nix::errno::Errno::EINTR {
                    // The event that could not be handed over is gone: counted.
                    self.lost += 1;
                }
                if errno == nix::errno::Errno::EINTR {
                    continue;
                }
                break;
            }
            if len == 0 {
                break;
            }
            let mut offset = 0;
            let len = len as usize;
            while offset + size_of::<Metadata>() <= len {
                // SAFETY: at least a metadata's length remains; Metadata is plain-old-data.
                let meta = unsafe { std::ptr::read_unaligned(buffer[offset..].as_ptr().cast::<Metadata>()) };
                if meta.event_len < size_of::<Metadata>() as u32 {
                    break;
                }
                offset += meta.event_len as usize;
                if meta.mask & FAN_Q_OVERFLOW != 0 {
                    self.lost += 1;
                }
                if meta.fd == FAN_NOFD || meta.fd < 0 {
                    continue;
                }
                // SAFETY: the kernel opened this descriptor for us; we own and close it.
                let file = unsafe { OwnedFd::from_raw_fd(meta.fd) };
                if !self.is_agents(meta.pid.max(0) as u32) {
                    continue;
                }
                if let Some(event) = self.event(&meta, &file) {
                    events.push(event);
                }
            }
        }
        events
    }

    fn event(&self, meta: &Metadata, file: &OwnedFd) -> Option<Event> {
        let path = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()?;
        let path = path.to_string_lossy().into_owned();
        let (dev, ino) = match nix::sys::stat::fstat(file) {
            Ok(stat) => (stat.st_dev, stat.st_ino),
            Err(_) => (0, 0),
        };
        let flags = if meta.mask & FAN_CLOSE_WRITE != 0 { libc::O_WRONLY as u32 } else { libc::O_RDONLY as u32 };
        let pid = meta.pid.max(0) as u32;
        let header = super::landlock_audit::observed(kind::OPEN, 0, source::FANOTIFY, pid, 0, self.cgroup_id);
        Some(Event::Open {
            header,
            flags,
            dirfd: libc::AT_FDCWD,
            dev: super::kernel_dev(dev),
            ino,
            path,
            aka: Vec::new(),
        })
    }
}

/// Takes a duplicate of descriptor `fd` of process `pid` (`pidfd_getfd(2)`, Linux 5.6):
/// how the daemon gets the group a `governor run` made for its agent. Needs ptrace access
/// to the process (root).
pub fn take_from(pid: u32, fd: RawFd) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) with integer arguments; the descriptor is checked and owned.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if pidfd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    // SAFETY: pidfd_getfd(2) with integer arguments; the descriptor is checked and owned.
    let taken = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if taken < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    let taken = unsafe { OwnedFd::from_raw_fd(taken as RawFd) };
    // What is read from it must be fanotify's (a pipe would block the daemon's loop).
    let kind = std::fs::read_link(format!("/proc/self/fd/{}", taken.as_raw_fd()))?;
    if kind.as_os_str() != "anon_inode:[fanotify]" {
        return Err(std::io::Error::other(format!("descriptor {fd} is {}, not a fanotify group", kind.display())));
    }
    Ok(taken)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(br"/mnt/with\040space"), b"/mnt/with space");
        assert_eq!(unescape(br"/a\134b"), br"/a\b");
        assert_eq!(unescape(br"/plain"), b"/plain");
        assert_eq!(unescape(br"/short\04"), br"/short\04");
    }

    #[test]
    fn mount_points_include_the_root() {
        let points = mount_points().unwrap_or_else(|error| panic!("{error}"));
        assert!(points.iter().any(|point| point.as_bytes() == b"/"), "{points:?}");
    }
}
