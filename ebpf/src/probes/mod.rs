pub mod sched_process_exec;
