//! Maps shared by every probe, and the helpers every probe starts with.
use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_ktime_get_ns},
    macros::map,
    maps::{HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use governor_common::{AgentSlot, EventHeader, ExecEvent, UdpAllowKey, UdpPolicy, counter};

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

/// A syscall between its enter and exit tracepoints, keyed by pid_tgid. LRU, so an exit
/// that is never seen (a thread killed mid-call) cannot fill it.
#[map]
pub static PENDING: LruHashMap<u64, Pending> = LruHashMap::with_max_entries(16384, 0);

/// execve/execveat between enter and exit: the event is built at enter, while the old
/// image's memory (filename, argv) still exists.
#[map]
pub static PENDING_EXEC: LruHashMap<u64, ExecEvent> = LruHashMap::with_max_entries(4096, 0);

/// Scratch space for building an exec event (too large for the 512-byte BPF stack).
#[map]
pub static EXEC_SCRATCH: PerCpuArray<ExecEvent> = PerCpuArray::with_max_entries(1, 0);

/// Per-agent UDP policy (key: cgroup id).
#[map]
pub static UDP_POLICY: HashMap<u64, UdpPolicy> = HashMap::with_max_entries(4096, 0);

/// UDP destinations an agent may send to, when its policy is restricted.
#[map]
pub static UDP_ALLOW: LpmTrie<UdpAllowKey, u8> = LpmTrie::with_max_entries(16384, 0);

/// Arguments of a syscall remembered at enter.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Pending {
    pub kind: u32,
    pub flags: u32,
    /// User pointer: the path, or the sockaddr.
    pub ptr: u64,
    /// addrlen for connect.
    pub len: u64,
}

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
    count(counter::PRODUCED);
    if !delivered {
        count(counter::DROPPED);
    }
}

/// A syscall return value as the event's result: 0 or a negative errno.
#[inline(always)]
pub fn result_of(ret: i64) -> i32 {
    if ret < 0 { ret as i32 } else { 0 }
}
