//! Maps shared by every probe, and the helpers every probe starts with.
use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_ktime_get_ns},
    macros::map,
    maps::{HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use governor_common::{AgentSlot, EventHeader, ExecEvent, InodeKey, NetKey, NetPolicy, PortKey, StopKey, counter};

/// For the maps only the supervisor writes (a program only looks up): their elements are
/// allocated as they are put in, not all when the map is made. Making the 65,536 elements of
/// `DENY_OPEN` and the rest took about 12 ms of every standalone launch. Maps a program
/// writes stay preallocated, so that no update of theirs can fail for want of memory, and so
/// do those a tracepoint program reads (`STOP_EXEC`, read by `sched_process_exec`): kernels
/// before 6.1 warn about, and real-time kernels refuse, a tracing program with a map
/// allocated at run time.
const NO_PREALLOC: u32 = BPF_F_NO_PREALLOC;

/// cgroup v2 id of each agent's cgroup -> its slot and mode. A process whose cgroup is not a
/// key here is not an agent: every probe returns after this one lookup and emits nothing.
#[map]
pub static AGENTS: HashMap<u64, AgentSlot> = HashMap::with_max_entries(4096, 0);

/// Events to the supervisor. 16 MiB: a burst of about 50,000 open events.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 << 20, 0);

/// Per-CPU counters (`governor_common::counter`): produced, dropped, internal errors.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Events the ring buffer had no room for, per agent (cgroup id), per CPU: a drop is
/// pinned on the agent whose event it was, so only that agent answers for it.
#[map]
pub static LOST: PerCpuHashMap<u64, u64> = PerCpuHashMap::with_max_entries(4096, 0);

/// execve/execveat between enter and exit, keyed by pid_tgid: the event is built at enter,
/// while the old image's memory (filename, argv) still exists. LRU, so an exit that is never
/// seen (a thread killed mid-call) cannot fill it.
#[map]
pub static PENDING_EXEC: LruHashMap<u64, ExecEvent> = LruHashMap::with_max_entries(4096, 0);

/// Scratch space for building an exec event (too large for the 512-byte BPF stack).
#[map]
pub static EXEC_SCRATCH: PerCpuArray<ExecEvent> = PerCpuArray::with_max_entries(1, 0);

/// The working directory (its dentry) last reported per thread, so that a `kind::CWD`
/// event is sent once per directory, not before every relative open.
#[map]
pub static LAST_CWD: LruHashMap<u32, u64> = LruHashMap::with_max_entries(16384, 0);

/// Per-agent socket policy (key: cgroup id).
#[map]
pub static NET_POLICY: HashMap<u64, NetPolicy> = HashMap::with_max_entries(4096, NO_PREALLOC);

/// UDP destinations an agent may send to, when its policy is restricted.
#[map]
pub static UDP_ALLOW: LpmTrie<NetKey, u8> = LpmTrie::with_max_entries(16384, 0);

/// Destinations an agent may not connect or send to, TCP or UDP (cloud metadata, say).
#[map]
pub static NET_DENY: LpmTrie<NetKey, u8> = LpmTrie::with_max_entries(16384, 0);

/// TCP ports an agent's sockets may accept connections on, when its ring restricts binds:
/// the ports Landlock lets it bind. A listener on any other port got it from the kernel
/// (listen(2) on an unbound socket), and the cgroup `skb` hook drops what comes to it.
#[map]
pub static LISTEN_ALLOW: HashMap<PortKey, u8> = HashMap::with_max_entries(16384, NO_PREALLOC);

/// Files an agent may not open, by inode (its secrets: no hard link or bind mount of them
/// gets around this). LSM backend.
#[map]
pub static DENY_OPEN: HashMap<InodeKey, u8> = HashMap::with_max_entries(65536, NO_PREALLOC);

/// Pathname UNIX sockets an agent may connect or send to besides its own, by inode, when its
/// ring restricts them. LSM backend.
#[map]
pub static UNIX_ALLOW: HashMap<InodeKey, u8> = HashMap::with_max_entries(16384, NO_PREALLOC);

/// Programs whose exec stops an agent's process at once (SIGSTOP in `sched_process_exec`):
/// put in by the supervisor when a sequence rule that suspends or kills has seen its earlier
/// event, so the program it names runs no instruction before the rule is decided.
#[map]
pub static STOP_EXEC: HashMap<StopKey, u8> = HashMap::with_max_entries(4096, 0);

/// Programs an agent may not execute, by inode. LSM backend.
#[map]
pub static DENY_EXEC: HashMap<InodeKey, u8> = HashMap::with_max_entries(16384, NO_PREALLOC);

/// The cgroup id of the current task when it belongs to an agent.
#[inline(always)]
pub fn agent() -> Option<(u64, AgentSlot)> {
    // SAFETY: helper without arguments.
    let id = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: read-only lookup; the value is copied out.
    unsafe { AGENTS.get(&id) }.map(|slot| (id, *slot))
}

/// A header for the current task.
#[inline(always)]
pub fn header(kind: u32, source: u16, verdict: u16, result: i32, cgroup_id: u64) -> EventHeader {
    let pid_tgid = bpf_get_current_pid_tgid();
    EventHeader {
        kind,
        result,
        // SAFETY: helper without arguments.
        ktime_ns: unsafe { bpf_ktime_get_ns() },
        pid: pid_tgid as u32,
        tgid: (pid_tgid >> 32) as u32,
        uid: bpf_get_current_uid_gid() as u32,
        verdict,
        source,
        cgroup_id,
    }
}

/// Adds one to a per-CPU counter.
#[inline(always)]
pub fn count(index: u32) {
    if let Some(value) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot: no other program writes it concurrently.
        unsafe { *value += 1 };
    }
}

