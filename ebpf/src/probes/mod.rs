//! One file per hook, named after it (the raw syscall tracepoints share one file: the exit
//! program finishes what the enter program started; the fentry/fexit programs on the
//! syscall functions share `x64_sys.rs`, and report through the same code).
pub mod bprm_check_security;
pub mod cgroup_skb;
pub mod cgroup_sock_addr;
pub mod file_open;
pub mod raw_syscalls;
pub mod sched_process_exec;
pub mod secure_computing;
pub mod socket_connect;
pub mod socket_listen;
pub mod unix_connect;
pub mod x64_sys;
