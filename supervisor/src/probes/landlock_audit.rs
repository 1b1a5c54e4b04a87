//! Landlock's own audit records (Linux 6.15+, Landlock ABI 7): what Landlock refused an
//! agent, read from the kernel's audit multicast group, without a syscall tracepoint.
//!
//! The agent's domain is created with `LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON` (governor
//! restricts itself before `exec`, and by default only denials before the next exec are
//! logged). Each denial is a `LANDLOCK_ACCESS` record (`domain=ID blockers=fs.read_file
//! path="/etc/shadow" dev="vda" ino=1196049`); the first one of a domain is followed by a
//! `LANDLOCK_DOMAIN` record naming the process that created it (`pid=`): the agent's first
//! process, which is how a domain is tied to its agent (security/landlock/audit.c).
//!
//! The records exist only while audit is enabled (`audit_enabled`): governor enables it and
//! leaves it enabled (another governor may be reading). Enabling it sets
//! `audit_ever_enabled` for good, and from then on every task forked gets a syscall audit
//! context and the kernel's slow syscall path unless the task filter says `never`
//! (kernel/auditsc.c `audit_alloc`): the `never,task` rule goes in before audit is
//! enabled, and stays when governor leaves (taking it out would tax every later task of
//! the machine). Without syscall contexts the access records carry no pid of their own:
//! an event is the agent's, reported with the pid of the agent's first process.
//!
//! With no audit daemon registered, kauditd also prints each record to the kernel log
//! (rate-limited), as the kernel does for every record it cannot hand to auditd.

use std::{
    collections::HashMap,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use governor_common::{EventHeader, kind, source, verdict};

use super::events::Event;

/// include/uapi/linux/audit.h
const AUDIT_GET: u16 = 1000;
const AUDIT_SET: u16 = 1001;
const AUDIT_ADD_RULE: u16 = 1011;
const AUDIT_DEL_RULE: u16 = 1012;
const AUDIT_LIST_RULES: u16 = 1013;
/// A message of a program to the audit log (`AUDIT_USER`, include/uapi/linux/audit.h).
const AUDIT_USER: u16 = 1005;
const AUDIT_SYSCALL: u16 = 1300;
const AUDIT_PATH: u16 = 1302;
const AUDIT_SOCKADDR: u16 = 1306;
const AUDIT_EXECVE: u16 = 1309;
const AUDIT_CWD: u16 = 1307;
const AUDIT_EOE: u16 = 1320;
const AUDIT_LANDLOCK_ACCESS: u16 = 1423;
const AUDIT_LANDLOCK_DOMAIN: u16 = 1424;
const AUDIT_FILTER_EXIT: u32 = 0x04;
const AUDIT_ALWAYS: u32 = 2;
const AUDIT_ARCH: u32 = 11;
const AUDIT_SESSIONID: u32 = 25;
const AUDIT_EXIT: u32 = 103;
const AUDIT_LOGINUID: u32 = 9;
const AUDIT_EQUAL: u32 = 0x4000_0000;
const AUDIT_NOT_EQUAL: u32 = 0x3000_0000;
/// The login uid of agents' processes (`Session`): the `never` task rule spares them, so
/// that they, and no other task, get syscall audit contexts. The operator is in governor's
/// own records (`agents.user`).
pub const AGENT_AUID: u32 = 0x7FFF_FFFE;
const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
/// The x86-64 syscalls whose refusals (EACCES, EPERM) an agent's session records: those
/// that open, execute, change the filesystem or connect.
const REFUSED_SYSCALLS: [u32; 22] =
    [2, 257, 437, 85, 59, 322, 83, 258, 84, 87, 263, 82, 264, 316, 86, 265, 88, 266, 76, 133, 259, 42];
/// The syscalls an agent's session records whatever their result: execs (with their
/// arguments, which `sched_process_exec` does not have) and connects (a UNIX one has no
/// socket hook).
const EVERY_SYSCALL: [u32; 3] = [59, 322, 42];
const AUDIT_STATUS_ENABLED: u32 = 1;
const AUDIT_STATUS_BACKLOG_LIMIT: u32 = 0x10;
/// The backlog auditd's own rules ask for (`-b 8192`); the kernel's default of 64 drops
/// records in a burst of refusals (Landlock logs with GFP_ATOMIC and does not wait).
const BACKLOG: u32 = 8192;
const AUDIT_FILTER_TASK: u32 = 0x01;
const AUDIT_NEVER: u32 = 0;
const AUDIT_BITMASK_SIZE: usize = 64;
const AUDIT_MAX_FIELDS: usize = 64;
/// The read-only multicast group (needs CAP_AUDIT_READ).
const AUDIT_NLGRP_READLOG: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("audit netlink socket: {0}")]
    Socket(std::io::Error),
    #[error("audit netlink {what}: {errno}")]
    Request { what: &'static str, errno: nix::errno::Errno },
}

/// `struct audit_status` (the fields up to `backlog_wait_time_actual`).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct AuditStatus {
    mask: u32,
    enabled: u32,
    failure: u32,
    pid: u32,
    rate_limit: u32,
    backlog_limit: u32,
    lost: u32,
    backlog: u32,
    feature_bitmap: u32,
    backlog_wait_time: u32,
    backlog_wait_time_actual: u32,
}

/// `struct audit_rule_data` without its trailing buffer.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
struct AuditRuleData {
    flags: u32,
    action: u32,
    field_count: u32,
    mask: [u32; AUDIT_BITMASK_SIZE],
    fields: [u32; AUDIT_MAX_FIELDS],
    values: [u32; AUDIT_MAX_FIELDS],
    fieldflags: [u32; AUDIT_MAX_FIELDS],
    buflen: u32,
}

/// The reader of Landlock's audit records, and which agent each domain is.
pub struct AuditLog {
    /// Bound to the read-only multicast group; non-blocking.
    group: OwnedFd,
    /// The kernel's count of records it could not queue, when last read.
    lost: u32,
    /// When `lost` was last read.
    lost_read: std::time::Instant,
    /// The first process of each watched agent, with its cgroup id.
    agents: HashMap<u32, u64>,
    /// Landlock domain id to (cgroup id, first pid), from `LANDLOCK_DOMAIN` records.
    domains: HashMap<u64, (u64, u32)>,
    /// Access records of domains whose `LANDLOCK_DOMAIN` record has not been read yet.
    pending: Vec<(u64, Denial)>,
    /// Records read so far.
    received: u64,
    /// Audit session id to cgroup id, for agents whose tasks have syscall audit contexts.
    sessions: HashMap<u32, u64>,
    /// Records of one event (one serial), until its end-of-event record.
    groups: HashMap<u64, Group>,
    /// Serials whose Landlock records were reported without their syscall's records: those
    /// arriving later are not reported again.
    given_up: std::collections::HashSet<u64>,
    /// Markers logged ([`AuditLog::mark`]), and the last one read back.
    marks_sent: u64,
    marks_seen: u64,
}

