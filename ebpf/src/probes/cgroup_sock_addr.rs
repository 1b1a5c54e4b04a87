//! cgroup `sock_addr` hooks (`connect4`, `connect6`, `sendmsg4`, `sendmsg6`), attached to
//! each agent's cgroup, on both backends. They refuse denied destinations (TCP or UDP), and
//! narrow UDP, which Landlock does not cover: where an agent's UDP policy is restricted, a
//! datagram may only go to an allowed address and port. Returning 0 makes connect/sendmsg
//! fail with EPERM. Every refusal is reported (observe mode: reported as would-deny, and
//! allowed); with the notify backend, which has no syscall tracepoint, so is every allowed
//! connect and datagram (before the kernel tries it: its result is not known here).
use aya_ebpf::{
    bindings::bpf_sock_addr, helpers::bpf_get_current_cgroup_id, macros::cgroup_sock_addr, programs::SockAddrContext,
};
use governor_common::{NetEvent, kind, mode, source, verdict};

use crate::maps::{AGENTS, EVENTS, NET_DENY, NET_POLICY, UDP_ALLOW, header, net_match, produced, unmap};
use crate::probes::raw_syscalls::wakeup;

const ALLOW: i32 = 1;
const REFUSE: i32 = 0;
const SOCK_DGRAM: u32 = 2;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const EPERM: i32 = 1;

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    decide(&ctx, AF_INET, kind::CONNECT)
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    decide(&ctx, AF_INET6, kind::CONNECT)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    decide(&ctx, AF_INET, kind::SENDMSG)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    decide(&ctx, AF_INET6, kind::SENDMSG)
}

#[inline(always)]
fn decide(ctx: &SockAddrContext, family: u16, event_kind: u32) -> i32 {
    let sa: *const bpf_sock_addr = ctx.sock_addr;
    // SAFETY: the context the kernel passes; these fields are readable in every sock_addr
    // attach type used here.
    let (sock_type, port_be, addr) = unsafe {
        let mut addr = [0u8; 16];
        if family == AF_INET {
            addr[..4].copy_from_slice(&(*sa).user_ip4.to_ne_bytes());
        } else {
            for (word, chunk) in (*sa).user_ip6.iter().zip(addr.chunks_exact_mut(4)) {
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
        }
        ((*sa).type_, (*sa).user_port as u16, addr)
    };
    let (family, addr) = unmap(family, addr);
    // SAFETY: helper without arguments.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: read-only lookup, value copied out.
    let policy = unsafe { NET_POLICY.get(&cgroup_id) }.copied().unwrap_or_default();
    // Denied destinations, TCP or UDP; then, for UDP, the allow list (TCP ports are
    // Landlock's rules).
    let denied = net_match(&NET_DENY, cgroup_id, family, port_be, addr)
        || (sock_type == SOCK_DGRAM
            && policy.udp_restricted != 0
            && !net_match(&UDP_ALLOW, cgroup_id, family, port_be, addr));
    if !denied && policy.report_allowed == 0 {
        return ALLOW;
    }
    // SAFETY: as above.
    let enforce = unsafe { AGENTS.get(&cgroup_id) }.is_none_or(|slot| slot.mode == mode::ENFORCE);
    let (decision, result) = match (denied, enforce) {
        (false, _) => (verdict::OBSERVED, 0),
        (true, true) => (verdict::DENIED, -EPERM),
        (true, false) => (verdict::WOULD_DENY, 0),
    };
    let refuse = denied && enforce;
    let event = NetEvent {
        header: header(event_kind, source::CGROUP_SOCK_ADDR, decision, result, cgroup_id),
        family,
        port: u16::from_be(port_be),
        sock_type: sock_type as u16,
        _pad: 0,
        addr,
    };
    produced(EVENTS.output::<NetEvent>(&event, wakeup(denied)).is_ok());
    if refuse { REFUSE } else { ALLOW }
}
