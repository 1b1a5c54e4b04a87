//! Raw tracepoints `raw_syscalls/sys_enter` and `raw_syscalls/sys_exit`: every execve,
//! execveat, open, creat, openat, openat2 and connect of an agent, with the syscall's result
//! (so what Landlock or a socket hook refused is reported with the errno the agent saw), and
//! every refused change of the filesystem by path (mkdir, unlink, rename, link, symlink,
//! truncate, mknod, chmod, chown and their `*at` forms).
//!
//! Raw, not the per-syscall `syscalls/*` events: those copy every record through the perf
//! trace buffer, and detaching each waits for an RCU grace period under a global mutex; a
//! raw tracepoint hands the program the syscall's registers directly. Both fire for every
//! syscall on the machine, so the first thing each program does is compare the syscall
//! number; only then is the agents map looked up.
//!
//! Arguments are read from the saved user registers at exit (x86_64 syscall ABI: rdi, rsi,
//! rdx, r10), where the syscall has already faulted the path's page in. An exec's arguments
//! live in the old image, which a successful exec replaces, so they are captured at enter.
//!
//! `exec_enter` and `syscall_exit` are the whole of the reporting; the fentry/fexit
//! programs on the syscall functions (`x64_sys.rs`) call them too, with the same registers.
use aya_ebpf::{
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, pt_regs},
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes,
        bpf_probe_read_user, bpf_probe_read_user_buf, bpf_probe_read_user_str_bytes,
    },
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use governor_common::{
    ARGS, CWD_DEPTH, CwdEvent, ExecEvent, FsEvent, NetEvent, OpenEvent, counter, kind, source, verdict,
};

use crate::{
    maps::{EVENTS, EXEC_SCRATCH, LAST_CWD, PENDING_EXEC, agent, count, header, produced, result_of},
    offsets,
};

// x86_64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl).
pub const SYS_OPEN: u64 = 2;
pub const SYS_CONNECT: u64 = 42;
pub const SYS_EXECVE: u64 = 59;
pub const SYS_TRUNCATE: u64 = 76;
pub const SYS_RENAME: u64 = 82;
pub const SYS_MKDIR: u64 = 83;
pub const SYS_RMDIR: u64 = 84;
pub const SYS_CREAT: u64 = 85;
pub const SYS_LINK: u64 = 86;
pub const SYS_UNLINK: u64 = 87;
pub const SYS_SYMLINK: u64 = 88;
pub const SYS_CHMOD: u64 = 90;
pub const SYS_CHOWN: u64 = 92;
pub const SYS_LCHOWN: u64 = 94;
pub const SYS_MKNOD: u64 = 133;
pub const SYS_OPENAT: u64 = 257;
pub const SYS_MKDIRAT: u64 = 258;
pub const SYS_MKNODAT: u64 = 259;
pub const SYS_FCHOWNAT: u64 = 260;
pub const SYS_UNLINKAT: u64 = 263;
pub const SYS_RENAMEAT: u64 = 264;
pub const SYS_LINKAT: u64 = 265;
pub const SYS_SYMLINKAT: u64 = 266;
pub const SYS_FCHMODAT: u64 = 268;
pub const SYS_RENAMEAT2: u64 = 316;
pub const SYS_EXECVEAT: u64 = 322;
pub const SYS_OPENAT2: u64 = 437;
pub const SYS_FCHMODAT2: u64 = 452;

const AT_FDCWD: i32 = -100;
const EACCES: i64 = 13;
const EPERM: i64 = 1;
/// creat(2) is open(2) with these flags.
const CREAT_FLAGS: u32 = 0o1101; // O_CREAT | O_WRONLY | O_TRUNC

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// Above this much unread data, the consumer is woken; below, ordinary events wait for its
/// next poll (10 ms), so a flood does not cost a wakeup per event. Refusals and errors
/// always wake it: the policy engine acts on them.
const WAKE_BYTES: u64 = 1 << 20;