/// The records of one audit event: a syscall of an agent's session, or a Landlock record
/// logged outside a syscall context (a group of its own, never ended).
#[derive(Default)]
struct Group {
    syscall: Option<String>,
    paths: Vec<String>,
    cwd: Option<String>,
    sockaddr: Option<String>,
    /// The `EXECVE` records: an exec's arguments (long ones span several records).
    execve: Option<String>,
    accesses: Vec<(u64, Denial)>,
    ended: bool,
    /// Drains it has waited through unended.
    waited: u8,
}

/// An agent's audit session. `governor run` sets its own loginuid to `AGENT_AUID`, which
/// gives it a new session id; the agent's processes, forked after, inherit both. The
/// `never` task rule spares that login uid, so the agent's tasks get syscall audit contexts
/// (a task rule can only refuse a context or record every syscall: a context that records
/// only what the exit rules ask for is what a task gets when no task rule matches), and the
/// session's exit rules record each open, exec, filesystem and connect syscall refused with
/// EACCES or EPERM. So refusals that Landlock does not make (a file's mode) are recorded
/// too, and every record names the process. Only the agent's tasks take the slow syscall
/// path; the rules are deleted when the run ends.
pub struct Session {
    pub id: u32,
    /// `governor run`'s own login uid before, put back once the agent is forked
    /// (`restore`): the threads governor starts afterwards stay out of the session.
    previous: String,
}

impl Session {
    /// In `governor run`, before the fork. Needs CAP_AUDIT_CONTROL, and fails where the
    /// loginuid is immutable once set.
    pub fn start() -> Result<Session, Error> {
        let sys = |what: &'static str| {
            move |error: std::io::Error| Error::Request {
                what,
                errno: nix::errno::Errno::from_raw(error.raw_os_error().unwrap_or(libc::EIO)),
            }
        };
        // Session rules an earlier governor left behind go first (best effort: this run's own
        // do not depend on it).
        sweep_stale_sessions();
        let previous = std::fs::read_to_string("/proc/self/loginuid").map_err(sys("reading the loginuid"))?;
        std::fs::write("/proc/self/loginuid", AGENT_AUID.to_string()).map_err(sys("setting the loginuid"))?;
        let id = std::fs::read_to_string("/proc/self/sessionid").map_err(sys("reading the session id"))?;
        let id: u32 = id
            .trim()
            .parse()
            .map_err(|_| Error::Request { what: "reading the session id", errno: nix::errno::Errno::EINVAL })?;
        install_agent_rules()?;
        Ok(Session { id, previous: previous.trim().to_owned() })
    }

    /// In `governor run` once the agent is forked: its own login uid back as it was (a new
    /// session of its own), so that the threads it starts get no syscall audit context.
    pub fn restore(&self) {
        let _ = std::fs::write("/proc/self/loginuid", &self.previous);
    }
}

/// A rule of `list` with `fields` compared for equality, no syscall in its mask.
fn rule(list: u32, action: u32, fields: &[(u32, u32)]) -> AuditRuleData {
    let mut rule = AuditRuleData {
        flags: list,
        action,
        field_count: fields.len() as u32,
        mask: [0; AUDIT_BITMASK_SIZE],
        fields: [0; AUDIT_MAX_FIELDS],
        values: [0; AUDIT_MAX_FIELDS],
        fieldflags: [0; AUDIT_MAX_FIELDS],
        buflen: 0,
    };
    for (index, (field, value)) in fields.iter().enumerate() {
        rule.fields[index] = *field;
        rule.values[index] = *value;
        rule.fieldflags[index] = AUDIT_EQUAL;
    }
    rule
}

fn netlink_socket() -> Result<OwnedFd, Error> {
    // SAFETY: socket(2) with constant arguments.
    let fd = unsafe {
        libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, libc::NETLINK_AUDIT)
    };
    if fd < 0 {
        return Err(Error::Socket(std::io::Error::last_os_error()));
    }
    // SAFETY: a descriptor just returned by socket(2), owned from here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends one audit request on a blocking socket of its own (the kernel answers a request on
/// the socket it came from), which is returned for the answer.
fn send<T: Copy>(what: &'static str, kind: u16, payload: &T) -> Result<OwnedFd, Error> {
    // SAFETY: socket(2) with constant arguments.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_AUDIT) };
    if fd < 0 {
        return Err(Error::Socket(std::io::Error::last_os_error()));
    }
    // SAFETY: as above.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let header = size_of::<libc::nlmsghdr>();
    let mut message = vec![0u8; header + size_of::<T>()];
    let nlmsghdr = libc::nlmsghdr {
        nlmsg_len: message.len() as u32,
        nlmsg_type: kind,
        nlmsg_flags: (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16,
        nlmsg_seq: 1,
        nlmsg_pid: 0,
    };
    // SAFETY: both are plain-old-data, copied into a buffer of their combined size.
    unsafe {
        std::ptr::copy_nonoverlapping((&raw const nlmsghdr).cast::<u8>(), message.as_mut_ptr(), header);
        std::ptr::copy_nonoverlapping(
            (payload as *const T).cast::<u8>(),
            message.as_mut_ptr().add(header),
            size_of::<T>(),
        );
    }
    // SAFETY: a zeroed sockaddr_nl is the kernel's address.
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: sendto(2) with a buffer and address of the lengths given.
    let sent = unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            message.as_ptr().cast(),
            message.len(),
            0,
            (&raw const kernel).cast(),
            size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if sent < 0 {
        return Err(Error::Request { what, errno: nix::errno::Errno::last() });
    }
    Ok(socket)
}

/// Sends one audit request and waits for its acknowledgement (or, for `AUDIT_GET`, the
/// status); returns the status for `AUDIT_GET`.
fn request<T: Copy>(what: &'static str, kind: u16, payload: &T) -> Result<Option<AuditStatus>, Error> {
    let socket = send(what, kind, payload)?;
    let mut status = None;
    let mut buffer = vec![0u8; 8192];
    loop {
        // SAFETY: recv(2) into a buffer of the length given.
        let len = unsafe { libc::recv(socket.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len(), 0) };
        if len < 0 {
            return Err(Error::Request { what, errno: nix::errno::Errno::last() });
        }
        for (kind, body) in messages(&buffer[..len as usize]) {
            if kind == libc::NLMSG_ERROR as u16 {
                let code =
                    body.get(..4).map_or(0, |bytes| i32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]));
                if code != 0 {
                    return Err(Error::Request { what, errno: nix::errno::Errno::from_raw(-code) });
                }
                if kind != AUDIT_GET || status.is_some() {
                    return Ok(status);
                }
            } else if kind == AUDIT_GET && body.len() >= size_of::<AuditStatus>() {
                // SAFETY: length checked; AuditStatus is plain-old-data.
                status = Some(unsafe { std::ptr::read_unaligned(body.as_ptr().cast::<AuditStatus>()) });
                return Ok(status);
            }
        }
    }
}

