//! Maps shared by every probe.
use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};

/// cgroup v2 id of each agent's cgroup -> the agent's slot. A process whose cgroup is not
/// a key here is not an agent: probes return after this one lookup and emit nothing.
#[map]
pub static AGENT_CGROUPS: HashMap<u64, u32> = HashMap::with_max_entries(4096, 0);

/// Events to the supervisor.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Events that did not fit in `EVENTS`, counted per CPU (index 0) so none is lost silently.
#[map]
pub static DROPPED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The cgroup id of the current task when it belongs to an agent.
#[inline(always)]
pub fn agent_cgroup() -> Option<u64> {
    // SAFETY: helper with no arguments.
    let id = unsafe { aya_ebpf::helpers::bpf_get_current_cgroup_id() };
    // SAFETY: read-only lookup of a plain integer value.
    unsafe { AGENT_CGROUPS.get(&id) }.map(|_| id)
}

/// Counts one event that the ring buffer had no room for.
#[inline(always)]
pub fn count_drop() {
    if let Some(count) = DROPPED.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, so no other program writes it concurrently.
        unsafe { *count += 1 };
    }
}
