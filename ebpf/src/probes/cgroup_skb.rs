//! cgroup `skb` ingress hook, attached to each agent's cgroup on every backend: drops what
//! arrives for an agent's TCP listener on a port its ring does not let it bind. Such a
//! listener got its port from the kernel (listen(2) on an unbound socket, which no bind
//! rule sees; BPF LSM refuses the listen itself, the other backends cannot). A packet to a
//! listener is a connection being opened, so dropping it keeps the port closed while the
//! agent's own connections, and listeners on ports it may bind, are untouched. Each drop is
//! reported (observe mode: reported as would-deny, and let through).
use core::ptr::read_volatile;

use aya_ebpf::{
    bindings::{BPF_TCP_LISTEN, bpf_sock},
    helpers::{bpf_ktime_get_ns, bpf_sk_fullsock, bpf_skb_cgroup_id},
    macros::cgroup_skb,
    programs::SkBuffContext,
};
use governor_common::{EventHeader, NetEvent, PortKey, kind, mode, source, verdict};

use crate::{
    maps::{AGENTS, EPERM, EVENTS, LISTEN_ALLOW, NET_POLICY, produced_for},
    probes::raw_syscalls::wakeup,
};

const PASS: i32 = 1;
const DROP: i32 = 0;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_TCP: u32 = 6;
const ETH_P_IP: u16 = 0x0800;
/// Offsets of the source address in the IPv4 and IPv6 headers.
const IPV4_SOURCE: usize = 12;
const IPV6_SOURCE: usize = 8;

#[cgroup_skb(ingress)]
pub fn listener_ingress(ctx: SkBuffContext) -> i32 {
    let skb = ctx.skb.skb;
    // SAFETY: the context the kernel passes; `sk` is readable in cgroup skb programs, and
    // checked for null before use, as the verifier requires.
    let sk: *mut bpf_sock = unsafe { (*skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return PASS;
    }
    // SAFETY: a socket pointer from the context, as the helper takes it.
    let sk = unsafe { bpf_sk_fullsock(sk) };
    if sk.is_null() {
        return PASS;
    }
    // SAFETY: a full socket the helper returned, fields readable as `bpf_sock`.
    let (state, protocol, port) = unsafe { ((*sk).state, (*sk).protocol, (*sk).src_port) };
    // Almost every packet is for a connected socket: one comparison, and out.
    if state != BPF_TCP_LISTEN || protocol != IPPROTO_TCP {
        return PASS;
    }
    // SAFETY: helper on the context's skb: the cgroup of the socket it is for.
    let cgroup_id = unsafe { bpf_skb_cgroup_id(skb) };
    // SAFETY: read-only lookups, values copied out.
    let restricted = unsafe { NET_POLICY.get(&cgroup_id) }.is_some_and(|policy| policy.bind_restricted != 0);
    if !restricted || unsafe { LISTEN_ALLOW.get(&PortKey { cgroup_id, port, _pad: 0 }) }.is_some() {
        return PASS;
    }
    // SAFETY: as above.
    let enforce = unsafe { AGENTS.get(&cgroup_id) }.is_none_or(|slot| slot.mode == mode::ENFORCE);
    let (decision, result) = if enforce { (verdict::DENIED, -EPERM) } else { (verdict::WOULD_DENY, 0) };
    // The peer's address, from the packet (the context's address fields are the listening
    // socket's): its network header is where the data starts.
    // SAFETY: the context's own field, readable in cgroup skb programs.
    let protocol = u16::from_be(unsafe { read_volatile(&raw const (*skb).protocol) } as u16);
    let mut addr = [0u8; 16];
    let family = if protocol == ETH_P_IP {
        if let Ok(source) = ctx.load::<[u8; 4]>(IPV4_SOURCE) {
            addr[..4].copy_from_slice(&source);
        }
        AF_INET
    } else {
        if let Ok(source) = ctx.load::<[u8; 16]>(IPV6_SOURCE) {
            addr = source;
        }
        AF_INET6
    };
    let (family, addr) = crate::maps::unmap(family, addr);
    let event = NetEvent {
        // The packet is not a syscall of the agent's: whatever task runs here (softirq, or
        // the peer's on loopback) is not named.
        header: EventHeader {
            kind: kind::LISTEN,
            result,
            // SAFETY: helper without arguments.
            ktime_ns: unsafe { bpf_ktime_get_ns() },
            pid: 0,
            tgid: 0,
            uid: 0,
            verdict: decision,
            source: source::CGROUP_SKB,
            cgroup_id,
        },
        family,
        port: port as u16,
        sock_type: 1,
        _pad: 0,
        addr,
    };
    produced_for(cgroup_id, EVENTS.output::<NetEvent>(&event, wakeup(true)).is_ok());
    if enforce { DROP } else { PASS }
}