/// The audit rules in the kernel, those without a string field (every rule governor adds
/// has none; the others are left out).
fn list_rules() -> Result<Vec<AuditRuleData>, Error> {
    let what = "listing the audit rules";
    let socket = send(what, AUDIT_LIST_RULES, &())?;
    let mut rules = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: recv(2) into a buffer of the length given.
        let len = unsafe { libc::recv(socket.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len(), 0) };
        if len < 0 {
            return Err(Error::Request { what, errno: nix::errno::Errno::last() });
        }
        for (kind, body) in messages(&buffer[..len as usize]) {
            match kind {
                AUDIT_LIST_RULES if body.len() >= size_of::<AuditRuleData>() => {
                    // SAFETY: length checked; AuditRuleData is plain-old-data.
                    let rule = unsafe { std::ptr::read_unaligned(body.as_ptr().cast::<AuditRuleData>()) };
                    if rule.buflen == 0 {
                        rules.push(rule);
                    }
                }
                kind if kind == libc::NLMSG_DONE as u16 => return Ok(rules),
                kind if kind == libc::NLMSG_ERROR as u16 => {
                    let code =
                        body.get(..4).map_or(0, |bytes| i32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]));
                    if code != 0 {
                        return Err(Error::Request { what, errno: nix::errno::Errno::from_raw(-code) });
                    }
                }
                _ => {}
            }
        }
    }
}

/// A rule's syscall mask with `syscalls` in it.
fn syscall_mask(syscalls: &[u32]) -> [u32; AUDIT_BITMASK_SIZE] {
    let mut mask = [0u32; AUDIT_BITMASK_SIZE];
    for &syscall in syscalls {
        mask[syscall as usize / 32] |= 1 << (syscall % 32);
    }
    mask
}

/// The session a rule of governor's names (an exit rule on `AUDIT_SESSIONID` and the arch,
/// with one of the masks `Session::start` puts in), if it is one.
fn session_of(rule: &AuditRuleData) -> Option<u32> {
    if rule.flags != AUDIT_FILTER_EXIT || rule.action != AUDIT_ALWAYS {
        return None;
    }
    if rule.mask != syscall_mask(&EVERY_SYSCALL) && rule.mask != syscall_mask(&REFUSED_SYSCALLS) {
        return None;
    }
    let count = (rule.field_count as usize).min(AUDIT_MAX_FIELDS);
    let field =
        |name: u32| (0..count).find(|&index| rule.fields[index] == name && rule.fieldflags[index] == AUDIT_EQUAL);
    field(AUDIT_ARCH)?;
    field(AUDIT_SESSIONID).map(|index| rule.values[index])
}

/// The audit sessions some process is in now.
fn live_sessions() -> std::collections::HashSet<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Default::default() };
    entries
        .flatten()
        .filter(|entry| entry.file_name().as_encoded_bytes().iter().all(u8::is_ascii_digit))
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("sessionid")).ok())
        .filter_map(|id| id.trim().parse().ok())
        .collect()
}

/// The exit rules of agents' tasks (`-F auid=AGENT_AUID`): every exec and connect, and the
/// open, exec, filesystem and connect syscalls refused with EACCES or EPERM. They are put in
/// once and stay: a rule of a login uid no task has matches nothing, while deleting a rule
/// waits in the kernel for an RCU grace period (10 to 20 ms each here), which every run then
/// paid on its way out, and the next run's start behind it (an earlier governor keyed them
/// by session and deleted them at each run's end).
fn agent_rules() -> [AuditRuleData; 3] {
    let agents = [(AUDIT_ARCH, AUDIT_ARCH_X86_64), (AUDIT_LOGINUID, AGENT_AUID)];
    let mut every = rule(AUDIT_FILTER_EXIT, AUDIT_ALWAYS, &agents);
    every.mask = syscall_mask(&EVERY_SYSCALL);
    let refused = |errno: i32| {
        let mut exit = rule(AUDIT_FILTER_EXIT, AUDIT_ALWAYS, &[agents[0], agents[1], (AUDIT_EXIT, (-errno) as u32)]);
        exit.mask = syscall_mask(&REFUSED_SYSCALLS);
        exit
    };
    [every, refused(libc::EACCES), refused(libc::EPERM)]
}