/// Counts an event as produced, and as dropped when the ring buffer had no room.
#[inline(always)]
pub fn produced(delivered: bool) {
    // Every probe but the `skb` hook runs in the task whose event it was (a tracepoint, an
    // LSM hook or a cgroup socket hook of the agent's own syscall).
    // SAFETY: helper without arguments.
    produced_for(unsafe { bpf_get_current_cgroup_id() }, delivered);
}

/// [`produced`] for an event of agent `cgroup_id`, whatever task the probe runs in.
#[inline(always)]
pub fn produced_for(cgroup_id: u64, delivered: bool) {
    count(counter::PRODUCED);
    if !delivered {
        count(counter::DROPPED);
        match LOST.get_ptr_mut(&cgroup_id) {
            // SAFETY: this CPU's value: no other program writes it concurrently.
            Some(lost) => unsafe { *lost += 1 },
            None => {
                let _ = LOST.insert(&cgroup_id, &1, 0);
            }
        }
    }
}

/// A syscall return value as the event's result: 0 or a negative errno.
#[inline(always)]
pub fn result_of(ret: i64) -> i32 {
    if ret < 0 { ret as i32 } else { 0 }
}

/// Whether `(cgroup_id, family, port, addr)` matches an LPM rule, for that port or any port.
#[inline(always)]
pub fn net_match(map: &LpmTrie<NetKey, u8>, cgroup_id: u64, family: u16, port_be: u16, addr: [u8; 16]) -> bool {
    let mut key = aya_ebpf::maps::lpm_trie::Key::new(
        governor_common::NET_KEY_FIXED_BITS + 128,
        NetKey { cgroup_id, family, port: port_be, addr, _pad: 0 },
    );
    if map.get(&key).is_some() {
        return true;
    }
    key.data.port = 0;
    map.get(&key).is_some()
}

/// `-EPERM`: what a probe rule's denial returns.
pub const DENY: i32 = -EPERM;
/// EPERM from <asm-generic/errno-base.h>.
pub const EPERM: i32 = 1;

/// The (dev, ino) of a `struct file`, read at the offsets the supervisor found in BTF.
///
/// # Safety
/// `file` must be a `struct file *` the kernel passed to the hook.
#[inline(always)]
pub unsafe fn file_inode_key(file: *const u8, cgroup_id: u64) -> Result<governor_common::InodeKey, i64> {
    use aya_ebpf::helpers::bpf_probe_read_kernel;

    use crate::offsets;
    if offsets::file_inode() == 0 {
        return Err(-1);
    }
    // SAFETY: kernel pointers read with the fault-tolerant helper.
    unsafe {
        let inode: *const u8 = bpf_probe_read_kernel(file.add(offsets::file_inode()) as *const *const u8)?;
        let ino: u64 = bpf_probe_read_kernel(inode.add(offsets::inode_ino()) as *const u64)?;
        let sb: *const u8 = bpf_probe_read_kernel(inode.add(offsets::inode_sb()) as *const *const u8)?;
        let dev: u32 = bpf_probe_read_kernel(sb.add(offsets::sb_dev()) as *const u32)?;
        Ok(governor_common::InodeKey { cgroup_id, dev: u64::from(dev), ino })
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is the IPv4 address: rules are keyed by
/// family, so it is looked up (and reported) as AF_INET, or `::ffff:169.254.169.254` would
/// get past a rule on 169.254.169.254.
#[inline(always)]
pub fn unmap(family: u16, addr: [u8; 16]) -> (u16, [u8; 16]) {
    const AF_INET: u16 = 2;
    const AF_INET6: u16 = 10;
    let mapped = addr[..10].iter().all(|byte| *byte == 0) && addr[10] == 0xff && addr[11] == 0xff;
    if family == AF_INET6 && mapped {
        let mut v4 = [0u8; 16];
        v4[..4].copy_from_slice(&addr[12..16]);
        (AF_INET, v4)
    } else {
        (family, addr)
    }
}
