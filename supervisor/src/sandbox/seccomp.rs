//! A ring's seccomp filter: which syscalls (and which argument values) are refused with which
//! errno. Planning is pure; `compile` turns the plan into BPF with seccompiler. One seccompiler
//! filter has one match action, so the plan compiles to one filter per errno, plus a guard
//! that refuses x32 syscall numbers, which would otherwise miss every rule keyed on the
//! x86_64 number.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch, sock_filter,
};

use crate::policy::{NamespaceFlag, NamespaceSyscall, Ring};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("seccomp: {0}")]
    Compile(#[from] seccompiler::BackendError),
    #[error("seccomp: {0}")]
    Build(#[from] seccompiler::Error),
}

/// When a refusal applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// Always.
    Always,
    /// Argument `arg` has any of `flags` set (one rule per flag: seccomp compares with masks).
    AnyFlag { arg: u8, len: ArgLen, flags: Vec<u64> },
    /// Argument `arg` is none of `values`.
    NotIn { arg: u8, len: ArgLen, values: Vec<u64> },
    /// Argument `arg` is one of `values`.
    OneOf { arg: u8, len: ArgLen, values: Vec<u64> },
    /// socket(2) of one of `families` with a type (its low four bits: the flags above
    /// them are SOCK_NONBLOCK and SOCK_CLOEXEC) other than `types`.
    SocketType { families: Vec<u64>, types: Vec<u64> },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgLen {
    Dword,
    Qword,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub syscall: String,
    pub number: i64,
    pub condition: Condition,
    pub errno: u32,
    pub reason: String,
}

/// The refusals of a ring, in policy order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub refusals: Vec<Refusal>,
}

impl Plan {
    pub fn from_ring(ring: &Ring) -> Plan {
        let mut refusals = Vec::new();
        for deny in &ring.seccomp.deny {
            for syscall in &deny.syscalls {
                refusals.push(Refusal {
                    syscall: syscall.name.clone(),
                    number: syscall.number,
                    condition: Condition::Always,
                    errno: deny.errno.number(),
                    reason: deny.reason.0.clone(),
                });
            }
        }
        if let Some(namespaces) = &ring.seccomp.deny_namespaces {
            let flags: Vec<u64> = NamespaceFlag::ALL.iter().map(|(_, flag)| *flag).collect();
            for syscall in &namespaces.syscalls {
                // clone(2) takes `unsigned long flags`, unshare(2) an `int`.
                let (name, number, len) = match syscall {
                    NamespaceSyscall::Clone => ("clone", libc::SYS_clone, ArgLen::Qword),
                    NamespaceSyscall::Unshare => ("unshare", libc::SYS_unshare, ArgLen::Dword),
                };
                refusals.push(Refusal {
                    syscall: name.into(),
                    number,
                    condition: Condition::AnyFlag { arg: 0, len, flags: flags.clone() },
                    errno: libc::EPERM as u32,
                    reason: namespaces.reason.0.clone(),
                });
            }
        }
        for deny in &ring.seccomp.deny_ioctl {
            // ioctl(int fd, unsigned int request, ...): compare the low 32 bits.
            refusals.push(Refusal {
                syscall: "ioctl".into(),
                number: libc::SYS_ioctl,
                condition: Condition::OneOf {
                    arg: 1,
                    len: ArgLen::Dword,
                    values: deny.requests.iter().map(|request| request.number).collect(),
                },
                errno: libc::EPERM as u32,
                reason: deny.reason.0.clone(),
            });
        }
        for deny in &ring.seccomp.deny_when {
            for syscall in &deny.syscalls {
                let arg = deny.arg.0;
                let conditions = [
                    deny.not_in.as_ref().map(|values| Condition::NotIn {
                        arg,
                        len: ArgLen::Dword,
                        values: values.clone(),
                    }),
                    deny.any_bit.as_ref().map(|flags| Condition::AnyFlag {
                        arg,
                        len: ArgLen::Dword,
                        flags: flags.clone(),
                    }),
                ];
                for condition in conditions.into_iter().flatten() {
                    refusals.push(Refusal {
                        syscall: syscall.name.clone(),
                        number: syscall.number,
                        condition,
                        errno: libc::EPERM as u32,
                        reason: deny.reason.0.clone(),
                    });
                }
            }
        }
        let families: Option<Vec<u64>> =
            ring.network.socket_families.iter().map(|family| family.number().map(|af| af as u64)).collect();
        if let Some(families) = families {
            refusals.push(Refusal {
                syscall: "socket".into(),
                number: libc::SYS_socket,
                condition: Condition::NotIn { arg: 0, len: ArgLen::Dword, values: families },
                errno: libc::EPERM as u32,
                reason: ring.network.socket_families_reason.0.clone(),
            });
            // Protocol 0 picks the family's default protocol for the type: SCTP for
            // SOCK_SEQPACKET, DCCP for SOCK_DCCP where their modules are loaded, which no
            // Landlock bind rule and no socket hook covers. An inet socket is TCP or UDP.
            refusals.push(Refusal {
                syscall: "socket".into(),
                number: libc::SYS_socket,
                condition: Condition::SocketType {
                    families: vec![libc::AF_INET as u64, libc::AF_INET6 as u64],
                    types: vec![libc::SOCK_STREAM as u64, libc::SOCK_DGRAM as u64],
                },
                errno: libc::EPERM as u32,
                reason: "an inet socket is TCP or UDP: other types (SCTP, DCCP) bind and listen where no rule sees"
                    .into(),
            });
        }
        Plan { refusals }
    }