/// Puts the agents' exit rules in, where they are not yet.
fn install_agent_rules() -> Result<(), Error> {
    for rule in agent_rules() {
        match request("adding the agents' exit rule", AUDIT_ADD_RULE, &rule) {
            Ok(_) | Err(Error::Request { errno: nix::errno::Errno::EEXIST, .. }) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Whether the agents' exit rules are all in the kernel (`governor check`).
pub fn agent_rules_installed() -> Result<bool, Error> {
    let installed = list_rules()?;
    // The same list, action, syscalls and fields (the kernel hands back what it was given).
    let same = |a: &AuditRuleData, b: &AuditRuleData| {
        let count = (a.field_count as usize).min(AUDIT_MAX_FIELDS);
        (a.flags, a.action, a.field_count, a.mask) == (b.flags, b.action, b.field_count, b.mask)
            && a.fields[..count] == b.fields[..count]
            && a.values[..count] == b.values[..count]
            && a.fieldflags[..count] == b.fieldflags[..count]
    };
    Ok(agent_rules().iter().all(|wanted| installed.iter().any(|rule| same(rule, wanted))))
}

/// The agent sessions whose rules are in the kernel, once each, and whether a process is in
/// each now.
pub fn session_rules() -> Result<Vec<(u32, bool)>, Error> {
    let live = live_sessions();
    let mut sessions: Vec<u32> = list_rules()?.iter().filter_map(session_of).collect();
    sessions.sort_unstable();
    sessions.dedup();
    Ok(sessions.into_iter().map(|session| (session, live.contains(&session))).collect())
}

/// Deletes the rules of agent sessions no process is in any more: a `governor run` killed
/// with SIGKILL (or by the OOM killer) never deleted its own. Such rules match no task, but
/// every agent's syscalls would be checked against them. Returns how many went.
pub fn sweep_stale_sessions() -> usize {
    let Ok(rules) = list_rules() else { return 0 };
    let sessions: Vec<(&AuditRuleData, u32)> =
        rules.iter().filter_map(|rule| session_of(rule).map(|session| (rule, session))).collect();
    // No agent session's rules: no walk of /proc.
    if sessions.is_empty() {
        return 0;
    }
    let live = live_sessions();
    sessions
        .into_iter()
        .filter(|(_, session)| !live.contains(session))
        .filter(|(rule, _)| request("deleting a stale session rule", AUDIT_DEL_RULE, *rule).is_ok())
        .count()
}

/// The netlink messages in `buffer`: (type, payload).
fn messages(buffer: &[u8]) -> Vec<(u16, &[u8])> {
    let header = size_of::<libc::nlmsghdr>();
    let mut out = Vec::new();
    let mut offset = 0;
    while offset + header <= buffer.len() {
        // SAFETY: at least a header's length remains; nlmsghdr is plain-old-data.
        let nlmsghdr = unsafe { std::ptr::read_unaligned(buffer[offset..].as_ptr().cast::<libc::nlmsghdr>()) };
        let len = nlmsghdr.nlmsg_len as usize;
        if len < header || offset + len > buffer.len() {
            // Audit multicast records carry the payload's length only; take what is there.
            out.push((nlmsghdr.nlmsg_type, &buffer[offset + header..]));
            break;
        }
        out.push((nlmsghdr.nlmsg_type, &buffer[offset + header..offset + len]));
        offset += (len + 3) & !3;
    }
    out
}

impl AuditLog {
    /// Puts the `never,task` rule in (if it is not), enables audit (if it is not) and joins
    /// the read-only multicast group.
    pub fn open() -> Result<AuditLog, Error> {
        // `never,task -F auid!=AGENT_AUID`: every task but an agent's. A plain `never,task`
        // rule (put in by an earlier governor) would match agents too: it goes once the new
        // one is in.
        let mut never = rule(AUDIT_FILTER_TASK, AUDIT_NEVER, &[(AUDIT_LOGINUID, AGENT_AUID)]);
        never.fieldflags[0] = AUDIT_NOT_EQUAL;
        never.mask = [u32::MAX; AUDIT_BITMASK_SIZE];
        match request("adding the never,task rule", AUDIT_ADD_RULE, &never) {
            Ok(_) | Err(Error::Request { errno: nix::errno::Errno::EEXIST, .. }) => {}
            Err(error) => return Err(error),
        }
        let mut plain = rule(AUDIT_FILTER_TASK, AUDIT_NEVER, &[]);
        plain.mask = [u32::MAX; AUDIT_BITMASK_SIZE];
        let _ = request("deleting the plain never,task rule", AUDIT_DEL_RULE, &plain);
        let group = netlink_socket()?;
        // SAFETY: a zeroed sockaddr_nl, then the group set.
        let mut address: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        address.nl_family = libc::AF_NETLINK as u16;
        address.nl_groups = 1 << (AUDIT_NLGRP_READLOG - 1);
        // SAFETY: bind(2) with an address of the length given.
        if unsafe { libc::bind(group.as_raw_fd(), (&raw const address).cast(), size_of::<libc::sockaddr_nl>() as u32) }
            != 0
        {
            return Err(Error::Request {
                what: "joining the read-only multicast group",
                errno: nix::errno::Errno::last(),
            });
        }
        let status = request("reading the status", AUDIT_GET, &AuditStatus::default())?.unwrap_or_default();
        // Audit stays enabled when governor goes: another governor may be reading, and
        // turning it off would silence it.
        if status.enabled == 0 {
            let set = AuditStatus { mask: AUDIT_STATUS_ENABLED, enabled: 1, ..AuditStatus::default() };
            request("enabling audit", AUDIT_SET, &set)?;
        }
        if status.backlog_limit < BACKLOG {
            let set =
                AuditStatus { mask: AUDIT_STATUS_BACKLOG_LIMIT, backlog_limit: BACKLOG, ..AuditStatus::default() };
            request("raising the backlog limit", AUDIT_SET, &set)?;
        }
        Ok(AuditLog {
            group,
            lost: status.lost,
            lost_read: std::time::Instant::now(),
            agents: HashMap::new(),
            domains: HashMap::new(),
            pending: Vec::new(),
            received: 0,
            sessions: HashMap::new(),
            groups: HashMap::new(),
            given_up: std::collections::HashSet::new(),
            marks_sent: 0,
            marks_seen: 0,
        })
    }

    /// Logs a marker of this process (an `AUDIT_USER` message) and returns its number.
    /// kauditd hands records on in the order they were logged, so once the marker is read
    /// back ([`AuditLog::wait_for`]), so is every record logged before it: an exited agent's
    /// last ones. None where the kernel refuses the message (outside the initial pid
    /// namespace, or without CAP_AUDIT_WRITE).
    pub fn mark(&mut self) -> Option<u64> {
        let number = self.marks_sent + 1;
        let text = marker(std::process::id(), number);
        let mut payload = [0u8; MARKER_LEN + 1];
        payload[..MARKER_LEN].copy_from_slice(text.as_bytes());
        request("logging a marker", AUDIT_USER, &payload).ok()?;
        self.marks_sent = number;
        Some(number)
    }

    /// After a drain, while waiting for marker `number` until `deadline`: where the wait
    /// stands. Once the marker is back, every event still waiting for more of its records
    /// is ended (no more are coming): the next [`AuditLog::drain`] reports them. Before it,
    /// this sleeps a little, for the caller to drain again.
    pub fn wait_for(&mut self, number: u64, deadline: std::time::Instant) -> Marker {
        if self.marks_seen >= number {
            for group in self.groups.values_mut() {
                group.waited = group.waited.max(3);
            }
            return Marker::Back;
        }
        if std::time::Instant::now() >= deadline {
            return Marker::Overdue;
        }
        std::thread::sleep(std::time::Duration::from_micros(100));
        Marker::Awaited
    }

    /// Records read so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Ties the Landlock domain that process `pid` creates (an agent's first process) to
    /// the agent in cgroup `cgroup_id`.
    pub fn watch(&mut self, pid: u32, cgroup_id: u64) {
        self.agents.insert(pid, cgroup_id);
    }

    /// The agent in cgroup `cgroup_id`, by what is known of it: the process that created its
    /// domain (`watch`), the audit session it runs in (`Session`).
    pub fn watch_agent(&mut self, first_pid: Option<u32>, session: Option<u32>, cgroup_id: u64) {
        if let Some(pid) = first_pid {
            self.watch(pid, cgroup_id);
        }
        if let Some(session) = session {
            self.sessions.insert(session, cgroup_id);
        }
    }

    pub fn unwatch(&mut self, cgroup_id: u64) {
        self.sessions.retain(|_, id| *id != cgroup_id);
        self.agents.retain(|_, id| *id != cgroup_id);
        self.domains.retain(|_, (id, _)| *id != cgroup_id);
    }

    /// The records that arrived, as events of the watched agents.
    pub fn drain(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        let mut buffer = vec![0u8; 9000];
        loop {
            // SAFETY: recv(2) into a buffer of the length given, non-blocking socket.
            let len = unsafe { libc::recv(self.group.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len(), 0) };
            if len <= 0 {
                break;
            }
            self.received += 1;
            for (kind, body) in messages(&buffer[..len as usize]) {
                let text = String::from_utf8_lossy(body);
                let text = text.trim_end_matches('\0');
                if kind == AUDIT_USER {
                    if let Some(number) = marker_in(text, std::process::id()) {
                        self.marks_seen = self.marks_seen.max(number);
                    }
                    continue;
                }
                if kind == AUDIT_LANDLOCK_DOMAIN {
                    if let Some((domain, pid)) = parse_domain(text)
                        && let Some(cgroup_id) = self.agents.get(&pid)
                    {
                        self.domains.insert(domain, (*cgroup_id, pid));
                    }
                    continue;
                }
                if !matches!(
                    kind,
                    AUDIT_LANDLOCK_ACCESS
                        | AUDIT_SYSCALL
                        | AUDIT_PATH
                        | AUDIT_CWD
                        | AUDIT_SOCKADDR
                        | AUDIT_EXECVE
                        | AUDIT_EOE
                ) {
                    continue;
                }
                let Some(serial) = serial(text) else { continue };
                let group = self.groups.entry(serial).or_default();
                match kind {
                    AUDIT_LANDLOCK_ACCESS => {
                        if let Some(access) = parse_access(text) {
                            group.accesses.push(access);
                        }
                    }
                    AUDIT_SYSCALL => group.syscall = Some(text.to_owned()),
                    AUDIT_PATH => group.paths.push(text.to_owned()),
                    AUDIT_CWD => group.cwd = field(text, "cwd").map(unquote),
                    AUDIT_SOCKADDR => group.sockaddr = field(text, "saddr").map(str::to_owned),
                    AUDIT_EXECVE => {
                        let joined = group.execve.get_or_insert_default();
                        joined.push(' ');
                        joined.push_str(text);
                    }
                    _ => group.ended = true,
                }
            }
        }
        // In the order the kernel numbered them: the order they happened.
        let mut serials: Vec<u64> = self.groups.keys().copied().collect();
        serials.sort_unstable();
        for serial in serials {
            let Some(group) = self.groups.get_mut(&serial) else { continue };
            // A Landlock record outside a syscall context has no end; one inside it may come
            // a drain or two before its syscall's records.
            let done = group.ended || group.waited >= 3;
            if !done {
                group.waited += 1;
                continue;
            }
            let Some(group) = self.groups.remove(&serial) else { continue };
            let agent = group.syscall.as_deref().and_then(|syscall| {
                let session: u32 = field(syscall, "ses")?.parse().ok()?;
                let cgroup_id = *self.sessions.get(&session)?;
                Some((cgroup_id, field(syscall, "pid")?.parse::<u32>().ok()?))
            });
            match agent {
                // Landlock's records say what it refused; the syscall record, who.
                Some((cgroup_id, pid)) if !group.accesses.is_empty() => {
                    events.extend(group.accesses.iter().filter_map(|(_, denial)| denial.event(cgroup_id, pid)));
                }
                Some(_) if self.given_up.remove(&serial) => {}
                Some((cgroup_id, pid)) => events.extend(group.syscall_event(cgroup_id, pid)),
                None => {
                    if !group.accesses.is_empty() {
                        if self.given_up.len() >= 4096 {
                            self.given_up.clear();
                        }
                        self.given_up.insert(serial);
                    }
                    self.pending.extend(group.accesses);
                }
            }
        }
        // The access record that allocates a domain comes before the domain's record.
        let pending = std::mem::take(&mut self.pending);
        for (domain, denial) in pending {
            match self.domains.get(&domain) {
                Some((cgroup_id, pid)) => events.extend(denial.event(*cgroup_id, *pid)),
                // Another process's domain (not an agent of this governor), or one whose
                // record is still to come: kept for one more drain at most.
                None if !denial.seen_once => self.pending.push((domain, Denial { seen_once: true, ..denial })),
                None => {}
            }
        }
        events
    }
}

impl AuditLog {
    /// Records the kernel could not queue since the last call (read at most every 100 ms):
    /// the kernel counts them for every process, so each is reported as possibly an
    /// agent's.
    pub fn lost(&mut self) -> u64 {
        if self.lost_read.elapsed() < std::time::Duration::from_millis(100) {
            return 0;
        }
        self.lost_read = std::time::Instant::now();
        let Ok(Some(status)) = request("reading the status", AUDIT_GET, &AuditStatus::default()) else { return 0 };
        let fresh = status.lost.wrapping_sub(self.lost);
        self.lost = status.lost;
        u64::from(fresh)
    }
}

/// Where a wait for a marker stands ([`AuditLog::wait_for`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker {
    /// Read back: drain once more, and every record logged before it is in.
    Back,
    /// Not yet: drain again.
    Awaited,
    /// Not back by the deadline: what is still to come is not waited for.
    Overdue,
}

/// The length of a marker's text: fixed, so that it goes as one plain-old-data payload with
/// its terminating NUL (a longer payload of NULs would be logged in hex).
const MARKER_LEN: usize = 46;

/// `governor-settle-PID-NUMBER`, zero-padded to [`MARKER_LEN`]; no space or quote, so the
/// kernel logs it as it is.
fn marker(pid: u32, number: u64) -> String {
    format!("governor-settle-{pid:010}-{number:019}")
}

/// The number of this process's marker in an `AUDIT_USER` record, if it is one. The
/// record's `pid` is the sender's, written by the kernel: another process (root's, or an
/// admin agent's, with CAP_AUDIT_WRITE) that logs the same text does not end a wait early.
fn marker_in(text: &str, pid: u32) -> Option<u64> {
    if field(text, "pid")?.parse::<u32>().ok()? != pid {
        return None;
    }
    let prefix = format!("governor-settle-{pid:010}-");
    let at = text.find(&prefix)? + prefix.len();
    text.get(at..at + 19)?.parse().ok()
}

/// One `LANDLOCK_ACCESS` record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    pub blockers: Vec<String>,
    pub path: String,
    pub ino: u64,
    /// `daddr`/`dest` of a refused TCP connect.
    pub dest: Option<(std::net::IpAddr, u16)>,
    seen_once: bool,
}

/// `audit(…): domain=15fb0c426 status=allocated mode=enforcing pid=27881 …` → (domain, pid).
pub fn parse_domain(text: &str) -> Option<(u64, u32)> {
    let domain = u64::from_str_radix(field(text, "domain")?, 16).ok()?;
    if field(text, "status")? != "allocated" {
        return None;
    }
    Some((domain, field(text, "pid")?.parse().ok()?))
}

/// `audit(…): domain=15fb0c426 blockers=fs.read_file path="/etc/shadow" dev="vda" ino=1196049`.
pub fn parse_access(text: &str) -> Option<(u64, Denial)> {
    let domain = u64::from_str_radix(field(text, "domain")?, 16).ok()?;
    let blockers = field(text, "blockers")?.split(',').map(str::to_owned).collect();
    let path = field(text, "path").or_else(|| field(text, "name")).map(unquote).unwrap_or_default();
    let ino = field(text, "ino").and_then(|ino| ino.parse().ok()).unwrap_or(0);
    let dest = match (field(text, "daddr"), field(text, "dest")) {
        (Some(addr), Some(port)) => Some((addr.parse().ok()?, port.parse().ok()?)),
        _ => None,
    };
    Some((domain, Denial { blockers, path, ino, dest, seen_once: false }))
}

/// The serial of a record's event: `audit(1796199359.399:103316): …` → 103316.
fn serial(text: &str) -> Option<u64> {
    let stamp = text.strip_prefix("audit(")?;
    let end = stamp.find(')')?;
    stamp[..end].split(':').nth(1)?.parse().ok()
}

impl Group {
    /// The event the tracepoint backend reports for the same syscall (`SYSCALL`, `CWD`,
    /// `PATH`, `SOCKADDR` and `EXECVE` records): a refusal, an exec, a UNIX connect. An inet
    /// connect is the socket hooks' or Landlock's to report: none.
    fn syscall_event(&self, cgroup_id: u64, pid: u32) -> Option<Event> {
        let syscall = self.syscall.as_deref()?;
        let number: u32 = field(syscall, "syscall")?.parse().ok()?;
        let exit: i32 = field(syscall, "exit")?.parse().ok()?;
        let arg = |name: &str| field(syscall, name).and_then(|value| u64::from_str_radix(value, 16).ok()).unwrap_or(0);
        let uid = field(syscall, "uid").and_then(|value| value.parse().ok()).unwrap_or(0);
        let header = |event_kind| observed(event_kind, exit, source::SYSCALL_AUDIT, pid, uid, cgroup_id);
        let items: Vec<(String, &str)> = self
            .paths
            .iter()
            .filter_map(|path| Some((field(path, "name").map(unquote)?, field(path, "nametype").unwrap_or(""))))
            .collect();
        let absolute = |name: &str, dirfd: i32| match &self.cwd {
            Some(cwd) if !name.starts_with('/') && dirfd == libc::AT_FDCWD => {
                format!("{}/{name}", cwd.trim_end_matches('/'))
            }
            _ => name.to_owned(),
        };
        let named = |nametype: &str| items.iter().find(|(_, kind)| *kind == nametype).map(|(name, _)| name.clone());
        let target = named("DELETE")
            .or_else(|| items.iter().find(|(_, kind)| *kind != "PARENT").map(|(name, _)| name.clone()))
            .or_else(|| items.first().map(|(name, _)| name.clone()))
            .unwrap_or_default();
        match number {
            2 | 257 | 437 | 85 => {
                let (dirfd, flags) = match number {
                    2 => (libc::AT_FDCWD, arg("a1") as u32),
                    257 => (arg("a0") as u32 as i32, arg("a2") as u32),
                    85 => (libc::AT_FDCWD, (libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC) as u32),
                    _ => (arg("a0") as u32 as i32, 0),
                };
                let path = absolute(&target, dirfd);
                let dirfd = if path.starts_with('/') { libc::AT_FDCWD } else { dirfd };
                Some(Event::Open { header: header(kind::OPEN), flags, dirfd, dev: 0, ino: 0, path, aka: Vec::new() })
            }
            59 | 322 => Some(Event::Exec {
                header: header(kind::EXEC),
                filename: absolute(&target, libc::AT_FDCWD),
                argv: self.execve.as_deref().map(arguments).unwrap_or_default(),
                file: None,
                aka: Vec::new(),
            }),
            42 => {
                let saddr = self.sockaddr.as_deref().unwrap_or("");
                let family = u16::from_str_radix(saddr.get(..4)?, 16).ok().map(u16::swap_bytes)?;
                (family == libc::AF_UNIX as u16).then(|| Event::Net {
                    header: header(kind::CONNECT),
                    family,
                    port: 0,
                    sock_type: 0,
                    addr: None,
                    path: sun_path(saddr.get(4..).unwrap_or_default()),
                })
            }
            _ if !REFUSED_SYSCALLS.contains(&number) => None,
            _ => Some(Event::Fs {
                header: header(kind::FS),
                syscall: number,
                dirfd: libc::AT_FDCWD,
                path: absolute(&target, libc::AT_FDCWD),
                dirfd2: libc::AT_FDCWD,
                path2: named("CREATE")
                    .filter(|name| *name != target)
                    .map_or_else(String::new, |name| absolute(&name, libc::AT_FDCWD)),
                aka: Vec::new(),
            }),
        }
    }
}

/// An `EXECVE` record's first arguments (`argc=3 a0="sh" a1="-c" a2=6563686F…`), as many
/// and as long as the tracepoint backend's exec events carry.
/// An argument longer than a record holds comes in pieces (`a1_len=9000 a1[0]=… a1[1]=…`,
/// each hex, across records): they are joined.
fn arguments(text: &str) -> Vec<String> {
    let argc: usize = field(text, "argc").and_then(|argc| argc.parse().ok()).unwrap_or(0);
    (0..argc.min(governor_common::ARGS))
        .map_while(|index| {
            field(text, &format!("a{index}")).map(unquote).or_else(|| {
                field(text, &format!("a{index}_len"))?;
                let pieces: String = (0..).map_while(|piece| field(text, &format!("a{index}[{piece}]"))).collect();
                Some(unquote(&pieces))
            })
        })
        .map(|arg| arg.chars().take(governor_common::ARG_LEN - 1).collect())
        .collect()
}

/// The value of ` name=` in an audit record (quoted values keep their quotes).
fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let start = text.find(&format!(" {name}=")).map(|at| at + name.len() + 2)?;
    let rest = &text[start..];
    if let Some(quoted) = rest.strip_prefix('"') {
        let end = quoted.find('"')?;
        return Some(&rest[..end + 2]);
    }
    Some(rest.split(' ').next().unwrap_or(rest))
}

