//! BPF LSM `file_open`: refuses an agent's open of a file on its inode deny list (its
//! secrets), whatever path it came through: a hard link or bind mount inside a tree that
//! Landlock allows does not help. Reports only its own decisions; the tracepoints report
//! every open with its result.
use aya_ebpf::{
    helpers::{bpf_d_path, bpf_probe_read_kernel},
    macros::lsm,
    programs::LsmContext,
};
use governor_common::{OpenEvent, counter, kind, mode, source, verdict};

use crate::{
    maps::{DENY, DENY_OPEN, EPERM, EVENTS, agent, count, file_inode_key, header, produced},
    offsets,
};

/// openat(2)'s "the current directory": d_path gives absolute paths, so none is needed.
const AT_FDCWD: i32 = -100;

#[lsm(hook = "file_open")]
pub fn file_open(ctx: LsmContext) -> i32 {
    // int file_open(struct file *file), and the previous BPF LSM program's verdict.
    let previous: i32 = ctx.arg(1);
    // An earlier BPF LSM program's denial stands. (x86-64's trampoline already skips the
    // rest of the chain after a non-zero return; this keeps it so wherever it does not.)
    if previous != 0 {
        return previous;
    }
    let Some((cgroup_id, slot)) = agent() else {
        return 0;
    };
    let file: *const u8 = ctx.arg(0);
    let enforce = slot.mode == mode::ENFORCE;
    // SAFETY: `file` is the hook's argument.
    let (denied, key) = match unsafe { file_inode_key(file, cgroup_id) } {
        // SAFETY: read-only lookup.
        Ok(key) => (unsafe { DENY_OPEN.get(&key) }.is_some(), Some(key)),
        // Fail closed: if the inode cannot be read, it cannot be checked against the
        // agent's secrets, and letting the open through could hand one over.
        Err(_) => {
            count(counter::ERRORS);
            (true, None)
        }
    };
    if !denied {
        return 0;
    }
    // Zeros when the inode could not be read: an Option's payload would be read by the
    // generated code on both paths, and the verifier refuses a read of the uninitialised
    // stack (it did on 6.1).
    report(file, key.unwrap_or_default(), cgroup_id, enforce);
    if enforce { DENY } else { 0 }
}

#[inline(always)]
fn report(file: *const u8, key: governor_common::InodeKey, cgroup_id: u64, enforce: bool) {
    let Some(mut entry) = EVENTS.reserve::<OpenEvent>(0) else {
        produced(false);
        return;
    };
    let event = entry.as_mut_ptr();
    let (decision, result) = if enforce { (verdict::DENIED, -EPERM) } else { (verdict::WOULD_DENY, 0) };
    // SAFETY: `event` is a reserved, exclusively owned ring-buffer slot; `file` is the hook's
    // argument, read with the fault-tolerant helper; bpf_d_path is allowed in file_open.
    unsafe {
        (*event).header = header(kind::OPEN, source::LSM, decision, result, cgroup_id);
        (*event).flags = bpf_probe_read_kernel(file.add(offsets::file_flags()) as *const u32).unwrap_or(0);
        (*event).dirfd = AT_FDCWD;
        (*event).dev = key.dev;
        (*event).ino = key.ino;
        (*event).path[0] = 0;
        let path = file.add(offsets::file_path()) as *mut aya_ebpf::bindings::path;
        if bpf_d_path(path, (*event).path.as_mut_ptr().cast(), (*event).path.len() as u32) < 0 {
            (*event).path[0] = 0;
            count(counter::ERRORS);
        }
    }
    entry.submit(crate::probes::raw_syscalls::wakeup(true));
    produced(true);
}
