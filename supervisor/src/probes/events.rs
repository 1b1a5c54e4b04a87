//! Decoding the events the eBPF programs write to the ring buffer, and the sink they go to.
//! Pure: bytes in, [`Event`] out.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use governor_common::{
    CwdEvent, EventHeader, ExecEvent, FsEvent, NetEvent, OpenEvent, UnixEvent, kind, source, verdict,
};
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("event of {len} bytes is shorter than its header")]
    Short { len: usize },
    #[error("event kind {kind} of {len} bytes: expected {expected}")]
    Size { kind: u32, len: usize, expected: usize },
    #[error("unknown event kind {0}")]
    Kind(u32),
}

/// The file a completed exec runs, from the kernel: what governor reads later (by path or
/// `/proc/PID/exe`) is checked to be this file, and when it cannot be read (a memfd or a
/// deleted file whose process has ended) its size still narrows what it may have been.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecFile {
    /// The kernel's encoding (`MAJOR << 20 | MINOR`).
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
}

/// One decoded event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// execve/execveat and its result (`kind::EXEC`), or a completed exec (`kind::EXECED`).
    Exec {
        header: EventHeader,
        filename: String,
        argv: Vec<String>,
        /// The file the kernel ran, as it saw it (a completed exec).
        file: Option<ExecFile>,
        /// Other names of the program, found by governor (`resolve`): the executable the
        /// kernel resolved, the program a dynamic loader was asked to run, a known program
        /// this file is a copy of. Rules about programs match any of them.
        aka: Vec<String>,
    },
    Open {
        header: EventHeader,
        flags: u32,
        /// `AT_FDCWD` (-100) or the descriptor a relative `path` is relative to.
        dirfd: i32,
        dev: u64,
        ino: u64,
        path: String,
        /// The path as resolved (absolute, symlinks followed), when it differs.
        aka: Vec<String>,
    },
    /// A refused change of the filesystem (`kind::FS`): mkdir, unlink, rename, ...
    Fs {
        header: EventHeader,
        /// The x86-64 syscall number.
        syscall: u32,
        dirfd: i32,
        path: String,
        dirfd2: i32,
        /// The new name of rename, link and symlink; empty for the others.
        path2: String,
        /// Both paths as resolved (absolute, symlinks followed), when they differ.
        aka: Vec<String>,
    },
    /// A thread's working directory (`kind::CWD`), sent before its first relative path from
    /// there: what `resolve` resolves relative paths against. Not decided nor recorded.
    Cwd {
        header: EventHeader,
        /// Absolute; starts with `.../` when the walk stopped short of the root.
        path: String,
    },
    /// connect (`kind::CONNECT`) or sendmsg (`kind::SENDMSG`).
    Net {
        header: EventHeader,
        family: u16,
        port: u16,
        sock_type: u16,
        addr: Option<IpAddr>,
        /// A pathname UNIX socket's address, where the report has it; empty otherwise.
        path: String,
    },
}

fn read<T: Copy>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: length checked; T is a plain-old-data event type (every bit pattern valid);
    // read_unaligned because ring buffer records are only 8-byte aligned by contract.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

fn exact<T: Copy>(bytes: &[u8], kind: u32) -> Result<T, DecodeError> {
    if bytes.len() != size_of::<T>() {
        return Err(DecodeError::Size { kind, len: bytes.len(), expected: size_of::<T>() });
    }
    read(bytes).ok_or(DecodeError::Short { len: bytes.len() })
}

/// A NUL-terminated C string from a fixed buffer.
fn text(buffer: &[u8]) -> String {
    let end = buffer.iter().position(|byte| *byte == 0).unwrap_or(buffer.len());
    String::from_utf8_lossy(&buffer[..end]).into_owned()
}

pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let header: EventHeader = read(bytes).ok_or(DecodeError::Short { len: bytes.len() })?;
    match header.kind {
        kind::EXEC | kind::EXECED => {
            let event: ExecEvent = exact(bytes, header.kind)?;
            let argv = event.argv.iter().map(|arg| text(arg)).take_while(|arg| !arg.is_empty()).collect();
            let file = (header.kind == kind::EXECED && event.ino != 0).then_some(ExecFile {
                dev: event.dev,
                ino: event.ino,
                size: event.size,
            });
            Ok(Event::Exec { header, filename: text(&event.filename), argv, file, aka: Vec::new() })
        }
        kind::OPEN => {
            let event: OpenEvent = exact(bytes, header.kind)?;
            Ok(Event::Open {
                header,
                flags: event.flags,
                dirfd: event.dirfd,
                dev: event.dev,
                ino: event.ino,
                path: text(&event.path),
                aka: Vec::new(),
            })
        }
        kind::FS => {
            let event: FsEvent = exact(bytes, header.kind)?;
            Ok(Event::Fs {
                header,
                syscall: event.syscall,
                dirfd: event.dirfd,
                path: text(&event.path),
                dirfd2: event.dirfd2,
                path2: text(&event.path2),
                aka: Vec::new(),
            })
        }
        kind::CWD => {
            let event: CwdEvent = exact(bytes, header.kind)?;
            let depth = usize::try_from(event.depth).unwrap_or(0).min(event.components.len());
            let mut path = String::new();
            if event.truncated != 0 {
                path.push_str("...");
            }
            for component in event.components[..depth].iter().rev() {
                path.push('/');
                path.push_str(&text(component));
            }
            if path.is_empty() {
                path.push('/');
            }
            Ok(Event::Cwd { header, path })
        }
        kind::CONNECT | kind::SENDMSG | kind::LISTEN => {
            let event: NetEvent = exact(bytes, header.kind)?;
            let addr = match i32::from(event.family) {
                libc::AF_INET => {
                    Some(IpAddr::V4(Ipv4Addr::new(event.addr[0], event.addr[1], event.addr[2], event.addr[3])))
                }
                libc::AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(event.addr))),
                _ => None,
            };
            Ok(Event::Net {
                header,
                family: event.family,
                port: event.port,
                sock_type: event.sock_type,
                addr,
                path: String::new(),
            })
        }
        // A refused UNIX connect or datagram (BPF LSM): reported as the operation it was.
        kind::UNIX => {
            let event: UnixEvent = exact(bytes, header.kind)?;
            let header = EventHeader {
                kind: if event.sock_type == libc::SOCK_DGRAM as u32 { kind::SENDMSG } else { kind::CONNECT },
                ..header
            };
            Ok(Event::Net {
                header,
                family: libc::AF_UNIX as u16,
                port: 0,
                sock_type: event.sock_type as u16,
                addr: None,
                path: text(&event.path),
            })
        }
        other => Err(DecodeError::Kind(other)),
    }
}

impl Event {
    pub fn header(&self) -> &EventHeader {
        match self {
            Event::Exec { header, .. }
            | Event::Open { header, .. }
            | Event::Fs { header, .. }
            | Event::Cwd { header, .. }
            | Event::Net { header, .. } => header,
        }
    }

    /// The event's name in the audit store and the trace: its kind, or for a filesystem
    /// change the operation (`mkdir`, `rename`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Event::Fs { syscall, .. } => fs_op_name(*syscall),
            other => kind_name(other.header().kind),
        }
    }

    /// The event as one JSON object (`--trace`).
    pub fn to_json(&self) -> Value {
        let header = self.header();
        let mut value = json!({
            "kind": self.name(),
            "pid": header.tgid,
            "tid": header.pid,
            "uid": header.uid,
            "cgroup_id": header.cgroup_id,
            "ktime_ns": header.ktime_ns,
            "result": errno_name(header.result),
            "verdict": verdict_name(header.verdict),
            "source": source_name(header.source),
        });
        let fields = match self {
            Event::Exec { filename, argv, aka, .. } => {
                let mut fields = json!({ "path": filename, "argv": argv });
                if !aka.is_empty() {
                    fields["aka"] = json!(aka);
                }
                fields
            }
            Event::Open { flags, dev, ino, path, aka, .. } => {
                let mut fields = json!({ "path": path, "flags": flags });
                if !aka.is_empty() {
                    fields["aka"] = json!(aka);
                }
                if *ino != 0 {
                    fields["dev"] = json!(dev);
                    fields["ino"] = json!(ino);
                }
                fields
            }
            Event::Cwd { path, .. } => json!({ "path": path }),
            Event::Fs { path, path2, aka, .. } => {
                let mut fields = json!({ "path": path });
                if !path2.is_empty() {
                    fields["path2"] = json!(path2);
                }
                if !aka.is_empty() {
                    fields["aka"] = json!(aka);
                }
                fields
            }
            Event::Net { family, port, sock_type, addr, path, .. } => {
                let mut fields = json!({
                    "family": family_name(*family),
                    "addr": addr.map(|addr| addr.to_string()),
                    "port": port,
                    "type": match i32::from(*sock_type) { libc::SOCK_STREAM => "stream", libc::SOCK_DGRAM => "dgram", 0 => "unknown", _ => "other" },
                });
                if !path.is_empty() {
                    fields["path"] = json!(path);
                }
                fields
            }
        };
        if let (Some(object), Value::Object(extra)) = (value.as_object_mut(), fields) {
            object.extend(extra);
        }
        value
    }
}

/// Whether the operation was refused: a permission error (Landlock, seccomp, the socket
/// hooks, LSM) or a probe's verdict. Other errors (ENOENT from a PATH search, say) are not
/// the sandbox's doing.
pub fn refused(header: &EventHeader) -> bool {
    header.result == -libc::EACCES || header.result == -libc::EPERM || header.verdict == verdict::DENIED
}

