//! Raw tracepoint `sched/sched_process_exec`: a process in an agent cgroup now runs a new
//! binary (the exec succeeded; the path is the one the kernel resolved, from
//! `linux_binprm.filename` at the offset the supervisor read from BTF).
use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes, generated::bpf_send_signal,
    },
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use governor_common::{ExecEvent, StopKey, counter, kind, source, verdict};

use crate::{
    maps::{EVENTS, STOP_EXEC, agent, count, header, produced},
    offsets,
    probes::raw_syscalls::wakeup,
};

const SIGSTOP: u32 = 19;

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn sched_process_exec(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
    let Some((cgroup_id, _)) = agent() else {
        return 0;
    };
    let bprm: *const u8 = ctx.arg(2);
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        produced(false);
        return 0;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` is a reserved, exclusively owned ring-buffer slot; kernel memory is
    // read with the fault-tolerant helpers.
    unsafe {
        (*event).header = header(kind::EXECED, source::TRACEPOINT, verdict::OBSERVED, 0, cgroup_id);
        (*event).filename[0] = 0;
        for arg in 0..governor_common::ARGS {
            (*event).argv[arg][0] = 0;
        }
        // The file itself: a memfd or a deleted file is gone with the process, and a path can
        // name another file by the time governor reads it.
        (*event).dev = 0;
        (*event).ino = 0;
        (*event).size = 0;
        let file = bpf_probe_read_kernel(bprm.add(offsets::binprm_file()) as *const *const u8);
        if file.map_err(i64::from).and_then(|file| program(file, event)).is_err() {
            count(counter::ERRORS);
        }
        let filename = if offsets::binprm_filename() == 0 {
            Err(-1)
        } else {
            bpf_probe_read_kernel(bprm.add(offsets::binprm_filename()) as *const *const u8)
        };
        let read =
            filename.and_then(|filename| bpf_probe_read_kernel_str_bytes(filename, &mut (*event).filename).map(|_| ()));
        if read.is_err() {
            (*event).filename[0] = 0;
            count(counter::ERRORS);
        }
    }
    // A program a sequence rule is waiting for: stopped before its first instruction (the
    // kernel set `comm` to its name when the exec began), and the supervisor decides.
    // A program a rule suspends or kills for: stopped before its first instruction (the
    // kernel set `comm` to its name when the exec began), and the supervisor decides.
    if let Ok(comm) = bpf_get_current_comm()
        // SAFETY: read-only lookup.
        && unsafe { STOP_EXEC.get(&StopKey { cgroup_id, comm }) }.is_some()
    {
        // SAFETY: a signal to the current task's process, which is the agent's.
        if unsafe { bpf_send_signal(SIGSTOP) } == 0 {
            // SAFETY: as above, the reserved slot.
            unsafe { (*event).header.verdict = verdict::STOPPED };
        } else {
            count(counter::ERRORS);
        }
    }
    // Urgent: rules about programs decide on this event, and procfs of a short-lived
    // program (which resolves what it is) is only there while it runs.
    entry.submit(wakeup(true));
    produced(true);
    0
}

/// Writes the device, inode and size of `file` (a `struct file *`) into `event`, field by
/// field as each is read (no value is read before it was written: older verifiers refuse
/// reads of stack they cannot prove initialized).
///
/// # Safety
/// `file` is a kernel pointer, read only with the fault-tolerant helper; `event` is the
/// caller's reserved ring-buffer slot.
#[inline(always)]
unsafe fn program(file: *const u8, event: *mut ExecEvent) -> Result<(), i64> {
    if offsets::file_inode() == 0 || offsets::inode_size() == 0 {
        return Err(-1);
    }
    // SAFETY: kernel pointers read with the fault-tolerant helper; `event` is exclusively
    // owned by the caller.
    unsafe {
        let inode: *const u8 = bpf_probe_read_kernel(file.add(offsets::file_inode()) as *const *const u8)?;
        (*event).ino = bpf_probe_read_kernel(inode.add(offsets::inode_ino()) as *const u64)?;
        let sb: *const u8 = bpf_probe_read_kernel(inode.add(offsets::inode_sb()) as *const *const u8)?;
        (*event).dev = u64::from(bpf_probe_read_kernel(sb.add(offsets::sb_dev()) as *const u32)?);
        (*event).size = bpf_probe_read_kernel(inode.add(offsets::inode_size()) as *const u64)?;
    }
    Ok(())
}