/// Ring buffer flags for an event: wake the consumer for what it must see now, or when
/// enough has piled up.
#[inline(always)]
pub fn wakeup(urgent: bool) -> u64 {
    if urgent || EVENTS.query(aya_ebpf::bindings::BPF_RB_AVAIL_DATA as u64) >= WAKE_BYTES {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(struct pt_regs *regs, long id)
    let id: u64 = ctx.arg(1);
    if id != SYS_EXECVE && id != SYS_EXECVEAT {
        return 0;
    }
    exec_enter(ctx.arg(0), id, source::TRACEPOINT);
    0
}

/// An exec syscall `id` (execve or execveat) starts, with its arguments in `regs`: the event
/// is built now, while the old image's memory (filename, argv) exists, and sent at exit.
#[inline(always)]
pub fn exec_enter(regs: *const pt_regs, id: u64, src: u16) {
    let Some((cgroup_id, _)) = agent() else {
        return;
    };
    // SAFETY: `regs` is the tracepoint's argument; read with the fault-tolerant helper.
    let (filename, argv) = unsafe {
        let (di, si, dx) = (
            bpf_probe_read_kernel(&(*regs).rdi).unwrap_or(0),
            bpf_probe_read_kernel(&(*regs).rsi).unwrap_or(0),
            bpf_probe_read_kernel(&(*regs).rdx).unwrap_or(0),
        );
        // execve(filename, argv, envp); execveat(dirfd, filename, argv, envp, flags)
        if id == SYS_EXECVE { (di, si) } else { (si, dx) }
    };
    let Some(event) = EXEC_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: `event` is this CPU's scratch slot; user pointers are read with the
    // fault-tolerant helpers.
    unsafe {
        (*event).header = header(kind::EXEC, src, verdict::OBSERVED, 0, cgroup_id);
        (*event).dev = 0;
        (*event).ino = 0;
        (*event).size = 0;
        (*event).filename[0] = 0;
        if bpf_probe_read_user_str_bytes(filename as *const u8, &mut (*event).filename).is_err() {
            count(counter::ERRORS);
        }
        let argv = argv as *const u64;
        let mut done = argv.is_null();
        for index in 0..ARGS {
            (*event).argv[index][0] = 0;
            if done {
                continue;
            }
            let arg = bpf_probe_read_user(argv.add(index)).unwrap_or(0);
            if arg == 0 {
                done = true;
                continue;
            }
            let _ = bpf_probe_read_user_str_bytes(arg as *const u8, &mut (*event).argv[index]);
        }
        let _ = PENDING_EXEC.insert(&bpf_get_current_pid_tgid(), &*event, 0);
    }
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(struct pt_regs *regs, long ret)
    let regs: *const pt_regs = ctx.arg(0);
    // SAFETY: `regs` is the tracepoint's argument.
    let id = unsafe { bpf_probe_read_kernel(&(*regs).orig_rax) }.unwrap_or(u64::MAX);
    syscall_exit(regs, id, ctx.arg(1), source::TRACEPOINT);
    0
}

/// Syscall `id` returns `ret`, with its arguments in `regs` (the task's saved user
/// registers): reported when it is one of the syscalls above and the task an agent's.
#[inline(always)]
pub fn syscall_exit(regs: *const pt_regs, id: u64, ret: i64, src: u16) {
    let change = changes_fs(id);
    if !change
        && id != SYS_OPENAT
        && id != SYS_OPENAT2
        && id != SYS_OPEN
        && id != SYS_CREAT
        && id != SYS_CONNECT
        && id != SYS_EXECVE
        && id != SYS_EXECVEAT
    {
        return;
    }
    // Changes of the filesystem are reported when refused: what the repeated-refusals rule
    // counts; the ones that succeed are the agent's ordinary work in its workspace.
    if change && ret != -EACCES && ret != -EPERM {
        return;
    }
    if id == SYS_EXECVE || id == SYS_EXECVEAT {
        finish_exec(regs, id, ret);
        return;
    }
    let Some((cgroup_id, _)) = agent() else {
        return;
    };
    // SAFETY: as above.
    let (di, si, dx) = unsafe {
        (
            bpf_probe_read_kernel(&(*regs).rdi).unwrap_or(0),
            bpf_probe_read_kernel(&(*regs).rsi).unwrap_or(0),
            bpf_probe_read_kernel(&(*regs).rdx).unwrap_or(0),
        )
    };
    if change {
        // SAFETY: as above.
        let r10 = unsafe { bpf_probe_read_kernel(&(*regs).r10) }.unwrap_or(0);
        fs_change(cgroup_id, id, [di, si, dx, r10], ret, src);
    } else if id == SYS_OPEN {
        // open(filename, flags, mode)
        open(cgroup_id, AT_FDCWD, di, si as u32, ret, src);
    } else if id == SYS_CREAT {
        // creat(filename, mode)
        open(cgroup_id, AT_FDCWD, di, CREAT_FLAGS, ret, src);
    } else if id == SYS_CONNECT {
        // connect(fd, addr, addrlen)
        connect(cgroup_id, si, dx, ret, src);
    } else {
        // openat(dfd, filename, flags, mode); openat2(dfd, filename, how, size), where
        // struct open_how starts with `__u64 flags`.
        let flags = if id == SYS_OPENAT {
            dx
        } else {
            // SAFETY: a user pointer, read with the fault-tolerant helper.
            unsafe { bpf_probe_read_user(dx as *const u64) }.unwrap_or(0)
        };
        open(cgroup_id, di as i32, si, flags as u32, ret, src);
    }
}

/// Before an event with a path relative to the working directory: the directory, as the
/// kernel has it, when this thread has not reported it yet. Resolving it later from procfs
/// would miss a process that has exited by then (`cd ~/.ssh; cat id_ed25519`).
#[inline(always)]
fn relative_to_cwd(cgroup_id: u64, dirfd: i32, path: u64, src: u16) {
    if dirfd != AT_FDCWD {
        return;
    }
    // SAFETY: one byte of a user pointer, read with the fault-tolerant helper.
    let first: u8 = unsafe { bpf_probe_read_user(path as *const u8) }.unwrap_or(b'/');
    if first == b'/' || first == 0 {
        return;
    }
    governor_cwd(cgroup_id, u64::from(src));
}

/// [`cwd`] as a global BPF function (exported, `extern "C"`): the verifier checks it once,
/// on its own, where a static function is checked again for each path of its caller that
/// reaches it (four call sites in `sys_exit`, 50,000 instructions each before the count
/// below moved into the event). The verifier's time is most of a standalone launch, and
/// Linux 6.1's refused the walk as too complex. A global function's arguments and result
/// are scalars: the source travels as a `u64`, and 0 comes back.
#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn governor_cwd(cgroup_id: u64, src: u64) -> i64 {
    cwd(cgroup_id, src as u16);
    0
}

