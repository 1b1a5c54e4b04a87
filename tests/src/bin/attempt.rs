//! `attempt`: makes one operation an escaping agent would try, and prints `ok` or the errno's
//! name (`EACCES`, `EPERM`, ...). Exit 0 on success, 1 when refused, 2 on bad usage. The
//! end-to-end tests run it inside `governor run` and assert the word it prints.
//!
//! Raw libc calls throughout: the point is the syscall the kernel sees, not a library's retry.

use std::{
    ffi::CString,
    io::Write as _,
    net::{Ipv4Addr, SocketAddrV4},
    process::ExitCode,
};

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn name(errno: i32) -> String {
    let known = [
        (libc::EPERM, "EPERM"),
        (libc::ENOENT, "ENOENT"),
        (libc::EACCES, "EACCES"),
        (libc::EXDEV, "EXDEV"),
        (libc::ENOSYS, "ENOSYS"),
        (libc::EINVAL, "EINVAL"),
        (libc::EAFNOSUPPORT, "EAFNOSUPPORT"),
        (libc::ECONNREFUSED, "ECONNREFUSED"),
        (libc::EROFS, "EROFS"),
        (libc::ESRCH, "ESRCH"),
        (libc::EBADF, "EBADF"),
        (libc::EEXIST, "EEXIST"),
        (libc::ENOTDIR, "ENOTDIR"),
        (libc::EISDIR, "EISDIR"),
        (libc::EADDRINUSE, "EADDRINUSE"),
        (libc::ENETUNREACH, "ENETUNREACH"),
        (libc::ENOTTY, "ENOTTY"),
    ];
    known
        .iter()
        .find(|(code, _)| *code == errno)
        .map_or_else(|| format!("errno{errno}"), |(_, name)| (*name).to_owned())
}

fn cstr(text: &str) -> CString {
    CString::new(text).unwrap_or_default()
}

/// `Ok(())` or the errno of the failed call.
type Outcome = Result<(), i32>;

fn check(ret: i64) -> Outcome {
    if ret < 0 { Err(errno()) } else { Ok(()) }
}

fn sockaddr_in(port: u16) -> libc::sockaddr_in {
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*addr.ip()).to_be() },
        sin_zero: [0; 8],
    }
}

/// Opens a socket, runs `op` on it with the loopback address on `port`, closes it: the
/// outcome of `op`, or of socket() when that was refused.
fn on_socket(domain: i32, kind: i32, port: u16, op: impl FnOnce(i32, *const libc::sockaddr, u32) -> isize) -> Outcome {
    // SAFETY: a socket this function owns; the address lives across the call.
    unsafe {
        let fd = libc::socket(domain, kind, 0);
        if fd < 0 {
            return Err(errno());
        }
        let addr = sockaddr_in(port);
        let ret = op(fd, (&raw const addr).cast(), size_of::<libc::sockaddr_in>() as u32);
        let outcome = check(ret as i64);
        libc::close(fd);
        outcome
    }
}

/// sendto() of one byte with `flags`.
fn send_byte(fd: i32, flags: i32, addr: *const libc::sockaddr, len: u32) -> isize {
    // SAFETY: a one-byte static buffer and a live address.
    unsafe { libc::sendto(fd, b"x".as_ptr().cast(), 1, flags, addr, len) }
}

/// Connects a stream socket to the UNIX address `name`: a path, or an abstract name (which
/// starts with a NUL byte).
fn unix_connect(name: &[u8], abstract_name: bool) -> Outcome {
    // SAFETY: a socket and an address this function owns, live across the calls.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
        if fd < 0 {
            return Err(errno());
        }
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let skip = usize::from(abstract_name);
        for (slot, byte) in addr.sun_path.iter_mut().skip(skip).zip(name) {
            *slot = *byte as libc::c_char;
        }
        // A path is NUL-terminated; an abstract name is exactly its bytes.
        let len = size_of::<libc::sa_family_t>() + skip + name.len() + usize::from(!abstract_name);
        let ret = libc::connect(fd, (&raw const addr).cast(), len as u32);
        libc::close(fd);
        check(ret as i64)
    }
}

