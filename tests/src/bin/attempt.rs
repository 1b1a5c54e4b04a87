//! `attempt`: makes one operation an escaping agent would try, and prints `ok` or the errno's
//! name (`EACCES`, `EPERM`, ...). Exit 0 on success, 1 when refused, 2 on bad usage. The
//! end-to-end tests run it inside `governor run` and assert the word it prints.
//!
//! Raw libc calls throughout: the point is the syscall the kernel sees, not a library's retry.

use std::{
    ffi::CString,
    io::Write as _,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
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
        (libc::EHOSTUNREACH, "EHOSTUNREACH"),
        (libc::ETIMEDOUT, "ETIMEDOUT"),
        (libc::EADDRNOTAVAIL, "EADDRNOTAVAIL"),
        (libc::EINPROGRESS, "EINPROGRESS"),
        (libc::ENETDOWN, "ENETDOWN"),
        (libc::ESOCKTNOSUPPORT, "ESOCKTNOSUPPORT"),
        (libc::EPROTONOSUPPORT, "EPROTONOSUPPORT"),
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

/// `addr` as the sockaddr the kernel reads: `sockaddr_in`, or `sockaddr_in6` with its scope
/// id (`[fe80::1%1]:80`), in storage large enough for either.
fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, u32) {
    // SAFETY: sockaddr_storage is plain bytes; all zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than, and aligned for, sockaddr_in.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr { s6_addr: v6.ip().octets() },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as u32)
}

/// How one destination op reaches `addr`, on a fresh socket of `kind` in `addr`'s family.
#[derive(Clone, Copy)]
enum Reach {
    /// connect(): for TCP non-blocking, then up to 2 s for the handshake (a refusal by a
    /// hook is immediate; an unreachable address must not hold the test up).
    Connect,
    /// sendto() of one byte.
    SendTo,
    /// sendmsg() of one byte, the address in msg_name.
    SendMsg,
    /// connect() to the first address of the list, then sendto() to this one: the address
    /// of each datagram is checked, not only the connected one.
    ConnectedSendTo(SocketAddr),
    /// TCP_FASTOPEN_CONNECT, then a blocking connect(): with Fast Open the kernel returns at
    /// once and sends the SYN with the first write, so the hook must refuse at connect.
    FastOpenConnect,
}

fn reach(kind: i32, how: Reach, addr: &SocketAddr) -> Outcome {
    let domain = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    let (target, len) = sockaddr(addr);
    let target: *const libc::sockaddr = (&raw const target).cast();
    // SAFETY: a socket this function owns; every address lives across the calls using it.
    unsafe {
        let fd = libc::socket(domain, kind | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(errno());
        }
        let outcome = match how {
            Reach::Connect if kind == libc::SOCK_STREAM => {
                libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK);
                match check(libc::connect(fd, target, len) as i64) {
                    Err(libc::EINPROGRESS) => {
                        let mut poll = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
                        if libc::poll(&mut poll, 1, 2000) == 0 {
                            Err(libc::ETIMEDOUT)
                        } else {
                            let mut error = 0i32;
                            let mut size = size_of::<i32>() as u32;
                            libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, (&raw mut error).cast(), &mut size);
                            if error == 0 { Ok(()) } else { Err(error) }
                        }
                    }
                    other => other,
                }
            }
            Reach::Connect => check(libc::connect(fd, target, len) as i64),
            Reach::FastOpenConnect => {
                let on = 1i32;
                let size = size_of::<i32>() as u32;
                // 30: TCP_FASTOPEN_CONNECT (Linux 4.11).
                match check(libc::setsockopt(fd, libc::IPPROTO_TCP, 30, (&raw const on).cast(), size) as i64) {
                    Ok(()) => check(libc::connect(fd, target, len) as i64),
                    Err(errno) => Err(errno),
                }
            }
            Reach::SendTo => check(send_byte(fd, 0, target, len) as i64),
            Reach::SendMsg => {
                let mut byte = *b"x";
                let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_name = target.cast_mut().cast();
                msg.msg_namelen = len;
                msg.msg_iov = &raw mut iov;
                msg.msg_iovlen = 1;
                check(libc::sendmsg(fd, &msg, 0) as i64)
            }
            Reach::ConnectedSendTo(via) => {
                let (via, via_len) = sockaddr(&via);
                match check(libc::connect(fd, (&raw const via).cast(), via_len) as i64) {
                    Ok(()) => check(send_byte(fd, 0, target, len) as i64),
                    Err(errno) => Err(errno),
                }
            }
        };
        libc::close(fd);
        outcome
    }
}

