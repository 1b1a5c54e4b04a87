//! BPF LSM `bprm_check_security`: refuses an agent's exec of a program on its inode deny
//! list, under any name (a copy has another inode; a hard link or symlink does not).
//! Reports only its own decisions; the tracepoints report every exec with its result.
use aya_ebpf::{helpers::bpf_probe_read_kernel, macros::lsm, programs::LsmContext};
use governor_common::{ExecEvent, counter, kind, mode, source, verdict};

use crate::{
    maps::{DENY, DENY_EXEC, EPERM, EVENTS, agent, count, file_inode_key, header, produced},
    offsets,
};

#[lsm(hook = "bprm_check_security")]
pub fn bprm_check_security(ctx: LsmContext) -> i32 {
    // int bprm_check_security(struct linux_binprm *bprm), and the previous verdict.
    let previous: i32 = ctx.arg(1);
    // An earlier BPF LSM program's denial stands. (x86-64's trampoline already skips the
    // rest of the chain after a non-zero return; this keeps it so wherever it does not.)
    if previous != 0 {
        return previous;
    }
    let Some((cgroup_id, slot)) = agent() else {
        return 0;
    };
    let bprm: *const u8 = ctx.arg(0);
    let enforce = slot.mode == mode::ENFORCE;
    // SAFETY: `bprm` is the hook's argument; its `file` field is read at the BTF offset.
    let key = unsafe {
        bpf_probe_read_kernel(bprm.add(offsets::binprm_file()) as *const *const u8)
            .map_err(i64::from)
            .and_then(|file| file_inode_key(file, cgroup_id))
    };
    let denied = match key {
        // SAFETY: read-only lookup.
        Ok(key) => unsafe { DENY_EXEC.get(&key) }.is_some(),
        // Fail closed, as in file_open: an exec that cannot be checked is not run.
        Err(_) => {
            count(counter::ERRORS);
            true
        }
    };
    if !denied {
        return 0;
    }
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        produced(false);
        return if enforce { DENY } else { 0 };
    };
    let event = entry.as_mut_ptr();
    let (decision, result) = if enforce { (verdict::DENIED, -EPERM) } else { (verdict::WOULD_DENY, 0) };
    // SAFETY: `event` is a reserved, exclusively owned ring-buffer slot; kernel strings are
    // read with the fault-tolerant helpers.
    unsafe {
        (*event).header = header(kind::EXEC, source::LSM, decision, result, cgroup_id);
        // The file's identity is reported with the completed exec (sched_process_exec).
        (*event).dev = 0;
        (*event).ino = 0;
        (*event).size = 0;
        (*event).filename[0] = 0;
        for arg in 0..governor_common::ARGS {
            (*event).argv[arg][0] = 0;
        }
        let filename = bpf_probe_read_kernel(bprm.add(offsets::binprm_filename()) as *const *const u8)
            .unwrap_or(core::ptr::null());
        if aya_ebpf::helpers::bpf_probe_read_kernel_str_bytes(filename, &mut (*event).filename).is_err() {
            count(counter::ERRORS);
        }
    }
    entry.submit(crate::probes::raw_syscalls::wakeup(true));
    produced(true);
    if enforce { DENY } else { 0 }
}