pub fn kind_name(kind: u32) -> &'static str {
    match kind {
        kind::EXEC => "exec",
        kind::EXECED => "execed",
        kind::CWD => "cwd",
        kind::OPEN => "open",
        kind::CONNECT => "connect",
        kind::SENDMSG => "sendmsg",
        kind::LISTEN => "listen",
        _ => "unknown",
    }
}

/// The operation of a `kind::FS` event, by x86-64 syscall number; the `*at` forms are
/// named after the plain ones.
pub fn fs_op_name(syscall: u32) -> &'static str {
    match syscall {
        76 => "truncate",
        82 | 264 | 316 => "rename",
        83 | 258 => "mkdir",
        84 => "rmdir",
        86 | 265 => "link",
        87 | 263 => "unlink",
        88 | 266 => "symlink",
        90 | 268 | 452 => "chmod",
        92 | 94 | 260 => "chown",
        133 | 259 => "mknod",
        _ => "fs",
    }
}

/// Every name `fs_op_name` gives, for `--kind`.
pub const FS_OPS: [&str; 10] =
    ["truncate", "rename", "mkdir", "rmdir", "link", "unlink", "symlink", "chmod", "chown", "mknod"];

pub fn verdict_name(verdict: u16) -> &'static str {
    match verdict {
        verdict::OBSERVED => "observed",
        verdict::ALLOWED => "allowed",
        verdict::DENIED => "denied",
        verdict::WOULD_DENY => "would-deny",
        verdict::STOPPED => "stopped",
        _ => "unknown",
    }
}

pub fn source_name(source: u16) -> &'static str {
    match source {
        source::TRACEPOINT => "tracepoint",
        source::LSM => "lsm",
        source::FENTRY => "fentry",
        source::CGROUP_SOCK_ADDR => "cgroup-sock-addr",
        source::LANDLOCK_AUDIT => "landlock-audit",
        source::FANOTIFY => "fanotify",
        source::SYSCALL_AUDIT => "syscall-audit",
        source::CGROUP_SKB => "cgroup-skb",
        _ => "unknown",
    }
}

fn family_name(family: u16) -> &'static str {
    match i32::from(family) {
        libc::AF_UNIX => "unix",
        libc::AF_INET => "inet",
        libc::AF_INET6 => "inet6",
        libc::AF_NETLINK => "netlink",
        _ => "other",
    }
}

/// `0` -> "ok", `-13` -> "EACCES".
pub fn errno_name(result: i32) -> String {
    if result >= 0 {
        return "ok".into();
    }
    // The kernel's own restart codes (include/linux/errno.h): a syscall interrupted by a
    // signal or by the cgroup freezer, seen at its exit before it is restarted.
    match -result {
        512 => return "ERESTARTSYS".into(),
        513 => return "ERESTARTNOINTR".into(),
        514 => return "ERESTARTNOHAND".into(),
        516 => return "ERESTART_RESTARTBLOCK".into(),
        _ => {}
    }
    let errno = nix::errno::Errno::from_raw(-result);
    match errno {
        nix::errno::Errno::UnknownErrno => format!("errno{}", -result),
        known => format!("{known:?}"),
    }
}

/// Where decoded events go. The policy engine is one; `--trace` is another.
pub trait Sink {
    fn event(&mut self, event: &Event);
    /// The events drained together, in order. A sink may decide on them at once and keep
    /// the rest of its work for `write_pending`.
    fn events(&mut self, batch: Vec<Event>) {
        for event in &batch {
            self.event(event);
        }
    }
    /// Does up to `max` items of the work `events` left; returns whether any is left.
    fn write_pending(&mut self, _max: usize) -> bool {
        false
    }
    /// Events the kernel could not deliver since the last call (ring buffer full).
    fn lost(&mut self, count: u64);
    /// A record that did not decode.
    fn undecodable(&mut self, error: &DecodeError);
    /// `count` of the dropped events were the agent's in cgroup `cgroup_id` (reported after
    /// `lost`, which has the total).
    fn lost_in(&mut self, _cgroup_id: u64, _count: u64) {}
    /// Called on every tick of the event loop (every 10 ms), events or not.
    fn tick(&mut self) {}
    /// The next batch holds an exec the kernel stopped (`verdict::STOPPED`): what a
    /// userspace source has of the time before it is delivered first (`supervise::catch_up`).
    fn catch_up(&mut self) {}
}

/// `--trace`: one JSON object per line on stderr.
pub struct TraceSink;

impl Sink for TraceSink {
    fn event(&mut self, event: &Event) {
        say!("{}", crate::output::json_text(event.to_json().to_string()));
    }

