//! `syscalls/sys_{enter,exit}_{openat,openat2}`: every file an agent opens, with the result.
//! The path is read at exit, when the syscall has faulted its page in.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, bpf_probe_read_user_str_bytes},
    macros::tracepoint,
    programs::TracePointContext,
};
use governor_common::{OpenEvent, counter, kind, source, verdict};

use crate::maps::{EVENTS, PENDING, Pending, agent, count, header, produced, result_of};

// Field offsets in the tracepoint records (see /sys/kernel/tracing/events/syscalls/*/format;
// the supervisor checks them against the running kernel before attaching).
const OPENAT_FILENAME: usize = 24;
const OPENAT_FLAGS: usize = 32;
const OPENAT2_FILENAME: usize = 24;
const OPENAT2_HOW: usize = 32;
const EXIT_RET: usize = 16;

#[tracepoint(category = "syscalls", name = "sys_enter_openat")]
pub fn sys_enter_openat(ctx: TracePointContext) -> u32 {
    if agent().is_some() {
        // SAFETY: offsets inside the record, checked against the format file at load.
        let (ptr, flags) = unsafe { (ctx.read_at::<u64>(OPENAT_FILENAME), ctx.read_at::<u64>(OPENAT_FLAGS)) };
        if let (Ok(ptr), Ok(flags)) = (ptr, flags) {
            remember(ptr, flags as u32);
        }
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_openat2")]
pub fn sys_enter_openat2(ctx: TracePointContext) -> u32 {
    if agent().is_some() {
        // SAFETY: as above.
        let (ptr, how) = unsafe { (ctx.read_at::<u64>(OPENAT2_FILENAME), ctx.read_at::<u64>(OPENAT2_HOW)) };
        if let (Ok(ptr), Ok(how)) = (ptr, how) {
            // struct open_how starts with `__u64 flags`.
            // SAFETY: a user pointer, read with the fault-tolerant helper.
            let flags = unsafe { bpf_probe_read_user(how as *const u64) }.unwrap_or(0);
            remember(ptr, flags as u32);
        }
    }
    0
}

#[inline(always)]
fn remember(ptr: u64, flags: u32) {
    let pending = Pending { kind: kind::OPEN, flags, ptr, len: 0 };
    let _ = PENDING.insert(&bpf_get_current_pid_tgid(), &pending, 0);
}

#[tracepoint(category = "syscalls", name = "sys_exit_openat")]
pub fn sys_exit_openat(ctx: TracePointContext) -> u32 {
    finish(&ctx);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_openat2")]
pub fn sys_exit_openat2(ctx: TracePointContext) -> u32 {
    finish(&ctx);
    0
}

#[inline(always)]
fn finish(ctx: &TracePointContext) {
    let key = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(pending) = (unsafe { PENDING.get(&key) }).copied() else {
        return;
    };
    let _ = PENDING.remove(&key);
    if pending.kind != kind::OPEN {
        return;
    }
    let Some((cgroup_id, _)) = agent() else {
        return;
    };
    // SAFETY: offset inside the record.
    let ret = unsafe { ctx.read_at::<i64>(EXIT_RET) }.unwrap_or(0);
    let Some(mut entry) = EVENTS.reserve::<OpenEvent>(0) else {
        produced(false);
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` is a reserved, exclusively owned ring-buffer slot.
    unsafe {
        (*event).header = header(kind::OPEN, source::TRACEPOINT, verdict::OBSERVED, result_of(ret), cgroup_id);
        (*event).flags = pending.flags;
        (*event)._pad = 0;
        (*event).dev = 0;
        (*event).ino = 0;
        if bpf_probe_read_user_str_bytes(pending.ptr as *const u8, &mut (*event).path).is_err() {
            (*event).path[0] = 0;
            count(counter::ERRORS);
        }
    }
    entry.submit(0);
    produced(true);
}
