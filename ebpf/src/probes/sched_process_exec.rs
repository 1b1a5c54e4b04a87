//! `sched/sched_process_exec`: a process in an agent cgroup now runs a new binary (the exec
//! succeeded; the path is the one the kernel resolved).
use aya_ebpf::{
    EbpfContext as _, helpers::bpf_probe_read_kernel_str_bytes, macros::tracepoint, programs::TracePointContext,
};
use governor_common::{ExecEvent, counter, kind, source, verdict};

use crate::maps::{EVENTS, agent, count, header, produced};

/// Offset of `__data_loc char[] filename` in the record (see the event's format file).
const FILENAME_LOC: usize = 8;

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let Some((cgroup_id, _)) = agent() else {
        return 0;
    };
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        produced(false);
        return 0;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` is a reserved, exclusively owned ring-buffer slot; the string is read
    // from the record with the fault-tolerant helper.
    unsafe {
        (*event).header = header(kind::EXECED, source::TRACEPOINT, verdict::OBSERVED, 0, cgroup_id);
        (*event).filename[0] = 0;
        for arg in 0..governor_common::ARGS {
            (*event).argv[arg][0] = 0;
        }
        // `__data_loc`: the low 16 bits are the offset of the string in the record.
        match ctx.read_at::<u32>(FILENAME_LOC) {
            Ok(loc) => {
                let src = ctx.as_ptr().cast::<u8>().add((loc & 0xffff) as usize);
                if bpf_probe_read_kernel_str_bytes(src, &mut (*event).filename).is_err() {
                    count(counter::ERRORS);
                }
            }
            Err(_) => count(counter::ERRORS),
        }
    }
    entry.submit(0);
    produced(true);
    0
}
