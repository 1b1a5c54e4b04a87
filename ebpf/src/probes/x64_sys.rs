//! fentry/fexit on the x86-64 syscall functions (`__x64_sys_*`) that report: the same
//! events as the raw syscall tracepoints, from the same saved user registers, on kernels
//! that run BPF trampolines. A raw syscall tracepoint puts every task of the machine on the
//! slow syscall path and runs its program on every syscall; a trampoline costs only the
//! tasks that call a hooked function, and each program looks up the agents map first.
//!
//! `long __x64_sys_NAME(const struct pt_regs *regs)` is the same on every x86-64 kernel
//! since 4.17 (arch/x86/include/asm/syscall_wrapper.h), so no signature is read from BTF:
//! the arguments come from `regs` as the tracepoints read them. A syscall that seccomp
//! refuses never reaches its function: `secure_computing.rs` reports those.
use aya_ebpf::{
    bindings::pt_regs,
    macros::{fentry, fexit},
    programs::{FEntryContext, FExitContext},
};
use governor_common::source;

use crate::probes::raw_syscalls::{self as raw, exec_enter, syscall_exit};

/// One fexit program per syscall function: `exit_NAME` on `__x64_sys_NAME`.
macro_rules! on_exit {
    ($($program:ident => $id:expr),* $(,)?) => {$(
        #[fexit]
        pub fn $program(ctx: FExitContext) -> i32 {
            // The function's one argument, then its return value.
            let regs: *const pt_regs = ctx.arg(0);
            let ret: i64 = ctx.arg(1);
            syscall_exit(regs, $id, ret, source::FENTRY);
            0
        }
    )*};
}

on_exit! {
    exit_open => raw::SYS_OPEN,
    exit_creat => raw::SYS_CREAT,
    exit_openat => raw::SYS_OPENAT,
    exit_openat2 => raw::SYS_OPENAT2,
    exit_connect => raw::SYS_CONNECT,
    exit_execve => raw::SYS_EXECVE,
    exit_execveat => raw::SYS_EXECVEAT,
    exit_truncate => raw::SYS_TRUNCATE,
    exit_rename => raw::SYS_RENAME,
    exit_renameat => raw::SYS_RENAMEAT,
    exit_renameat2 => raw::SYS_RENAMEAT2,
    exit_mkdir => raw::SYS_MKDIR,
    exit_mkdirat => raw::SYS_MKDIRAT,
    exit_rmdir => raw::SYS_RMDIR,
    exit_link => raw::SYS_LINK,
    exit_linkat => raw::SYS_LINKAT,
    exit_unlink => raw::SYS_UNLINK,
    exit_unlinkat => raw::SYS_UNLINKAT,
    exit_symlink => raw::SYS_SYMLINK,
    exit_symlinkat => raw::SYS_SYMLINKAT,
    exit_chmod => raw::SYS_CHMOD,
    exit_fchmodat => raw::SYS_FCHMODAT,
    exit_fchmodat2 => raw::SYS_FCHMODAT2,
    exit_chown => raw::SYS_CHOWN,
    exit_lchown => raw::SYS_LCHOWN,
    exit_fchownat => raw::SYS_FCHOWNAT,
    exit_mknod => raw::SYS_MKNOD,
    exit_mknodat => raw::SYS_MKNODAT,
}

/// An exec's arguments live in the old image, which a successful exec replaces: they are
/// captured on entry, and the event is sent on exit with the result.
#[fentry]
pub fn enter_execve(ctx: FEntryContext) -> i32 {
    exec_enter(ctx.arg(0), raw::SYS_EXECVE, source::FENTRY);
    0
}

#[fentry]
pub fn enter_execveat(ctx: FEntryContext) -> i32 {
    exec_enter(ctx.arg(0), raw::SYS_EXECVEAT, source::FENTRY);
    0
}
