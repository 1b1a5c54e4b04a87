//! BPF LSM `socket_listen`: refuses an agent's listen(2) on an inet socket it has not bound,
//! where its ring lets TCP bind only the ports Landlock allows. Such a listen takes a port
//! of the kernel's choosing, which no bind rule sees (Landlock checks bind(2) only). A bound
//! socket passed Landlock's bind check already; UNIX sockets are not inet sockets. Reports
//! only its own decisions.
use aya_ebpf::{helpers::bpf_probe_read_kernel, macros::lsm, programs::LsmContext};
use governor_common::{NetEvent, counter, kind, mode, source, verdict};

use crate::{
    maps::{DENY, EPERM, EVENTS, NET_POLICY, agent, count, header, produced},
    offsets,
    probes::raw_syscalls::wakeup,
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

#[lsm(hook = "socket_listen")]
pub fn socket_listen(ctx: LsmContext) -> i32 {
    // int socket_listen(struct socket *sock, int backlog), and the previous verdict.
    let previous: i32 = ctx.arg(2);
    // An earlier BPF LSM program's denial stands.
    if previous != 0 {
        return previous;
    }
    let Some((cgroup_id, slot)) = agent() else {
        return 0;
    };
    // SAFETY: read-only lookup, value copied out.
    match unsafe { NET_POLICY.get(&cgroup_id) }.copied() {
        Some(policy) if policy.bind_restricted != 0 => {}
        _ => return 0,
    }
    let sock: *const u8 = ctx.arg(0);
    let mut event = NetEvent::default();
    // SAFETY: `sock` is the hook's argument, read at the BTF offsets with the fault-tolerant
    // helper.
    if unsafe { read_socket(sock, &mut event.family, &mut event.port) }.is_err() {
        // Fail closed: nothing after this hook sees the port the kernel would pick.
        count(counter::ERRORS);
    } else if (event.family != AF_INET && event.family != AF_INET6) || event.port != 0 {
        return 0;
    }
    let enforce = slot.mode == mode::ENFORCE;
    let (decision, result) = if enforce { (verdict::DENIED, -EPERM) } else { (verdict::WOULD_DENY, 0) };
    event.header = header(kind::LISTEN, source::LSM, decision, result, cgroup_id);
    produced(EVENTS.output::<NetEvent>(&event, wakeup(true)).is_ok());
    if enforce { DENY } else { 0 }
}

/// Writes the family and the local port (host order; 0 while unbound) of `sock` (a
/// `struct socket *`), each as it is read.
///
/// # Safety
/// `sock` is a kernel pointer, read only with the fault-tolerant helper.
#[inline(always)]
unsafe fn read_socket(sock: *const u8, family: &mut u16, port: &mut u16) -> Result<(), i64> {
    // `sock.__sk_common` is at offset 0 on every kernel: its offset is not checked.
    if offsets::socket_sk() == 0 || offsets::skc_family() == 0 || offsets::skc_num() == 0 {
        return Err(-1);
    }
    // SAFETY: kernel pointers read with the fault-tolerant helper.
    unsafe {
        let sk: *const u8 = bpf_probe_read_kernel(sock.add(offsets::socket_sk()) as *const *const u8)?;
        let common = sk.add(offsets::sock_common());
        *family = bpf_probe_read_kernel(common.add(offsets::skc_family()) as *const u16)?;
        *port = bpf_probe_read_kernel(common.add(offsets::skc_num()) as *const u16)?;
    }
    Ok(())
}