/// Creates `path` with `mode` through the raw syscall `how` (libc would pick its own: glibc's
/// open(3) is openat(2), its mknod(3) is mknodat(2)): open, openat, openat2, creat, mknod,
/// mknodat (both a regular file), mkdir or mkdirat. A descriptor it gets is closed.
fn create(how: &str, path: &str, mode: u32) -> Outcome {
    let path = cstr(path);
    let path = path.as_ptr();
    let creat = i64::from(libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC);
    let mode = i64::from(mode);
    let regular = i64::from(libc::S_IFREG) | mode;
    let at = i64::from(libc::AT_FDCWD);
    // SAFETY: raw syscalls on a live NUL-terminated path (and, for openat2, a live struct).
    let ret = unsafe {
        match how {
            "open" => libc::syscall(libc::SYS_open, path, creat, mode),
            "openat" => libc::syscall(libc::SYS_openat, at, path, creat, mode),
            "openat2" => {
                // struct open_how { u64 flags; u64 mode; u64 resolve; } (<linux/openat2.h>).
                let how: [u64; 3] = [creat as u64, mode as u64, 0];
                libc::syscall(libc::SYS_openat2, at, path, how.as_ptr(), size_of_val(&how))
            }
            "creat" => libc::syscall(libc::SYS_creat, path, mode),
            "mknod" => libc::syscall(libc::SYS_mknod, path, regular, 0),
            "mknodat" => libc::syscall(libc::SYS_mknodat, at, path, regular, 0),
            "mkdir" => libc::syscall(libc::SYS_mkdir, path, mode),
            "mkdirat" => libc::syscall(libc::SYS_mkdirat, at, path, mode),
            _ => {
                eprintln!("attempt: unknown create syscall '{how}'");
                std::process::exit(2);
            }
        }
    };
    if ret >= 0 && (how.starts_with("open") || how == "creat") {
        // SAFETY: closing the descriptor the call just returned (a failed call returned -1).
        unsafe { libc::close(ret as i32) };
    }
    check(ret)
}

fn arg(args: &[String], index: usize) -> &str {
    args.get(index).map_or("", String::as_str)
}

fn port(args: &[String], index: usize) -> u16 {
    arg(args, index).parse().unwrap_or(0)
}

fn pid(args: &[String], index: usize) -> libc::pid_t {
    arg(args, index).parse().unwrap_or(0)
}