/// Reports the current task's working directory (`kind::CWD`), leaf first: its dentries up
/// to the mount's root, then through the mount points to the root of all mounts.
#[inline(always)]
fn cwd(cgroup_id: u64, src: u16) {
    if offsets::task_fs() == 0 || offsets::mount_mnt() == 0 {
        count(counter::ERRORS);
        return;
    }
    // SAFETY: kernel pointers from the current task, read with the fault-tolerant helpers at
    // the offsets the supervisor found in BTF.
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        let Ok(fs) = bpf_probe_read_kernel(task.add(offsets::task_fs()) as *const *const u8) else { return };
        let pwd = fs.add(offsets::fs_pwd());
        let Ok(mut dentry) = bpf_probe_read_kernel(pwd.add(offsets::path_dentry()) as *const *const u8) else {
            return;
        };
        let Ok(mut mnt) = bpf_probe_read_kernel(pwd.add(offsets::path_mnt()) as *const *const u8) else { return };
        let tid = bpf_get_current_pid_tgid() as u32;
        if LAST_CWD.get(&tid).is_some_and(|last| *last == dentry as u64) {
            return;
        }
        let _ = LAST_CWD.insert(&tid, &(dentry as u64), 0);
        let Some(mut entry) = EVENTS.reserve::<CwdEvent>(0) else {
            produced(false);
            return;
        };
        let event = entry.as_mut_ptr();
        (*event).header = header(kind::CWD, src, verdict::OBSERVED, 0, cgroup_id);
        // The count of components lives in the event and is read back at each step, where
        // the verifier cannot follow it: it checks one state per step of the walk, not one
        // per step and count (about 3,500 instructions instead of 50,000).
        let depth = core::ptr::addr_of_mut!((*event).depth);
        core::ptr::write_volatile(depth, 0);
        let mut done = false;
        // Mount crossings add no component: room for a few besides the names.
        for _ in 0..CWD_DEPTH + 4 {
            let root: *const u8 = bpf_probe_read_kernel(mnt.add(offsets::vfsmount_root()) as *const *const u8)
                .unwrap_or(core::ptr::null());
            if dentry == root {
                // container_of(mnt, struct mount, mnt)
                let mount = mnt.sub(offsets::mount_mnt());
                let parent: *const u8 = bpf_probe_read_kernel(mount.add(offsets::mount_parent()) as *const *const u8)
                    .unwrap_or(core::ptr::null());
                if parent == mount || parent.is_null() {
                    done = true;
                    break;
                }
                dentry = bpf_probe_read_kernel(mount.add(offsets::mount_mountpoint()) as *const *const u8)
                    .unwrap_or(core::ptr::null());
                mnt = parent.add(offsets::mount_mnt());
                continue;
            }
            let parent: *const u8 =
                bpf_probe_read_kernel(dentry.add(offsets::dentry_parent()) as *const *const u8).unwrap_or(dentry);
            let count = core::ptr::read_volatile(depth) as usize;
            if parent == dentry || count >= CWD_DEPTH {
                done = parent == dentry;
                break;
            }
            let name: *const u8 =
                bpf_probe_read_kernel(dentry.add(offsets::dentry_name() + offsets::qstr_name()) as *const *const u8)
                    .unwrap_or(core::ptr::null());
            let slot = &mut (*event).components[count & (CWD_DEPTH - 1)];
            slot[0] = 0;
            let _ = bpf_probe_read_kernel_str_bytes(name, slot);
            core::ptr::write_volatile(depth, count as u32 + 1);
            dentry = parent;
        }
        // Components past `depth` are not written: the reader takes `depth` of them.
        (*event).truncated = u32::from(!done);
        entry.submit(wakeup(false));
        produced(true);
    }
}