    fn lost(&mut self, count: u64) {
        say!("{}", json!({ "kind": "lost", "count": count }));
    }

    fn undecodable(&mut self, error: &DecodeError) {
        say!("{}", json!({ "kind": "undecodable", "error": error.to_string() }));
    }
}

/// Counts what passed, for the summary and the tests.
#[derive(Debug, Default)]
pub struct Tally {
    pub events: u64,
    pub lost: u64,
    pub undecodable: u64,
}

impl Sink for Tally {
    fn event(&mut self, _event: &Event) {
        self.events += 1;
    }

    fn lost(&mut self, count: u64) {
        self.lost += count;
    }

    fn undecodable(&mut self, _error: &DecodeError) {
        self.undecodable += 1;
    }
}

#[cfg(test)]
mod tests {
    use governor_common::{ARG_LEN, ARGS, PATH_LEN};

    use super::*;

    fn bytes<T>(value: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain-old-data event.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    fn header(kind: u32, result: i32) -> EventHeader {
        EventHeader {
            kind,
            result,
            ktime_ns: 5,
            pid: 11,
            tgid: 10,
            uid: 0,
            verdict: verdict::OBSERVED,
            source: source::TRACEPOINT,
            cgroup_id: 99,
        }
    }

    fn fixed<const N: usize>(text: &str) -> [u8; N] {
        let mut buffer = [0u8; N];
        buffer[..text.len()].copy_from_slice(text.as_bytes());
        buffer
    }

    #[test]
    fn open_events_decode_with_path_and_errno() {
        let event = OpenEvent {
            header: header(kind::OPEN, -libc::EACCES),
            flags: 0,
            dirfd: -100,
            dev: 0,
            ino: 0,
            path: fixed::<PATH_LEN>("/home/ann/.ssh/id_ed25519"),
        };
        let decoded = decode(&bytes(&event));
        let Ok(Event::Open { path, header, .. }) = &decoded else { panic!("{decoded:?}") };
        assert_eq!(path, "/home/ann/.ssh/id_ed25519");
        assert_eq!(header.tgid, 10);
        let json = decoded.map(|event| event.to_json()).unwrap_or_default();
        assert_eq!(json["result"], "EACCES");
        assert_eq!(json["kind"], "open");
        assert_eq!(json["pid"], 10);
    }

    #[test]
    fn exec_events_carry_argv_until_the_first_empty_one() {
        let mut argv = [[0u8; ARG_LEN]; ARGS];
        argv[0] = fixed::<ARG_LEN>("sh");
        argv[1] = fixed::<ARG_LEN>("-c");
        let event = ExecEvent {
            header: header(kind::EXEC, 0),
            dev: 0,
            ino: 0,
            size: 0,
            filename: fixed::<PATH_LEN>("/bin/sh"),
            argv,
        };
        assert_eq!(
            decode(&bytes(&event)).ok(),
            Some(Event::Exec {
                header: header(kind::EXEC, 0),
                filename: "/bin/sh".into(),
                argv: vec!["sh".into(), "-c".into()],
                file: None,
                aka: Vec::new(),
            })
        );
    }

    #[test]
    fn net_events_decode_both_families() {
        let mut event = NetEvent {
            header: header(kind::CONNECT, 0),
            family: libc::AF_INET as u16,
            port: 443,
            ..NetEvent::default()
        };
        event.addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        let decoded = decode(&bytes(&event)).map(|event| event.to_json()).unwrap_or_default();
        assert_eq!((decoded["addr"].as_str(), decoded["port"].as_u64()), (Some("127.0.0.1"), Some(443)));
        event.family = libc::AF_INET6 as u16;
        event.addr = Ipv6Addr::LOCALHOST.octets();
        let decoded = decode(&bytes(&event)).map(|event| event.to_json()).unwrap_or_default();
        assert_eq!(decoded["addr"], "::1");
    }

    #[test]
    fn malformed_records_are_errors_not_panics() {
        assert_eq!(decode(&[1, 2, 3]), Err(DecodeError::Short { len: 3 }));
        let open = bytes(&header(kind::OPEN, 0));
        assert!(matches!(decode(&open), Err(DecodeError::Size { kind: kind::OPEN, .. })));
        assert_eq!(decode(&bytes(&header(77, 0))), Err(DecodeError::Kind(77)));
    }

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(0), "ok");
        assert_eq!(errno_name(-libc::EPERM), "EPERM");
        assert_eq!(errno_name(-libc::ENOENT), "ENOENT");
        // A syscall the freezer interrupted, as a frozen agent's last events show it.
        assert_eq!(errno_name(-512), "ERESTARTSYS");
        assert_eq!(errno_name(-4095), "errno4095");
    }
}
