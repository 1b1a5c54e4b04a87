//! One file per hook (or per syscall, for a tracepoint enter/exit pair), named after it.
pub mod cgroup_sock_addr;
pub mod sched_process_exec;
pub mod sys_connect;
pub mod sys_execve;
pub mod sys_openat;