/// Runs `how` for each address (`ADDR:PORT` or `[ADDR6%SCOPE]:PORT`) and prints one line per
/// address: the address as given and `ok` or the errno's name.
fn reach_each(kind: i32, how: Reach, addrs: &[String]) {
    for text in addrs {
        let word = match text.parse::<SocketAddr>() {
            Ok(addr) => match reach(kind, how, &addr) {
                Ok(()) => "ok".to_owned(),
                Err(errno) => name(errno),
            },
            Err(_) => "bad-address".to_owned(),
        };
        println!("{text} {word}");
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
        // listen(2) on a TCP socket never bound: the kernel picks its port.
        "tcp-listen" => unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            if fd < 0 {
                return Some(Err(errno()));
            }
            let result = check(libc::listen(fd, 1) as i64);
            libc::close(fd);
            result
        },
        // listen(2) on a TCP socket never bound (or first bound to PORT on the loopback),
        // its port printed (`port N`), then up to SECONDS for a connection to arrive: `ok`
        // once one is accepted, else ETIMEDOUT.
        "tcp-listen-serve" => unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            if fd < 0 {
                return Some(Err(errno()));
            }
            if let Some(port) = args.get(3).and_then(|port| port.parse::<u16>().ok()) {
                let addr = sockaddr_in(port);
                if libc::bind(fd, (&raw const addr).cast(), size_of::<libc::sockaddr_in>() as u32) < 0 {
                    return Some(Err(errno()));
                }
            }
            if libc::listen(fd, 1) < 0 {
                return Some(Err(errno()));
            }
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            if libc::getsockname(fd, (&raw mut addr).cast(), &mut len) < 0 {
                return Some(Err(errno()));
            }
            println!("port {}", u16::from_be(addr.sin_port));
            let _ = std::io::stdout().flush();
            let seconds: i32 = arg(args, 2).parse().unwrap_or(5);
            let mut poll = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            let result = match libc::poll(&mut poll, 1, seconds * 1000) {
                0 => Err(libc::ETIMEDOUT),
                ready if ready < 0 => Err(errno()),
                _ => check(libc::accept(fd, std::ptr::null_mut(), std::ptr::null_mut()) as i64),
            };
            libc::close(fd);
            result
        },
        // A UNIX stream socket bound at PATH, then listened on.
        "unix-listen" => unsafe {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            if fd < 0 {
                return Some(Err(errno()));
            }
            let mut addr: libc::sockaddr_un = std::mem::zeroed();
            addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
            for (to, from) in addr.sun_path.iter_mut().zip(arg(args, 2).bytes()) {
                *to = from as libc::c_char;
            }
            let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            let result = if libc::bind(fd, std::ptr::addr_of!(addr).cast(), len) < 0 {
                Err(errno())
            } else {
                check(libc::listen(fd, 1) as i64)
            };
            libc::close(fd);
            result
        },
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
        // One line per address: `ADDR WORD`. The destination ops of tests/tests/network.rs.
        "tcp-connect-each" => {
            reach_each(libc::SOCK_STREAM, Reach::Connect, args.get(2..).unwrap_or_default());
            return None;
        }
        "tcp-fastopen-connect-each" => {
            reach_each(libc::SOCK_STREAM, Reach::FastOpenConnect, args.get(2..).unwrap_or_default());
            return None;
        }
        "udp-connect-each" => {
            reach_each(libc::SOCK_DGRAM, Reach::Connect, args.get(2..).unwrap_or_default());
            return None;
        }
        "udp-sendto-each" => {
            reach_each(libc::SOCK_DGRAM, Reach::SendTo, args.get(2..).unwrap_or_default());
            return None;
        }
        "udp-sendmsg-each" => {
            reach_each(libc::SOCK_DGRAM, Reach::SendMsg, args.get(2..).unwrap_or_default());
            return None;
        }
        // UDP connected to VIA (the first address), then sendto each of the others.
        "udp-connected-sendto-each" => {
            let addrs = args.get(3..).unwrap_or_default();
            match arg(args, 2).parse::<SocketAddr>() {
                Ok(via) => reach_each(libc::SOCK_DGRAM, Reach::ConnectedSendTo(via), addrs),
                Err(_) => println!("bad-address"),
            }
            return None;
        }
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
        // Inet sockets of other types than stream and datagram, protocol 0: SCTP
        // (SOCK_SEQPACKET) and DCCP (type 6) where their modules are loaded.
        "socket-inet-seqpacket" => check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_SEQPACKET, 0) } as i64),
        "socket-inet6-dccp" => check(unsafe { libc::socket(libc::AF_INET6, 6, 0) } as i64),
        // What stays: TCP with the creation flags, and UNIX sequenced packets.
        "socket-inet-stream-flags" => check(unsafe {
            libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0)
        } as i64),
        "socket-unix-seqpacket" => check(unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET, 0) } as i64),
        "socket-netlink" => check(unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, 0) } as i64),
        "unix-connect" => unix_connect(arg(args, 2).as_bytes(), false),
        // Waits up to SECONDS for PATH to exist (a socket bound after the agent started),
        // then connects to it.
        "unix-connect-when" => {
            let seconds: u64 = arg(args, 3).parse().unwrap_or(10);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
            while std::fs::symlink_metadata(arg(args, 2)).is_err() {
                if std::time::Instant::now() > deadline {
                    return Some(Err(libc::ETIMEDOUT));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            unix_connect(arg(args, 2).as_bytes(), false)
        }
        // One datagram to the pathname socket PATH.
        "unix-send" => match std::os::unix::net::UnixDatagram::unbound() {
            Ok(socket) => {
                socket.send_to(b"x", arg(args, 2)).map(drop).map_err(|error| error.raw_os_error().unwrap_or(0))
            }
            Err(error) => Err(error.raw_os_error().unwrap_or(0)),
        },
        // The agent's own sockets: a stream server bound at PATH, connected to, and a
        // datagram socket bound at PATH.d, sent to.
        "unix-self" => {
            let path = arg(args, 2);
            let dgram = format!("{path}.d");
            let _ = std::fs::remove_file(path);
            let _ = std::fs::remove_file(&dgram);
            let os = |error: std::io::Error| error.raw_os_error().unwrap_or(0);
            std::os::unix::net::UnixListener::bind(path)
                .and_then(|listener| std::os::unix::net::UnixStream::connect(path).map(|stream| (listener, stream)))
                .map_err(os)
                .and_then(|_| {
                    let server = std::os::unix::net::UnixDatagram::bind(&dgram).map_err(os)?;
                    let client = std::os::unix::net::UnixDatagram::unbound().map_err(os)?;
                    client.send_to(b"x", &dgram).map_err(os)?;
                    drop(server);
                    Ok(())
                })
        }
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
        "sys" => unsafe {
            // The named path syscall itself, not glibc's choice of it (glibc's open and
            // mkdir may call openat and mkdirat): `sys NAME PATH [PATH2]`.
            let (a, b) = (cstr(arg(args, 3)), cstr(arg(args, 4)));
            let (a, b) = (a.as_ptr(), b.as_ptr());
            let cwd = libc::AT_FDCWD;
            check(match arg(args, 2) {
                "open" => libc::syscall(libc::SYS_open, a, libc::O_WRONLY | libc::O_CREAT, 0o644),
                "creat" => libc::syscall(libc::SYS_creat, a, 0o644),
                "mkdir" => libc::syscall(libc::SYS_mkdir, a, 0o755),
                "mkdirat" => libc::syscall(libc::SYS_mkdirat, cwd, a, 0o755),
                "rmdir" => libc::syscall(libc::SYS_rmdir, a),
                "unlink" => libc::syscall(libc::SYS_unlink, a),
                "unlinkat" => libc::syscall(libc::SYS_unlinkat, cwd, a, 0),
                "rename" => libc::syscall(libc::SYS_rename, a, b),
                "renameat2" => libc::syscall(libc::SYS_renameat2, cwd, a, cwd, b, 0),
                "link" => libc::syscall(libc::SYS_link, a, b),
                "linkat" => libc::syscall(libc::SYS_linkat, cwd, a, cwd, b, 0),
                "symlink" => libc::syscall(libc::SYS_symlink, a, b),
                "symlinkat" => libc::syscall(libc::SYS_symlinkat, a, cwd, b),
                "truncate" => libc::syscall(libc::SYS_truncate, a, 0),
                "mknod" => libc::syscall(libc::SYS_mknod, a, libc::S_IFREG | 0o644, 0),
                "chmod" => libc::syscall(libc::SYS_chmod, a, 0o4755),
                "chown" => libc::syscall(libc::SYS_chown, a, 12345, 12345),
                _ => return None,
            })
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
        "time-flood" => unsafe {
            // As flood, and prints the loop's time in nanoseconds instead of ok (the VM's
            // benchmarks time a process outside any agent with it; busybox has no clock
            // finer than a second).
            let path = cstr(arg(args, 2));
            let count: u64 = arg(args, 3).parse().unwrap_or(0);
            let start = std::time::Instant::now();
            for _ in 0..count {
                let fd = libc::open(path.as_ptr(), libc::O_RDONLY);
                if fd < 0 {
                    return Some(Err(errno()));
                }
                libc::close(fd);
            }
            println!("{}", start.elapsed().as_nanos());
            return None;
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