// SAFETY (for every `unsafe` block below): raw syscalls with valid, live arguments; nothing
// is shared with other threads.
fn attempt(args: &[String]) -> Option<Outcome> {
    let op = arg(args, 1);
    Some(match op {
        "read" => unsafe {
            let fd = libc::open(cstr(arg(args, 2)).as_ptr(), libc::O_RDONLY);
            if fd < 0 {
                return Some(Err(errno()));
            }
            let mut byte = [0u8; 1];
            let ret = libc::read(fd, byte.as_mut_ptr().cast(), 1);
            libc::close(fd);
            check(ret as i64)
        },
        "write" => unsafe {
            let fd = libc::open(cstr(arg(args, 2)).as_ptr(), libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC, 0o644);
            if fd < 0 {
                return Some(Err(errno()));
            }
            let ret = libc::write(fd, b"x".as_ptr().cast(), 1);
            libc::close(fd);
            check(ret as i64)
        },
        "mkdir" => check(unsafe { libc::mkdir(cstr(arg(args, 2)).as_ptr(), 0o755) } as i64),
        "link" => check(unsafe { libc::link(cstr(arg(args, 2)).as_ptr(), cstr(arg(args, 3)).as_ptr()) } as i64),
        "rename" => check(unsafe { libc::rename(cstr(arg(args, 2)).as_ptr(), cstr(arg(args, 3)).as_ptr()) } as i64),
        "exec" => unsafe {
            let path = cstr(arg(args, 2));
            let argv = [path.as_ptr(), std::ptr::null()];
            let envp = [std::ptr::null()];
            libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
            Err(errno())
        },
        // SAFETY (these four): plain socket calls on the socket on_socket owns.
        "tcp-connect" => on_socket(libc::AF_INET, libc::SOCK_STREAM, port(args, 2), |fd, addr, len| unsafe {
            libc::connect(fd, addr, len) as isize
        }),
        "tcp-bind" => on_socket(libc::AF_INET, libc::SOCK_STREAM, port(args, 2), |fd, addr, len| unsafe {
            libc::bind(fd, addr, len) as isize
        }),
        "udp-send" => {
            on_socket(libc::AF_INET, libc::SOCK_DGRAM, port(args, 2), |fd, addr, len| send_byte(fd, 0, addr, len))
        }
        "socket-mptcp" => check(unsafe {
            libc::socket(libc::AF_INET, libc::SOCK_STREAM, 262 /* IPPROTO_MPTCP */)
        } as i64),
        // sendto with MSG_FASTOPEN connects and sends in one call.
        "tcp-fastopen" => on_socket(libc::AF_INET, libc::SOCK_STREAM, port(args, 2), |fd, addr, len| {
            send_byte(fd, 0x2000_0000, addr, len)
        }),
        "tcp6-mapped" => unsafe {
            // connect to ::ffff:127.0.0.1 PORT over an IPv6 socket.
            let fd = libc::socket(libc::AF_INET6, libc::SOCK_STREAM, 0);
            if fd < 0 {
                return Some(Err(errno()));
            }
            let mut addr: libc::sockaddr_in6 = std::mem::zeroed();
            addr.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            addr.sin6_port = port(args, 2).to_be();
            addr.sin6_addr.s6_addr = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1];
            let ret = libc::connect(fd, (&raw const addr).cast(), size_of::<libc::sockaddr_in6>() as u32);
            libc::close(fd);
            check(ret as i64)
        },
        "prlimit" => unsafe {
            let limit = libc::rlimit64 { rlim_cur: 5, rlim_max: 5 };
            check(libc::prlimit64(pid(args, 2), libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut()) as i64)
        },
        "chmod" => {
            check(
                unsafe { libc::chmod(cstr(arg(args, 2)).as_ptr(), u32::from_str_radix(arg(args, 3), 8).unwrap_or(0)) }
                    as i64,
            )
        }
        "create" => create(arg(args, 2), arg(args, 3), u32::from_str_radix(arg(args, 4), 8).unwrap_or(0)),
        "env" => {
            println!("{}", std::env::var(arg(args, 2)).unwrap_or_else(|_| "unset".into()));
            return None;
        }
        "socket-packet" => check(unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) } as i64),
        "socket-netlink" => check(unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, 0) } as i64),
        "unix-connect" => unix_connect(arg(args, 2).as_bytes(), false),
        "abstract-connect" => unix_connect(arg(args, 2).as_bytes(), true),
        "control-request" => {
            // Asks governor's daemon at PATH to kill agent NAME, as an agent would try.
            use std::io::{BufRead as _, Write as _};
            let stream = match std::os::unix::net::UnixStream::connect(arg(args, 2)) {
                Ok(stream) => stream,
                Err(error) => return Some(Err(error.raw_os_error().unwrap_or(libc::EIO))),
            };
            let request = format!("{{\"op\":\"kill\",\"agent\":\"{}\",\"reason\":\"\"}}\n", arg(args, 3));
            let mut answer = String::new();
            // The daemon may refuse before reading anything and close: its answer is read
            // whether or not the request could be sent.
            let sent = (&stream).write_all(request.as_bytes()).is_ok();
            let _ = std::io::BufReader::new(&stream).read_line(&mut answer);
            println!(
                "{}",
                if answer.contains("\"ok\":false") {
                    "refused"
                } else if sent && answer.contains("\"ok\":true") {
                    "answered"
                } else {
                    "closed"
                }
            );
            return None;
        }
        "ptrace-attach" => check(unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid(args, 2), 0, 0) }),
        "ptrace-child" => unsafe {
            // Attach to a child of our own (it sleeps until killed).
            let child = libc::fork();
            if child == 0 {
                libc::pause();
                libc::_exit(0);
            }
            let ret = libc::ptrace(libc::PTRACE_ATTACH, child, 0, 0);
            let outcome = check(ret);
            libc::kill(child, libc::SIGKILL);
            libc::waitpid(child, std::ptr::null_mut(), 0);
            outcome
        },
        "kill" => check(unsafe { libc::kill(pid(args, 2), libc::SIGTERM) } as i64),
        "mount-tmpfs" => unsafe {
            check(libc::mount(
                cstr("none").as_ptr(),
                cstr(arg(args, 2)).as_ptr(),
                cstr("tmpfs").as_ptr(),
                0,
                std::ptr::null(),
            ) as i64)
        },
        "unshare-user" => check(unsafe { libc::unshare(libc::CLONE_NEWUSER) } as i64),
        "unshare-net" => check(unsafe { libc::unshare(libc::CLONE_NEWNET) } as i64),
        "clone-newuser" => unsafe {
            // A raw clone with CLONE_NEWUSER; the child exits at once.
            let ret = libc::syscall(libc::SYS_clone, (libc::CLONE_NEWUSER | libc::SIGCHLD) as u64, 0, 0, 0, 0);
            if ret == 0 {
                libc::_exit(0);
            }
            if ret > 0 {
                libc::waitpid(ret as i32, std::ptr::null_mut(), 0);
            }
            check(ret)
        },
        "clone3" => unsafe {
            // struct clone_args with only exit_signal set; a plain fork if allowed.
            let mut clone_args = [0u64; 11];
            clone_args[4] = libc::SIGCHLD as u64;
            let ret = libc::syscall(libc::SYS_clone3, clone_args.as_mut_ptr(), size_of_val(&clone_args));
            if ret == 0 {
                libc::_exit(0);
            }
            if ret > 0 {
                libc::waitpid(ret as i32, std::ptr::null_mut(), 0);
            }
            check(ret)
        },
        "io-uring-setup" => unsafe {
            let mut params = [0u8; 120];
            check(libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()))
        },
        "bpf" => unsafe {
            // BPF_MAP_CREATE of a 4-entry array.
            let mut attr = [0u32; 30];
            attr[0] = 2; // BPF_MAP_TYPE_ARRAY
            attr[1] = 4;
            attr[2] = 4;
            attr[3] = 4;
            check(libc::syscall(libc::SYS_bpf, 0, attr.as_mut_ptr(), size_of_val(&attr)))
        },
        "perf-event-open" => unsafe {
            let mut attr = [0u8; 128];
            attr[4..8].copy_from_slice(&128u32.to_ne_bytes()); // size
            check(libc::syscall(libc::SYS_perf_event_open, attr.as_mut_ptr(), 0, -1, -1, 0))
        },
        "keyctl" => check(unsafe {
            libc::syscall(libc::SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3, 0)
        }),
        "personality" => check(unsafe {
            libc::personality(0x0040000 /* ADDR_NO_RANDOMIZE */)
        } as i64),
        "chroot" => check(unsafe { libc::chroot(cstr(arg(args, 2)).as_ptr()) } as i64),
        "setns" => unsafe {
            let fd = libc::open(cstr(arg(args, 2)).as_ptr(), libc::O_RDONLY);
            if fd < 0 {
                return Some(Err(errno()));
            }
            let ret = libc::setns(fd, 0);
            libc::close(fd);
            check(ret as i64)
        },
        "tiocsti" => unsafe {
            // Push a byte into the input queue of the terminal on stdin.
            let byte = b'x';
            check(libc::ioctl(0, libc::TIOCSTI, &byte) as i64)
        },
        "x32-getpid" => check(unsafe { libc::syscall(libc::SYS_getpid | 0x4000_0000) }),
        "process-vm-readv" => unsafe {
            let mut buffer = [0u8; 8];
            let local = libc::iovec { iov_base: buffer.as_mut_ptr().cast(), iov_len: 8 };
            // Any address: the permission check comes before the copy.
            let remote = libc::iovec { iov_base: 0x1000 as *mut libc::c_void, iov_len: 8 };
            check(libc::process_vm_readv(pid(args, 2), &local, 1, &remote, 1, 0) as i64)
        },
        "stop-terminal" => unsafe {
            // What a hostile agent does to the terminal it shares with governor: the open file
            // description of stderr made non-blocking, and output stopped (TCXONC/TCOOFF).
            let flags = libc::fcntl(2, libc::F_GETFL);
            libc::fcntl(2, libc::F_SETFL, flags | libc::O_NONBLOCK);
            check(libc::ioctl(2, libc::TCXONC, libc::TCOOFF) as i64)
        },
        "flood" => unsafe {
            // open+close PATH COUNT times; prints ok when every open succeeded.
            let path = cstr(arg(args, 2));
            let count: u64 = arg(args, 3).parse().unwrap_or(0);
            let mut failures = 0u64;
            for _ in 0..count {
                let fd = libc::open(path.as_ptr(), libc::O_RDONLY);
                if fd < 0 {
                    failures += 1;
                } else {
                    libc::close(fd);
                }
            }
            if failures > 0 { Err(errno()) } else { Ok(()) }
        },
        "caps" => {
            // Prints the CapEff line instead of ok.
            let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            let line = status.lines().find(|line| line.starts_with("CapEff:")).unwrap_or("CapEff: ?");
            println!("{}", line.replace('\t', " "));
            return None;
        }
        "fds" => {
            // Prints the descriptors the agent holds (the listing's own is left out).
            let mut fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
                .map(|dir| dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok()).collect())
                .unwrap_or_default();
            fds.sort_unstable();
            let listed: Vec<String> = fds
                .iter()
                .filter(|fd| **fd > 2)
                .map(|fd| {
                    std::fs::read_link(format!("/proc/self/fd/{fd}"))
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                })
                .filter(|target| !target.starts_with("/proc/") || !target.ends_with("/fd"))
                .collect();
            println!("fds: 0 1 2 {}", listed.join(" "));
            return None;
        }
        "ids" => {
            // SAFETY: reading our own ids.
            let (uid, euid) = unsafe { (libc::getuid(), libc::geteuid()) };
            println!("uid={uid} euid={euid}");
            return None;
        }
        _ => {
            eprintln!("attempt: unknown operation '{op}'");
            std::process::exit(2);
        }
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match attempt(&args) {
        None => ExitCode::SUCCESS,
        Some(Ok(())) => {
            println!("ok");
            ExitCode::SUCCESS
        }
        Some(Err(errno)) => {
            println!("{}", name(errno));
            let _ = std::io::stdout().flush();
            ExitCode::from(1)
        }
    }
}
