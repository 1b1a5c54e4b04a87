//! `syscalls/sys_{enter,exit}_{execve,execveat}`: every program an agent tries to run, with
//! argv[0..3] and the result. Built at enter (the old image's memory is gone after a
//! successful exec), emitted at exit.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, bpf_probe_read_user_str_bytes},
    macros::tracepoint,
    programs::TracePointContext,
};
use governor_common::{ARGS, counter, kind, source, verdict};

use crate::maps::{EVENTS, EXEC_SCRATCH, PENDING_EXEC, agent, count, header, produced, result_of};

const EXECVE_FILENAME: usize = 16;
const EXECVE_ARGV: usize = 24;
const EXECVEAT_FILENAME: usize = 24;
const EXECVEAT_ARGV: usize = 32;
const EXIT_RET: usize = 16;

#[tracepoint(category = "syscalls", name = "sys_enter_execve")]
pub fn sys_enter_execve(ctx: TracePointContext) -> u32 {
    remember(&ctx, EXECVE_FILENAME, EXECVE_ARGV);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_execveat")]
pub fn sys_enter_execveat(ctx: TracePointContext) -> u32 {
    remember(&ctx, EXECVEAT_FILENAME, EXECVEAT_ARGV);
    0
}

#[inline(always)]
fn remember(ctx: &TracePointContext, filename_at: usize, argv_at: usize) {
    let Some((cgroup_id, _)) = agent() else {
        return;
    };
    let Some(event) = EXEC_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: `event` is this CPU's scratch slot; offsets are inside the record; user
    // pointers are read with the fault-tolerant helpers.
    unsafe {
        (*event).header = header(kind::EXEC, source::TRACEPOINT, verdict::OBSERVED, 0, cgroup_id);
        (*event).filename[0] = 0;
        let filename = ctx.read_at::<u64>(filename_at).unwrap_or(0);
        if bpf_probe_read_user_str_bytes(filename as *const u8, &mut (*event).filename).is_err() {
            count(counter::ERRORS);
        }
        let argv = ctx.read_at::<u64>(argv_at).unwrap_or(0) as *const u64;
        let mut done = argv.is_null();
        for index in 0..ARGS {
            (*event).argv[index][0] = 0;
            if done {
                continue;
            }
            let arg = bpf_probe_read_user(argv.add(index)).unwrap_or(0);
            if arg == 0 {
                done = true;
                continue;
            }
            let _ = bpf_probe_read_user_str_bytes(arg as *const u8, &mut (*event).argv[index]);
        }
        let _ = PENDING_EXEC.insert(&bpf_get_current_pid_tgid(), &*event, 0);
    }
}

#[tracepoint(category = "syscalls", name = "sys_exit_execve")]
pub fn sys_exit_execve(ctx: TracePointContext) -> u32 {
    finish(&ctx);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_execveat")]
pub fn sys_exit_execveat(ctx: TracePointContext) -> u32 {
    finish(&ctx);
    0
}

#[inline(always)]
fn finish(ctx: &TracePointContext) {
    let key = bpf_get_current_pid_tgid();
    let Some(event) = PENDING_EXEC.get_ptr_mut(&key) else {
        return;
    };
    // SAFETY: `event` points at this task's map value, which only this task writes.
    unsafe {
        (*event).header.result = result_of(ctx.read_at::<i64>(EXIT_RET).unwrap_or(0));
        let delivered = EVENTS.output::<governor_common::ExecEvent>(&*event, 0).is_ok();
        produced(delivered);
    }
    let _ = PENDING_EXEC.remove(&key);
}
