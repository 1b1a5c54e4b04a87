//! fexit on `__secure_computing`: a syscall that an agent's seccomp filter refuses
//! (`SECCOMP_RET_ERRNO`: a set-id mode, `openat2` in high) is skipped before its function
//! runs, so the fexit programs of `x64_sys.rs` never see it; the raw `sys_exit` tracepoint
//! does, and so does this. Only tasks with a seccomp filter call it (kernel/entry/common.c,
//! `syscall_trace_enter`), and a syscall the filters allow returns at the first comparison.
use aya_ebpf::{
    bindings::pt_regs,
    helpers::{bpf_get_current_task_btf, bpf_probe_read_kernel, bpf_task_pt_regs},
    macros::fexit,
    programs::FExitContext,
};
use governor_common::source;

use crate::probes::raw_syscalls::syscall_exit;

/// What `__secure_computing` returns when the syscall is not to run (kernel/seccomp.c).
const SKIP: i32 = -1;

#[fexit]
pub fn secure_computing(ctx: FExitContext) -> i32 {
    // int __secure_computing(const struct seccomp_data *sd), then its return value.
    let verdict: i32 = ctx.arg(1);
    if verdict != SKIP {
        return 0;
    }
    // SAFETY: helpers on the current task; its saved user registers, where the filter's
    // errno is already the syscall's return value (`syscall_set_return_value`), are read
    // with the fault-tolerant helper.
    let (regs, id, ret) = unsafe {
        let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const pt_regs;
        let id = bpf_probe_read_kernel(&(*regs).orig_rax).unwrap_or(u64::MAX);
        let ret = bpf_probe_read_kernel(&(*regs).rax).unwrap_or(0) as i64;
        (regs, id, ret)
    };
    syscall_exit(regs, id, ret, source::FENTRY);
    0
}