/// A path as audit logs it: `"…"`, or hex when it has a space, a quote or a control
/// character (kernel/audit.c `audit_log_untrustedstring`).
fn unquote(value: &str) -> String {
    if let Some(inner) = value.strip_prefix('"').and_then(|value| value.strip_suffix('"')) {
        return inner.to_owned();
    }
    unhex(value).map_or_else(|| value.to_owned(), |bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// The bytes of audit's hex encoding, if `text` is hex.
fn unhex(text: &str) -> Option<Vec<u8>> {
    (0..text.len() / 2)
        .map(|index| text.get(index * 2..index * 2 + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok()))
        .collect()
}

/// The path of a UNIX socket address from a SOCKADDR record's hex after the family (up to
/// the first NUL: an abstract address, which starts with one, has none).
fn sun_path(hex: &str) -> String {
    let bytes = unhex(hex).unwrap_or_default();
    let end = bytes.iter().position(|byte| *byte == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// x86-64 syscall numbers `fs_op_name` names a refused change by.
fn fs_syscall(blocker: &str) -> Option<u32> {
    Some(match blocker {
        "fs.make_dir" => 83,
        "fs.remove_dir" => 84,
        "fs.remove_file" => 87,
        "fs.make_sym" => 88,
        "fs.make_char" | "fs.make_block" | "fs.make_sock" | "fs.make_fifo" => 133,
        "fs.refer" => 82,
        _ => return None,
    })
}

impl Denial {
    /// The event the tracepoint backend reports for the same refusal: an open, an exec, a
    /// change of the filesystem or a connect, refused with `EACCES`.
    pub fn event(&self, cgroup_id: u64, pid: u32) -> Option<Event> {
        let is = |name: &str| self.blockers.iter().any(|blocker| blocker == name);
        // Scopes (signals, abstract sockets), a device's ioctl (bash asks /dev/null whether
        // it is a terminal) and the rest are no open, exec, change of the filesystem or
        // connect: the tracepoint backend reports none of them.
        let reported = |blocker: &String| {
            (blocker.starts_with("fs.") && blocker != "fs.ioctl_dev") || blocker == "net.connect_tcp"
        };
        if !self.blockers.iter().any(reported) {
            return None;
        }
        let header = |event_kind| observed(event_kind, -libc::EACCES, source::LANDLOCK_AUDIT, pid, 0, cgroup_id);
        if is("net.connect_tcp") {
            let (addr, port) = self.dest.map_or((None, 0), |(addr, port)| (Some(addr), port));
            let family = match addr {
                Some(std::net::IpAddr::V6(_)) => libc::AF_INET6,
                _ => libc::AF_INET,
            } as u16;
            return Some(Event::Net {
                header: header(kind::CONNECT),
                family,
                port,
                sock_type: libc::SOCK_STREAM as u16,
                addr,
                path: String::new(),
            });
        }
        if is("fs.execute") {
            return Some(Event::Exec {
                header: header(kind::EXEC),
                filename: self.path.clone(),
                argv: Vec::new(),
                file: None,
                aka: Vec::new(),
            });
        }
        if let Some(syscall) = self.blockers.iter().find_map(|blocker| fs_syscall(blocker)) {
            return Some(Event::Fs {
                header: header(kind::FS),
                syscall,
                dirfd: libc::AT_FDCWD,
                path: self.path.clone(),
                dirfd2: libc::AT_FDCWD,
                path2: String::new(),
                aka: Vec::new(),
            });
        }
        let write = is("fs.write_file") || is("fs.truncate") || is("fs.make_reg");
        let flags = if write { libc::O_WRONLY as u32 } else { libc::O_RDONLY as u32 };
        Some(Event::Open {
            header: header(kind::OPEN),
            flags,
            dirfd: libc::AT_FDCWD,
            dev: 0,
            ino: self.ino,
            path: self.path.clone(),
            aka: Vec::new(),
        })
    }
}

/// The header of an event read in userspace: observed now, by process `pid` (its threads
/// are not told apart), from `source`.
pub(crate) fn observed(kind: u32, result: i32, source: u16, pid: u32, uid: u32, cgroup_id: u64) -> EventHeader {
    EventHeader {
        kind,
        result,
        ktime_ns: ktime_ns(),
        pid,
        tgid: pid,
        uid,
        verdict: verdict::OBSERVED,
        source,
        cgroup_id,
    }
}

/// CLOCK_MONOTONIC, the clock of the programs' `bpf_ktime_get_ns`.
fn ktime_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map_or(0, |now| now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHADOW: &str =
        r#"audit(1796176890.590:971): domain=15fb0c426 blockers=fs.read_file path="/etc/shadow" dev="vda" ino=1196049"#;

    #[test]
    fn access_records_become_the_tracepoint_backends_events() {
        let (domain, denial) = parse_access(SHADOW).unwrap_or_else(|| panic!("no parse"));
        assert_eq!(domain, 0x15fb0c426);
        let Some(Event::Open { header, path, ino, flags, .. }) = denial.event(7, 42) else { panic!("{denial:?}") };
        assert_eq!(
            (path.as_str(), ino, flags, header.result, header.cgroup_id, header.tgid),
            ("/etc/shadow", 1196049, 0, -libc::EACCES, 7, 42)
        );
        let exec = r#"audit(1.598:972): domain=15fb0c426 blockers=fs.execute,fs.read_file path="/tmp/x/flood" dev="vda" ino=1"#;
        let (_, denial) = parse_access(exec).unwrap_or_else(|| panic!("no parse"));
        assert!(matches!(denial.event(7, 42), Some(Event::Exec { filename, .. }) if filename == "/tmp/x/flood"));
        let mkdir = r#"audit(1.602:976): domain=15fb0c426 blockers=fs.make_dir path="/tmp/x" dev="vda" ino=2"#;
        let (_, denial) = parse_access(mkdir).unwrap_or_else(|| panic!("no parse"));
        assert!(matches!(denial.event(7, 42), Some(Event::Fs { syscall: 83, .. })));
        let connect = r#"audit(1.7:980): domain=15fb0c426 blockers=net.connect_tcp daddr=127.0.0.1 dest=9"#;
        let (_, denial) = parse_access(connect).unwrap_or_else(|| panic!("no parse"));
        let Some(Event::Net { addr, port, .. }) = denial.event(7, 42) else { panic!("{denial:?}") };
        assert_eq!((addr.map(|addr| addr.to_string()), port), (Some("127.0.0.1".to_owned()), 9));
        // A scope's refusal (a signal, an abstract socket) is no event: an abstract name is
        // the agent's to choose and must not become a refused open.
        let scope = r#"audit(1.8:981): domain=15fb0c426 blockers=scope.abstract_unix_socket path=00616263"#;
        let (_, denial) = parse_access(scope).unwrap_or_else(|| panic!("no parse"));
        assert_eq!(denial.event(7, 42), None);
        let ioctl = r#"audit(1.9:982): domain=15fb0c426 blockers=fs.ioctl_dev path="/dev/null" dev="devtmpfs" ino=4"#;
        let (_, denial) = parse_access(ioctl).unwrap_or_else(|| panic!("no parse"));
        assert_eq!(denial.event(7, 42), None);
    }

    #[test]
    fn domain_records_name_the_process_that_made_the_domain() {
        let text = r#"audit(1796176890.586:969): domain=15fb0c426 status=allocated mode=enforcing pid=27881 uid=0 exe="/tmp/ll" comm="ll""#;
        assert_eq!(parse_domain(text), Some((0x15fb0c426, 27881)));
        assert_eq!(parse_domain("audit(1.6:980): domain=15fb0c426 status=deallocated denials=8"), None);
    }

    #[test]
    fn a_refused_syscall_of_a_session_is_the_tracepoint_backends_event() {
        let syscall = r#"audit(1796199593.031:105346): arch=c000003e syscall=257 success=no exit=-13 a0=ffffff9c a1=7ffef861c8cd a2=0 a3=0 items=1 ppid=30037 pid=30039 auid=2147483646 uid=0 gid=0 euid=0 ses=4 comm="cat" exe="/usr/bin/cat" key=(null)"#;
        let path = r#"audit(1796199593.031:105346): item=0 name="dac" inode=10018828 dev=fe:00 mode=0100600 ouid=65534 ogid=0 rdev=00:00 nametype=NORMAL cap_fp=0"#;
        assert_eq!(serial(syscall), Some(105346));
        let group = Group {
            syscall: Some(syscall.to_owned()),
            paths: vec![path.to_owned()],
            cwd: Some("/tmp/ws".to_owned()),
            ended: true,
            ..Group::default()
        };
        let Some(Event::Open { header, path, flags, .. }) = group.syscall_event(7, 30039) else { panic!("no open") };
        assert_eq!(
            (path.as_str(), flags, header.result, header.tgid, header.source),
            ("/tmp/ws/dac", 0, -libc::EACCES, 30039, source::SYSCALL_AUDIT)
        );
        // A rename names the old file (DELETE) and the new one (CREATE).
        let rename = r#"audit(1.2:3): arch=c000003e syscall=82 success=no exit=-1 a0=1 a1=2 items=4 pid=9 uid=0 ses=4"#;
        let item = |name: &str, kind: &str| format!(r#"audit(1.2:3): item=0 name="{name}" nametype={kind}"#);
        let group = Group {
            syscall: Some(rename.to_owned()),
            paths: vec![item("/a/", "PARENT"), item("/b/", "PARENT"), item("/a/x", "DELETE"), item("/b/y", "CREATE")],
            ..Group::default()
        };
        let Some(Event::Fs { syscall, path, path2, .. }) = group.syscall_event(7, 9) else { panic!("no fs event") };
        assert_eq!((syscall, path.as_str(), path2.as_str()), (82, "/a/x", "/b/y"));
        // An inet connect is the socket hooks' to report; a UNIX one is reported here.
        let connect = r#"audit(1.2:4): arch=c000003e syscall=42 success=no exit=-13 a0=3 items=1 pid=9 uid=0 ses=4"#;
        let inet =
            Group { syscall: Some(connect.to_owned()), sockaddr: Some("0200...".to_owned()), ..Group::default() };
        assert!(inet.syscall_event(7, 9).is_none());
        let unix = Group {
            syscall: Some(connect.to_owned()),
            sockaddr: Some("01002F72756E00".to_owned()),
            ..Group::default()
        };
        let Some(Event::Net { family: 1, path, .. }) = unix.syscall_event(7, 9) else { panic!("no UNIX connect") };
        assert_eq!(path, "/run");
        // An exec, with its arguments (hex where one has a space), as many as the
        // tracepoint backend's events carry.
        let exec = r#"audit(1.2:5): arch=c000003e syscall=59 success=yes exit=0 a0=1 items=2 pid=9 uid=0 ses=4"#;
        let group = Group {
            syscall: Some(exec.to_owned()),
            paths: vec![item("/usr/bin/sh", "NORMAL")],
            execve: Some(r#"audit(1.2:5): argc=4 a0="sh" a1="-c" a2=6563686F206869 a3="x""#.to_owned()),
            ..Group::default()
        };
        let Some(Event::Exec { filename, argv, header, .. }) = group.syscall_event(7, 9) else { panic!("no exec") };
        assert_eq!(
            (filename.as_str(), argv, header.result),
            ("/usr/bin/sh", vec!["sh".into(), "-c".into(), "echo hi".into()], 0)
        );
        // A long argument comes in pieces, over several records.
        let long = Group {
            syscall: Some(exec.to_owned()),
            paths: vec![item("/bin/echo", "NORMAL")],
            execve: Some(
                r#" audit(1.2:6): argc=3 a0="/bin/echo" a1="SECRET" a2_len=8 a2[0]=41414141 audit(1.2:6): a2[1]=41414141"#
                    .to_owned(),
            ),
            ..Group::default()
        };
        let Some(Event::Exec { argv, .. }) = long.syscall_event(7, 9) else { panic!("no exec") };
        assert_eq!(argv, vec!["/bin/echo".to_owned(), "SECRET".into(), "AAAAAAAA".into()]);
    }

    #[test]
    fn paths_with_spaces_come_in_hex() {
        assert_eq!(unquote("2F746D702F6120622E747874"), "/tmp/a b.txt");
        assert_eq!(unquote("\"/etc/shadow\""), "/etc/shadow");
    }

    #[test]
    fn a_marker_is_found_in_its_record_and_only_for_its_process() {
        let text = marker(4242, 7);
        assert_eq!(text.len(), MARKER_LEN);
        assert!(!text.contains(' ') && !text.contains('"'));
        let record = format!("audit(1.2:3): pid=4242 uid=0 auid=4294967295 ses=4294967295 msg='{text}'");
        assert_eq!(marker_in(&record, 4242), Some(7));
        assert_eq!(marker_in(&record, 4243), None);
        // The same text logged by another process is not the marker.
        let forged = format!("audit(1.2:3): pid=999 uid=0 auid=0 ses=1 msg='{}'", marker(4242, u64::MAX / 2));
        assert_eq!(marker_in(&forged, 4242), None);
        assert_eq!(marker_in("audit(1.2:3): msg='governor-settle-0000004242-12'", 4242), None);
    }
}
