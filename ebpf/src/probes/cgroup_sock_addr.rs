//! cgroup `sock_addr` hooks (`connect4`, `connect6`, `sendmsg4`, `sendmsg6`), attached to
//! each agent's cgroup. They narrow UDP, which Landlock does not cover: where an agent's UDP
//! policy is restricted, a datagram may only go to an allowed address and port. Returning 0
//! makes connect/sendmsg fail with EPERM. Every refusal is reported (observe mode: reported
//! as would-deny, and allowed).
use aya_ebpf::{
    bindings::bpf_sock_addr, helpers::bpf_get_current_cgroup_id, macros::cgroup_sock_addr, maps::lpm_trie::Key,
    programs::SockAddrContext,
};
use governor_common::{NetEvent, UDP_ALLOW_FIXED_BITS, UdpAllowKey, kind, mode, source, verdict};

use crate::maps::{AGENTS, EVENTS, UDP_ALLOW, UDP_POLICY, header, produced};

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
    // TCP is Landlock's: its ports are rules of the ring.
    if sock_type != SOCK_DGRAM {
        return ALLOW;
    }
    // SAFETY: helper without arguments.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: read-only lookups, values copied out.
    let Some(policy) = (unsafe { UDP_POLICY.get(&cgroup_id) }).copied() else {
        return ALLOW;
    };
    if policy.restricted == 0 {
        return ALLOW;
    }
    let mut key = Key::new(UDP_ALLOW_FIXED_BITS + 128, UdpAllowKey { cgroup_id, family, port: port_be, addr, _pad: 0 });
    if UDP_ALLOW.get(&key).is_some() {
        return ALLOW;
    }
    key.data.port = 0;
    if UDP_ALLOW.get(&key).is_some() {
        return ALLOW;
    }
    // SAFETY: as above.
    let enforce = unsafe { AGENTS.get(&cgroup_id) }.is_none_or(|slot| slot.mode == mode::ENFORCE);
    let (decision, result) = if enforce { (verdict::DENIED, -EPERM) } else { (verdict::WOULD_DENY, 0) };
    let event = NetEvent {
        header: header(event_kind, source::CGROUP_SOCK_ADDR, decision, result, cgroup_id),
        family,
        port: u16::from_be(port_be),
        sock_type: sock_type as u16,
        _pad: 0,
        addr,
    };
    produced(EVENTS.output::<NetEvent>(&event, 0).is_ok());
    if enforce { REFUSE } else { ALLOW }
}