#[inline(always)]
fn open(cgroup_id: u64, dirfd: i32, filename: u64, flags: u32, ret: i64, src: u16) {
    relative_to_cwd(cgroup_id, dirfd, filename, src);
    let Some(mut entry) = EVENTS.reserve::<OpenEvent>(0) else {
        produced(false);
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` is a reserved, exclusively owned ring-buffer slot.
    unsafe {
        (*event).header = header(kind::OPEN, src, verdict::OBSERVED, result_of(ret), cgroup_id);
        (*event).flags = flags;
        (*event).dirfd = dirfd;
        (*event).dev = 0;
        (*event).ino = 0;
        if bpf_probe_read_user_str_bytes(filename as *const u8, &mut (*event).path).is_err() {
            (*event).path[0] = 0;
            count(counter::ERRORS);
        }
    }
    entry.submit(wakeup(ret < 0));
    produced(true);
}

/// Whether syscall `id` changes the filesystem by path (reported when refused).
#[inline(always)]
fn changes_fs(id: u64) -> bool {
    matches!(
        id,
        SYS_TRUNCATE
            | SYS_RENAME
            | SYS_MKDIR
            | SYS_RMDIR
            | SYS_LINK
            | SYS_UNLINK
            | SYS_SYMLINK
            | SYS_CHMOD
            | SYS_CHOWN
            | SYS_LCHOWN
            | SYS_MKNOD
            | SYS_MKDIRAT
            | SYS_MKNODAT
            | SYS_FCHOWNAT
            | SYS_UNLINKAT
            | SYS_RENAMEAT
            | SYS_LINKAT
            | SYS_SYMLINKAT
            | SYS_FCHMODAT
            | SYS_RENAMEAT2
            | SYS_FCHMODAT2
    )
}

/// Where the paths of a filesystem change are, from its arguments `args` (rdi, rsi, rdx,
/// r10): `(dirfd, path, dirfd2, path2)`, a path of 0 for none.
#[inline(always)]
fn fs_paths(id: u64, args: [u64; 4]) -> (i32, u64, i32, u64) {
    let [di, si, dx, r10] = args;
    match id {
        // rename(old, new), link(old, new), symlink(target, linkpath)
        SYS_RENAME | SYS_LINK | SYS_SYMLINK => (AT_FDCWD, di, AT_FDCWD, si),
        // renameat(olddirfd, old, newdirfd, new) (and renameat2, linkat)
        SYS_RENAMEAT | SYS_RENAMEAT2 | SYS_LINKAT => (di as i32, si, dx as i32, r10),
        // symlinkat(target, newdirfd, linkpath)
        SYS_SYMLINKAT => (AT_FDCWD, di, si as i32, dx),
        // mkdirat(dirfd, path, ...), mknodat, unlinkat, fchownat, fchmodat, fchmodat2
        SYS_MKDIRAT | SYS_MKNODAT | SYS_UNLINKAT | SYS_FCHOWNAT | SYS_FCHMODAT | SYS_FCHMODAT2 => {
            (di as i32, si, AT_FDCWD, 0)
        }
        // truncate(path, ...), mkdir, rmdir, unlink, chmod, chown, lchown, mknod
        _ => (AT_FDCWD, di, AT_FDCWD, 0),
    }
}

#[inline(always)]
fn fs_change(cgroup_id: u64, id: u64, args: [u64; 4], ret: i64, src: u16) {
    let (dirfd, path, dirfd2, path2) = fs_paths(id, args);
    relative_to_cwd(cgroup_id, dirfd, path, src);
    let Some(mut entry) = EVENTS.reserve::<FsEvent>(0) else {
        produced(false);
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` is a reserved, exclusively owned ring-buffer slot; user strings are
    // read with the fault-tolerant helper (faulted in by the syscall).
    unsafe {
        (*event).header = header(kind::FS, src, verdict::OBSERVED, result_of(ret), cgroup_id);
        (*event).syscall = id as u32;
        (*event).dirfd = dirfd;
        (*event).dirfd2 = dirfd2;
        (*event)._pad = 0;
        (*event).path[0] = 0;
        (*event).path2[0] = 0;
        if bpf_probe_read_user_str_bytes(path as *const u8, &mut (*event).path).is_err() {
            (*event).path[0] = 0;
            count(counter::ERRORS);
        }
        if path2 != 0 && bpf_probe_read_user_str_bytes(path2 as *const u8, &mut (*event).path2).is_err() {
            (*event).path2[0] = 0;
        }
    }
    entry.submit(wakeup(true));
    produced(true);
}

#[inline(always)]
fn connect(cgroup_id: u64, sockaddr: u64, addrlen: u64, ret: i64, src: u16) {
    let mut event = NetEvent {
        header: header(kind::CONNECT, src, verdict::OBSERVED, result_of(ret), cgroup_id),
        ..NetEvent::default()
    };
    let sockaddr = sockaddr as *const u8;
    // SAFETY: user pointers read with the fault-tolerant helpers; offsets per sockaddr_in(7)
    // and sockaddr_in6 (family at 0, port at 2, IPv4 address at 4, IPv6 address at 8).
    unsafe {
        event.family = bpf_probe_read_user(sockaddr as *const u16).unwrap_or(0);
        if event.family == AF_INET || event.family == AF_INET6 {
            event.port = u16::from_be(bpf_probe_read_user(sockaddr.add(2) as *const u16).unwrap_or(0));
        }
        if event.family == AF_INET {
            let _ = bpf_probe_read_user_buf(sockaddr.add(4), &mut event.addr[..4]);
        } else if event.family == AF_INET6 && addrlen >= 24 {
            let _ = bpf_probe_read_user_buf(sockaddr.add(8), &mut event.addr);
        }
    }
    produced(EVENTS.output::<NetEvent>(&event, wakeup(ret < 0)).is_ok());
}

/// A failed exec keeps the old image, so a filename that could not be read at entry (its
/// page not faulted in yet: a string literal in a fresh process) is read again here, where
/// the syscall has faulted it in. A successful exec's program is in `sched_process_exec`,
/// from the kernel's own copy.
#[inline(always)]
fn finish_exec(regs: *const pt_regs, id: u64, ret: i64) {
    let key = bpf_get_current_pid_tgid();
    let Some(event) = PENDING_EXEC.get_ptr_mut(&key) else {
        return;
    };
    // SAFETY: `event` points at this task's map value, which only this task writes; user
    // memory and the saved registers are read with the fault-tolerant helpers.
    unsafe {
        if ret < 0 && (*event).filename[0] == 0 {
            let filename = if id == SYS_EXECVE {
                bpf_probe_read_kernel(&(*regs).rdi).unwrap_or(0)
            } else {
                bpf_probe_read_kernel(&(*regs).rsi).unwrap_or(0)
            };
            let _ = bpf_probe_read_user_str_bytes(filename as *const u8, &mut (*event).filename);
        }
        (*event).header.result = result_of(ret);
        produced(EVENTS.output::<ExecEvent>(&*event, wakeup(true)).is_ok());
    }
    let _ = PENDING_EXEC.remove(&key);
}
