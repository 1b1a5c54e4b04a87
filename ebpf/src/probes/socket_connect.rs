//! BPF LSM `socket_connect`: refuses an agent's connect to a denied address (any socket
//! type), before the cgroup hook or the protocol sees it. Reports only its own decisions.
use aya_ebpf::{
    helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_buf},
    macros::lsm,
    programs::LsmContext,
};
use governor_common::{NetEvent, counter, kind, mode, source, verdict};

use crate::maps::{DENY, EPERM, EVENTS, NET_DENY, agent, count, header, net_match, produced, unmap};
use crate::probes::raw_syscalls::wakeup;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

#[lsm(hook = "socket_connect")]
pub fn socket_connect(ctx: LsmContext) -> i32 {
    // int socket_connect(struct socket *sock, struct sockaddr *address, int addrlen), and
    // the previous verdict.
    let previous: i32 = ctx.arg(3);
    // An earlier BPF LSM program's denial stands. (x86-64's trampoline already skips the
    // rest of the chain after a non-zero return; this keeps it so wherever it does not.)
    if previous != 0 {
        return previous;
    }
    let Some((cgroup_id, slot)) = agent() else {
        return 0;
    };
    let address: *const u8 = ctx.arg(1);
    let addrlen: i32 = ctx.arg(2);
    let mut event = NetEvent::default();
    // SAFETY: `address` is the kernel copy of the caller's sockaddr, `addrlen` bytes long;
    // offsets per sockaddr_in(7) and sockaddr_in6.
    let read = unsafe {
        bpf_probe_read_kernel(address as *const u16).and_then(|family| {
            event.family = family;
            if family == AF_INET && addrlen >= 8 {
                event.port = bpf_probe_read_kernel(address.add(2) as *const u16)?;
                bpf_probe_read_kernel_buf(address.add(4), &mut event.addr[..4])
            } else if family == AF_INET6 && addrlen >= 24 {
                event.port = bpf_probe_read_kernel(address.add(2) as *const u16)?;
                bpf_probe_read_kernel_buf(address.add(8), &mut event.addr)
            } else {
                Ok(())
            }
        })
    };
    if read.is_err() {
        // Fail open here, unlike the file hooks: the cgroup connect hook checks the same
        // deny list on IP sockets after this one.
        count(counter::ERRORS);
        return 0;
    }
    if event.family != AF_INET && event.family != AF_INET6 {
        return 0;
    }
    (event.family, event.addr) = unmap(event.family, event.addr);
    if !net_match(&NET_DENY, cgroup_id, event.family, event.port, event.addr) {
        return 0;
    }
    let enforce = slot.mode == mode::ENFORCE;
    let (decision, result) = if enforce { (verdict::DENIED, -EPERM) } else { (verdict::WOULD_DENY, 0) };
    event.header = header(kind::CONNECT, source::LSM, decision, result, cgroup_id);
    event.port = u16::from_be(event.port);
    produced(EVENTS.output::<NetEvent>(&event, wakeup(true)).is_ok());
    if enforce { DENY } else { 0 }
}
