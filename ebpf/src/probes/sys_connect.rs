//! `syscalls/sys_{enter,exit}_connect`: every connect(2) of an agent, any family, with the
//! result (a Landlock TCP denial shows as -EACCES, a cgroup hook denial as -EPERM).
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, bpf_probe_read_user_buf},
    macros::tracepoint,
    programs::TracePointContext,
};
use governor_common::{NetEvent, kind, source, verdict};

use crate::maps::{EVENTS, PENDING, Pending, agent, header, produced, result_of};

const CONNECT_ADDR: usize = 24;
const CONNECT_ADDRLEN: usize = 32;
const EXIT_RET: usize = 16;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

#[tracepoint(category = "syscalls", name = "sys_enter_connect")]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    if agent().is_some() {
        // SAFETY: offsets inside the record.
        let (ptr, len) = unsafe { (ctx.read_at::<u64>(CONNECT_ADDR), ctx.read_at::<u64>(CONNECT_ADDRLEN)) };
        if let (Ok(ptr), Ok(len)) = (ptr, len) {
            let pending = Pending { kind: kind::CONNECT, flags: 0, ptr, len };
            let _ = PENDING.insert(&bpf_get_current_pid_tgid(), &pending, 0);
        }
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_connect")]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    let key = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(pending) = (unsafe { PENDING.get(&key) }).copied() else {
        return 0;
    };
    let _ = PENDING.remove(&key);
    if pending.kind != kind::CONNECT {
        return 0;
    }
    let Some((cgroup_id, _)) = agent() else {
        return 0;
    };
    // SAFETY: offset inside the record.
    let ret = unsafe { ctx.read_at::<i64>(EXIT_RET) }.unwrap_or(0);
    let mut event = NetEvent {
        header: header(kind::CONNECT, source::TRACEPOINT, verdict::OBSERVED, result_of(ret), cgroup_id),
        ..NetEvent::default()
    };
    let sockaddr = pending.ptr as *const u8;
    // SAFETY: user pointers read with the fault-tolerant helpers; offsets per sockaddr_in(7)
    // and sockaddr_in6 (family at 0, port at 2, IPv4 address at 4, IPv6 address at 8).
    unsafe {
        event.family = bpf_probe_read_user(sockaddr as *const u16).unwrap_or(0);
        if event.family == AF_INET || event.family == AF_INET6 {
            event.port = u16::from_be(bpf_probe_read_user(sockaddr.add(2) as *const u16).unwrap_or(0));
        }
        if event.family == AF_INET {
            let _ = bpf_probe_read_user_buf(sockaddr.add(4), &mut event.addr[..4]);
        } else if event.family == AF_INET6 && pending.len >= 24 {
            let _ = bpf_probe_read_user_buf(sockaddr.add(8), &mut event.addr);
        }
    }
    produced(EVENTS.output::<NetEvent>(&event, 0).is_ok());
    0
}