    /// The BPF programs to install, in order.
    pub fn compile(&self) -> Result<Vec<BpfProgram>, Error> {
        let mut by_errno: BTreeMap<u32, BTreeMap<i64, Vec<SeccompRule>>> = BTreeMap::new();
        for refusal in &self.refusals {
            let rules = by_errno.entry(refusal.errno).or_default().entry(refusal.number).or_default();
            rules.extend(seccomp_rules(&refusal.condition)?);
        }
        let mut programs = vec![x32_guard()];
        for (errno, rules) in by_errno {
            // An empty rule list for a syscall means "always" to seccompiler; keep that only
            // where the plan said so (a condition never yields an empty list).
            let filter = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(errno), arch())?;
            programs.push(filter.try_into()?);
        }
        Ok(programs)
    }
}

fn seccomp_rules(condition: &Condition) -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
    let len = |len: ArgLen| match len {
        ArgLen::Dword => SeccompCmpArgLen::Dword,
        ArgLen::Qword => SeccompCmpArgLen::Qword,
    };
    match condition {
        Condition::Always => Ok(Vec::new()),
        Condition::AnyFlag { arg, len: arg_len, flags } => flags
            .iter()
            .map(|flag| {
                SeccompRule::new(vec![SeccompCondition::new(
                    *arg,
                    len(*arg_len),
                    SeccompCmpOp::MaskedEq(*flag),
                    *flag,
                )?])
            })
            .collect(),
        Condition::OneOf { arg, len: arg_len, values } => values
            .iter()
            .map(|value| SeccompRule::new(vec![SeccompCondition::new(*arg, len(*arg_len), SeccompCmpOp::Eq, *value)?]))
            .collect(),
        Condition::SocketType { families, types } => {
            const TYPE_MASK: u64 = 0xf;
            let mut rules = Vec::new();
            for family in families {
                for kind in (0..=TYPE_MASK).filter(|kind| !types.contains(kind)) {
                    rules.push(SeccompRule::new(vec![
                        SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, *family)?,
                        SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::MaskedEq(TYPE_MASK), kind)?,
                    ])?);
                }
            }
            Ok(rules)
        }
        Condition::NotIn { arg, len: arg_len, values } => {
            let conditions = values
                .iter()
                .map(|value| SeccompCondition::new(*arg, len(*arg_len), SeccompCmpOp::Ne, *value))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(vec![SeccompRule::new(conditions)?])
        }
    }
}

fn arch() -> TargetArch {
    #[cfg(target_arch = "x86_64")]
    {
        TargetArch::x86_64
    }
    #[cfg(target_arch = "aarch64")]
    {
        TargetArch::aarch64
    }
}

/// On x86_64, syscall numbers with bit 30 set are the x32 ABI: the same calls under other
/// numbers. No rule above would match them, so refuse them all (`ENOSYS`, as on a kernel built
/// without x32).
fn x32_guard() -> BpfProgram {
    const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const BPF_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
    const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    let stmt = |code, k| sock_filter { code, jt: 0, jf: 0, k };
    vec![
        // seccomp_data.nr is at offset 0.
        stmt(BPF_LD_W_ABS, 0),
        sock_filter { code: BPF_JGE_K, jt: 0, jf: 1, k: X32_SYSCALL_BIT },
        stmt(BPF_RET_K, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW),
    ]
}

