//! One file per hook (or per syscall, for a tracepoint enter/exit pair), named after it.
pub mod bprm_check_security;
pub mod cgroup_sock_addr;
pub mod file_open;
pub mod sched_process_exec;
pub mod socket_connect;
pub mod sys_connect;
pub mod sys_execve;
pub mod sys_openat;
