//! BPF LSM `unix_stream_connect` and `unix_may_send`: below admin, an agent may connect (or
//! send a datagram) to a pathname UNIX socket only if the socket is its own (created in its
//! cgroup) or on its list (`UNIX_ALLOW`, by device and inode: the sockets its ring and
//! policy name, and those it could reach when it started). The sockets bound when it
//! started are masked in its mount namespace on every backend; these hooks cover the ones
//! bound later, whatever path, symlink or hard link leads to them, since they see the
//! socket the kernel found. Abstract sockets are Landlock's (scoped). Refusals are EACCES,
//! as a mask's, and reported with the address the peer bound.
use aya_ebpf::{
    helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes},
    macros::lsm,
    programs::LsmContext,
};
use governor_common::{InodeKey, UnixEvent, counter, kind, mode, source, verdict};

use crate::{
    maps::{EVENTS, NET_POLICY, UNIX_ALLOW, agent, count, header, produced},
    offsets,
    probes::raw_syscalls::wakeup,
};

const EACCES: i32 = 13;
const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;
/// `sun_path` starts after `sun_family` in `struct sockaddr_un`.
const SUN_PATH: usize = 2;

#[lsm(hook = "unix_stream_connect")]
pub fn unix_stream_connect(ctx: LsmContext) -> i32 {
    // int unix_stream_connect(struct sock *sock, struct sock *other, struct sock *newsk),
    // and the previous verdict. SOCK_SEQPACKET connects come here too.
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    decide(ctx.arg(1), SOCK_STREAM)
}

#[lsm(hook = "unix_may_send")]
pub fn unix_may_send(ctx: LsmContext) -> i32 {
    // int unix_may_send(struct socket *sock, struct socket *other), and the previous verdict.
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    let other: *const u8 = ctx.arg(1);
    if offsets::socket_sk() == 0 {
        count(counter::ERRORS);
        return 0;
    }
    // SAFETY: `other` is the hook's `struct socket *`, read with the fault-tolerant helper.
    match unsafe { bpf_probe_read_kernel(other.add(offsets::socket_sk()) as *const *const u8) } {
        Ok(sk) => decide(sk, SOCK_DGRAM),
        Err(_) => {
            count(counter::ERRORS);
            -EACCES
        }
    }
}

#[inline(always)]
fn decide(peer: *const u8, sock_type: u32) -> i32 {
    let Some((cgroup_id, slot)) = agent() else {
        return 0;
    };
    // SAFETY: read-only lookup, value copied out.
    match unsafe { NET_POLICY.get(&cgroup_id) }.copied() {
        Some(policy) if policy.unix_restricted != 0 => {}
        _ => return 0,
    }
    if offsets::unix_sock_path() == 0 {
        // This kernel's BTF lacks a field: as before these hooks (the masks still hold).
        count(counter::ERRORS);
        return 0;
    }
    let mut event = UnixEvent {
        header: header(kind::UNIX, source::LSM, verdict::DENIED, -EACCES, cgroup_id),
        dev: 0,
        ino: 0,
        sock_type,
        _pad: 0,
        path: [0; governor_common::UNIX_PATH_LEN],
    };
    // SAFETY: `peer` is a `struct sock *` the kernel passed (or read from its socket), read
    // at the BTF offsets with the fault-tolerant helper.
    match unsafe { peer_of(peer, cgroup_id, &mut event) } {
        Ok(Peer::Allowed) => return 0,
        Ok(Peer::Refused) => {}
        // Fail closed: the peer could not be told apart from a host daemon's socket.
        Err(_) => count(counter::ERRORS),
    }
    let enforce = slot.mode == mode::ENFORCE;
    if !enforce {
        event.header.verdict = verdict::WOULD_DENY;
        event.header.result = 0;
    }
    produced(EVENTS.output::<UnixEvent>(&event, wakeup(true)).is_ok());
    if enforce { -EACCES } else { 0 }
}

enum Peer {
    Allowed,
    Refused,
}

/// Whether the agent may reach `peer`; for a refusal, fills in the socket's file and the
/// address it bound.
///
/// # Safety
/// `peer` is a kernel `struct sock *` (a `struct unix_sock`), read only with the
/// fault-tolerant helpers.
#[inline(always)]
unsafe fn peer_of(peer: *const u8, cgroup_id: u64, event: &mut UnixEvent) -> Result<Peer, i64> {
    // SAFETY: kernel pointers read with the fault-tolerant helpers.
    unsafe {
        // Its own: created by a process in the agent's cgroup.
        let cgroup: *const u8 = bpf_probe_read_kernel(peer.add(offsets::sk_cgrp_data()) as *const *const u8)?;
        if !cgroup.is_null() {
            let kn: *const u8 = bpf_probe_read_kernel(cgroup.add(offsets::cgroup_kn()) as *const *const u8)?;
            let id: u64 = bpf_probe_read_kernel(kn.add(offsets::kernfs_node_id()) as *const u64)?;
            if id == cgroup_id {
                return Ok(Peer::Allowed);
            }
        }
        // Not bound to a file: abstract (Landlock's scope) or unbound.
        let path = peer.add(offsets::unix_sock_path());
        let dentry: *const u8 = bpf_probe_read_kernel(path.add(offsets::path_dentry()) as *const *const u8)?;
        if dentry.is_null() {
            return Ok(Peer::Allowed);
        }
        let inode: *const u8 = bpf_probe_read_kernel(dentry.add(offsets::dentry_inode()) as *const *const u8)?;
        let ino: u64 = bpf_probe_read_kernel(inode.add(offsets::inode_ino()) as *const u64)?;
        let sb: *const u8 = bpf_probe_read_kernel(inode.add(offsets::inode_sb()) as *const *const u8)?;
        let dev = u64::from(bpf_probe_read_kernel(sb.add(offsets::sb_dev()) as *const u32)?);
        if UNIX_ALLOW.get(&InodeKey { cgroup_id, dev, ino }).is_some() {
            return Ok(Peer::Allowed);
        }
        event.dev = dev;
        event.ino = ino;
        let address: *const u8 = bpf_probe_read_kernel(peer.add(offsets::unix_sock_addr()) as *const *const u8)?;
        if !address.is_null() {
            let name = address.add(offsets::unix_address_name() + SUN_PATH);
            let _ = bpf_probe_read_kernel_str_bytes(name, &mut event.path);
        }
        Ok(Peer::Refused)
    }
}
