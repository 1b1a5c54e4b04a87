//! `sched/sched_process_exec`: a process in an agent cgroup now runs a new binary.
use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_ktime_get_ns, bpf_probe_read_kernel_str_bytes},
    macros::tracepoint,
    programs::TracePointContext,
};
use governor_common::{EventHeader, ExecEvent, kind};

use crate::maps::{EVENTS, agent_cgroup, count_drop};

/// Offset of `__data_loc char[] filename` in the tracepoint record; stable since 3.4
/// (see `/sys/kernel/tracing/events/sched/sched_process_exec/format`).
const FILENAME_LOC_OFFSET: usize = 8;

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let Some(cgroup_id) = agent_cgroup() else {
        return 0;
    };
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        count_drop();
        return 0;
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at a reserved, exclusively owned ring-buffer slot.
    unsafe {
        (*event).header = EventHeader {
            kind: kind::EXEC,
            result: 0,
            ktime_ns: bpf_ktime_get_ns(),
            pid: pid_tgid as u32,
            tgid: (pid_tgid >> 32) as u32,
            uid: bpf_get_current_uid_gid() as u32,
            _pad: 0,
            cgroup_id,
        };
        (*event).filename[0] = 0;
        // `__data_loc`: low 16 bits are the offset of the string in the record.
        if let Ok(loc) = ctx.read_at::<u32>(FILENAME_LOC_OFFSET) {
            let src = ctx.as_ptr().cast::<u8>().add((loc & 0xffff) as usize);
            let _ = bpf_probe_read_kernel_str_bytes(src, &mut (*event).filename);
        }
    }
    entry.submit(0);
    0
}