/// Installs `programs` on the calling thread. `no_new_privs` must already be set.
pub fn install(programs: &[BpfProgram]) -> Result<(), Error> {
    for program in programs {
        seccompiler::apply_filter(program)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{RingSource, Trust};

    fn plan(trust: Trust) -> Plan {
        let ring = RingSource::BuiltIn.ring(trust).unwrap_or_else(|error| panic!("{error}"));
        Plan::from_ring(&ring)
    }

    fn refused(plan: &Plan, syscall: &str) -> Vec<(Condition, u32)> {
        plan.refusals.iter().filter(|r| r.syscall == syscall).map(|r| (r.condition.clone(), r.errno)).collect()
    }

    #[test]
    fn low_refuses_the_escape_syscalls_with_eperm() {
        let low = plan(Trust::Low);
        for syscall in [
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "bpf",
            "perf_event_open",
            "mount",
            "umount2",
            "pivot_root",
            "kexec_load",
            "init_module",
            "finit_module",
            "delete_module",
            "keyctl",
            "add_key",
            "request_key",
            "io_uring_setup",
            "userfaultfd",
            "personality",
            "setns",
            "swapon",
            "reboot",
            "syslog",
        ] {
            assert_eq!(refused(&low, syscall), [(Condition::Always, libc::EPERM as u32)], "{syscall}");
        }
        assert_eq!(refused(&low, "clone3"), [(Condition::Always, libc::ENOSYS as u32)]);
    }

    #[test]
    fn namespace_flags_are_refused_on_clone_and_unshare() {
        let low = plan(Trust::Low);
        let clone = refused(&low, "clone");
        let [(Condition::AnyFlag { arg: 0, len: ArgLen::Qword, flags }, errno)] = clone.as_slice() else {
            panic!("clone is not refused by flag: {:?}", refused(&low, "clone"));
        };
        assert_eq!(*errno, libc::EPERM as u32);
        assert!(flags.contains(&(libc::CLONE_NEWUSER as u64)) && flags.contains(&(libc::CLONE_NEWNS as u64)));
        assert!(!flags.contains(&(libc::CLONE_THREAD as u64)), "threads must still be possible");
        assert!(matches!(refused(&low, "unshare").as_slice(), [(Condition::AnyFlag { len: ArgLen::Dword, .. }, _)]));
    }

    #[test]
    fn socket_families_follow_the_ring() {
        let af = |family: i32| family as u64;
        let refused = |plan: &Plan, syscall: &str| -> Vec<(Condition, u32)> {
            refused(plan, syscall)
                .into_iter()
                .filter(|(condition, _)| matches!(condition, Condition::NotIn { arg: 0, .. }))
                .collect()
        };
        let not_in =
            |values: Vec<u64>| vec![(Condition::NotIn { arg: 0, len: ArgLen::Dword, values }, libc::EPERM as u32)];
        assert_eq!(refused(&plan(Trust::Low), "socket"), not_in(vec![af(libc::AF_UNIX)]));
        assert_eq!(
            refused(&plan(Trust::Medium), "socket"),
            not_in(vec![af(libc::AF_UNIX), af(libc::AF_INET), af(libc::AF_INET6)])
        );
        assert!(refused(&plan(Trust::Admin), "socket").is_empty());
    }

    #[test]
    fn high_allows_ptrace_and_admin_refuses_only_kernel_loading() {
        assert!(refused(&plan(Trust::High), "ptrace").is_empty());
        let admin: Vec<String> = plan(Trust::Admin).refusals.into_iter().map(|r| r.syscall).collect();
        assert_eq!(admin, ["init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "bpf"]);
    }

    #[test]
    fn terminal_input_injection_is_refused_below_admin() {
        for trust in [Trust::Low, Trust::Medium, Trust::High] {
            let ioctl = refused(&plan(trust), "ioctl");
            let [(Condition::OneOf { arg: 1, values, .. }, errno)] = ioctl.as_slice() else {
                panic!("{trust}: {ioctl:?}");
            };
            assert_eq!((values.as_slice(), *errno), ([0x5412, 0x541C].as_slice(), libc::EPERM as u32), "{trust}");
        }
        assert!(refused(&plan(Trust::Admin), "ioctl").is_empty());
    }

    #[test]
    fn port_rule_bypasses_are_refused_below_admin() {
        for trust in [Trust::Low, Trust::Medium, Trust::High] {
            let plan = plan(trust);
            let protocol = Condition::NotIn { arg: 2, len: ArgLen::Dword, values: vec![0, 6, 17] };
            assert!(refused(&plan, "socket").iter().any(|(condition, _)| *condition == protocol), "{trust}: MPTCP");
            let types = Condition::SocketType { families: vec![2, 10], types: vec![1, 2] };
            assert!(refused(&plan, "socket").iter().any(|(condition, _)| *condition == types), "{trust}: SCTP, DCCP");
            let fastopen = Condition::AnyFlag { arg: 3, len: ArgLen::Dword, flags: vec![0x2000_0000] };
            assert!(refused(&plan, "sendto").iter().any(|(condition, _)| *condition == fastopen), "{trust}: TFO");
            let setuid = Condition::AnyFlag { arg: 2, len: ArgLen::Dword, flags: vec![0o4000, 0o2000] };
            assert!(refused(&plan, "fchmodat").iter().any(|(condition, _)| *condition == setuid), "{trust}: setuid");
            assert!(!refused(&plan, "prlimit64").is_empty(), "{trust}: prlimit64 of others");
        }
    }

    #[test]
    fn no_syscall_taking_a_mode_may_set_a_set_id_bit_below_admin() {
        // The mode's argument index in each (man 2 open, mknod, mkdir, chmod).
        let mode_arg = [
            ("chmod", 1),
            ("fchmod", 1),
            ("fchmodat", 2),
            ("fchmodat2", 2),
            ("creat", 1),
            ("mkdir", 1),
            ("mknod", 1),
            ("open", 2),
            ("mkdirat", 2),
            ("mknodat", 2),
            ("openat", 3),
        ];
        for trust in [Trust::Low, Trust::Medium, Trust::High] {
            let plan = plan(trust);
            for (syscall, arg) in mode_arg {
                let set_id = Condition::AnyFlag { arg, len: ArgLen::Dword, flags: vec![0o4000, 0o2000] };
                assert!(
                    refused(&plan, syscall).contains(&(set_id, libc::EPERM as u32)),
                    "{trust}: {syscall} with a set-id mode"
                );
            }
            // openat2's mode is in a struct seccomp cannot read: not implemented, so callers
            // fall back to openat.
            assert_eq!(refused(&plan, "openat2"), [(Condition::Always, libc::ENOSYS as u32)], "{trust}");
        }
        assert!(refused(&plan(Trust::Admin), "openat").is_empty());
    }

    #[test]
    fn every_ring_compiles_to_bpf() {
        for trust in Trust::ALL {
            let programs = plan(trust).compile().unwrap_or_else(|error| panic!("{trust}: {error}"));
            assert!(programs.len() >= 2, "{trust}: guard plus at least one filter");
            assert!(programs.iter().all(|program| program.len() < 4096), "{trust}: BPF_MAXINSNS");
        }
    }

    /// Installs the low ring's filter in a forked child (no root needed under no_new_privs)
    /// and checks the errno the kernel really returns.
    #[test]
    fn the_compiled_filter_refuses_in_the_kernel() {
        let programs = plan(Trust::Low).compile().unwrap_or_else(|error| panic!("{error}"));
        // SAFETY: the child only makes raw syscalls and exits.
        match unsafe { libc::fork() } {
            0 => {
                // SAFETY: plain syscalls on the child's own state.
                let code = unsafe {
                    libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                    if install(&programs).is_err() {
                        libc::_exit(10);
                    }
                    let errno = || *libc::__errno_location();
                    let mut code = 0;
                    if libc::syscall(libc::SYS_ptrace, libc::PTRACE_TRACEME, 0, 0, 0) != -1 || errno() != libc::EPERM {
                        code |= 1;
                    }
                    if libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) != -1 || errno() != libc::EPERM {
                        code |= 2;
                    }
                    if libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) < 0 {
                        code |= 4;
                    }
                    if libc::syscall(libc::SYS_clone3, 0, 0) != -1 || errno() != libc::ENOSYS {
                        code |= 8;
                    }
                    if libc::unshare(libc::CLONE_NEWUSER) != -1 || errno() != libc::EPERM {
                        code |= 16;
                    }
                    if libc::syscall(libc::SYS_getpid | 0x4000_0000) != -1 || errno() != libc::ENOSYS {
                        code |= 32;
                    }
                    let byte = b'x';
                    if libc::ioctl(0, libc::TIOCSTI, &byte) != -1 || errno() != libc::EPERM {
                        code |= 64;
                    }
                    code
                };
                // SAFETY: leaving the forked child without running the parent's destructors.
                unsafe { libc::_exit(code) }
            }
            pid if pid > 0 => {
                let mut status = 0;
                // SAFETY: waiting for our own child.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                assert!(libc::WIFEXITED(status));
                assert_eq!(libc::WEXITSTATUS(status), 0, "bit mask of checks that failed");
            }
            _ => panic!("fork failed"),
        }
    }
}
