//! The daemon's loop and its control socket: one thread (a current-thread tokio runtime)
//! waits on signals, the ring buffer, the control socket's lines (read by small tasks that
//! hand them over), the HTTP doors' calls and a tick; every peer is checked before its
//! first line is read.

use std::{
    collections::HashMap,
    os::fd::AsRawFd as _,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use nix::sys::{signal::Signal, signalfd::SignalFd};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, Interest, unix::AsyncFd},
    net::{TcpListener, UnixListener, UnixStream},
    sync::mpsc,
};

use crate::{audit, probes::events::Sink, service};

use super::{
    Daemon, Failure,
    agents::{Dispatch, state_of},
    control,
    control::{Act, Peer, Request},
    door, failure, http, notify, watchdog_interval,
};

/// What the connection tasks hand to the loop.
pub(super) enum Message {
    Line(u64, String),
    /// The writer committed rows.
    Committed,
    /// The answer of a read done on another thread.
    Reply(u64, String),
    Closed(u64),
}

/// Where a service call's answer goes.
pub(super) enum Reply {
    /// A line on a control connection.
    Socket(mpsc::UnboundedSender<String>),
    /// An HTTP handler waiting for it.
    Http(tokio::sync::oneshot::Sender<service::Answer>),
}

/// The HTTP listeners, bound before the loop starts.
pub(super) struct Doors {
    pub(super) metrics: Option<std::net::TcpListener>,
    pub(super) http: Option<(std::net::TcpListener, String)>,
    pub(super) unix: std::os::unix::net::UnixListener,
}

/// A service answer as a control socket line.
pub(super) fn answer_line(answer: service::Answer) -> String {
    let mut line = match answer {
        Ok(mut value) => {
            if let serde_json::Value::Object(map) = &mut value {
                map.insert("ok".into(), true.into());
            } else {
                value = serde_json::json!({ "ok": true, "value": value });
            }
            value.to_string()
        }
        Err(error) => {
            serde_json::json!({ "ok": false, "error": error.error, "field": error.field, "kind": error.kind })
                .to_string()
        }
    };
    line.push('\n');
    line
}

/// How often the loop drains the ring buffer, reads the drop counter, checks orphaned
/// agents and the store.
pub(super) const TICK: Duration = Duration::from_millis(10);

/// How often the daemon says it is alive (state file, systemd watchdog).
pub(super) const HEARTBEAT: Duration = Duration::from_secs(1);

impl<'w> Daemon<'w> {
    pub(super) async fn serve(
        &mut self,
        listener: std::os::unix::net::UnixListener,
        doors: Doors,
        signals: SignalFd,
    ) -> Result<(), Failure> {
        let listener = UnixListener::from_std(listener).map_err(failure)?;
        let ring = self.probes.take_events().map_err(failure)?;
        // SAFETY (both): the AsyncFd owns the signalfd and the ring buffer map, whose
        // descriptors stay open and unchanged until it is dropped.
        let signals = unsafe { AsyncFd::register_with_interest(signals, Interest::READABLE) }
            .map_err(|error| failure(format!("watching signals: {error:?}")))?;
        let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|error| failure(format!("watching the ring buffer: {error:?}")))?;
        let (sender, mut messages) = mpsc::unbounded_channel::<Message>();
        let committed = sender.clone();
        self.writer.on_commit(Box::new(move || {
            let _ = committed.send(Message::Committed);
        }));
        let (commits, commits_seen) = tokio::sync::watch::channel(0u64);
        let (asked, mut asks) = mpsc::unbounded_channel::<door::Asked>();
        let door = door::Door { asked, commits: commits_seen.clone(), store: self.hello.audit_db.clone(), token: None };
        if let Some(listener) = doors.metrics {
            let listener = TcpListener::from_std(listener).map_err(failure)?;
            tokio::spawn(http::serve_tcp(listener, http::metrics_router(door.clone())));
        }
        if let Some((listener, token)) = doors.http {
            let listener = TcpListener::from_std(listener).map_err(failure)?;
            let door = door::Door { token: Some(token.into()), ..door.clone() };
            tokio::spawn(http::serve_tcp(listener, http::router(door)));
        }
        let unix = UnixListener::from_std(doors.unix).map_err(failure)?;
        tokio::spawn(http::serve_unix(unix, http::router(door)));
        let mut replies: HashMap<u64, (mpsc::UnboundedSender<String>, Peer)> = HashMap::new();
        let mut streams: HashMap<u64, Vec<tokio::task::AbortHandle>> = HashMap::new();
        let mut next_connection = 0u64;
        let mut deferred: Vec<(mpsc::UnboundedSender<String>, String, u64)> = Vec::new();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heartbeat = Instant::now() - HEARTBEAT;
        let idle_exit = self.idle_exit;
        let mut idle_since = Instant::now();
        let watchdog = watchdog_interval();
        self.heartbeat();
        notify(&[sd_notify::NotifyState::Ready]);
        tracing::info!(
            socket = %listener.local_addr().ok().and_then(|addr| addr.as_pathname().map(|p| p.display().to_string())).unwrap_or_default(),
            backend = %self.probes.backend,
            metrics = self.hello.metrics.as_deref().unwrap_or("off"),
            http = self.hello.http.as_deref().unwrap_or("off"),
            agents = self.agents.len(),
            "governor daemon ready"
        );
        loop {
            tokio::select! {
                guard = signals.readable() => {
                    let mut guard = guard.map_err(failure)?;
                    let mut stop = false;
                    while let Ok(Some(info)) = guard.get_inner().read_signal() {
                        match Signal::try_from(info.ssi_signo as i32) {
                            Ok(Signal::SIGHUP) => {
                                notify(&[sd_notify::NotifyState::Reloading, sd_notify::NotifyState::monotonic_usec_now().unwrap_or(sd_notify::NotifyState::Ready)]);
                                let _ = self.reload(ring.get_mut());
                                notify(&[sd_notify::NotifyState::Ready]);
                            }
                            Ok(_) => stop = true,
                            Err(_) => {}
                        }
                    }
                    guard.clear_ready();
                    if stop {
                        tracing::info!(agents = self.agents.len(), "stopping; agents keep running and are watched again by the next daemon");
                        notify(&[sd_notify::NotifyState::Stopping]);
                        self.stop(ring.get_mut());
                        return Ok(());
                    }
                }
                guard = ring.readable_mut() => {
                    let mut guard = guard.map_err(failure)?;
                    crate::supervise::drain(guard.get_inner_mut(), &mut Dispatch { daemon: self });
                    guard.clear_ready();
                }
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let Some(peer) = peer_of(&stream) else { continue };
                    next_connection += 1;
                    let id = next_connection;
                    let (reply, outgoing) = mpsc::unbounded_channel::<String>();
                    // The pid is checked against /proc/PID/cgroup; with a pidfd of the peer
                    // (Linux 6.5+) it is known not to have been reused meanwhile.
                    let pidfd = peer_pidfd(&stream);
                    let admitted = control::admit(&peer, self.control_group).and_then(|()| match &pidfd {
                        Some(pidfd) if !alive(pidfd) => Err(format!("pid {} exited before it could be checked", peer.pid)),
                        _ => Ok(()),
                    });
                    if let Err(why) = admitted {
                        tracing::warn!(pid = peer.pid, uid = peer.uid, why = %why, "control connection refused");
                        let _ = reply.send(refusal(&format!("refused: {why}")));
                        drop(reply);
                        let (_, write) = stream.into_split();
                        tokio::spawn(write_lines(write, outgoing));
                        continue;
                    }
                    replies.insert(id, (reply, peer));
                    let (read, write) = stream.into_split();
                    tokio::spawn(write_lines(write, outgoing));
                    tokio::spawn(read_lines(id, read, sender.clone()));
                }
                Some(asked) = asks.recv() => match asked {
                    door::Asked::Call { caller, call, reply } => {
                        self.dispatch(*call, &caller, Reply::Http(reply), ring.get_mut(), &commits_seen);
                    }
                    door::Asked::Metrics(reply) => {
                        let _ = reply.send(self.metrics.render(&self.agent_states()));
                    }
                },
                Some(message) = messages.recv() => match message {
                    Message::Line(id, line) => {
                        let Some((reply, peer)) = replies.get(&id) else { continue };
                        let request = match serde_json::from_str::<Request>(&line) {
                            Ok(request) => request,
                            Err(error) => {
                                let _ = reply.send(refusal(&format!("malformed request: {error}")));
                                continue;
                            }
                        };
                        if let Request::Api(call) = request {
                            let caller = peer.caller();
                            let reply = Reply::Socket(reply.clone());
                            if let Some(stream) = self.dispatch(call, &caller, reply, ring.get_mut(), &commits_seen) {
                                streams.entry(id).or_default().push(stream);
                            }
                            continue;
                        }
                        if let Request::Read(read) = request {
                            // Reads of the store can be long (a query over millions of rows):
                            // off the loop, which must stay free to freeze agents.
                            let store = self.hello.audit_db.clone();
                            let rings = self.rings.clone();
                            let sender = sender.clone();
                            let spawned = std::thread::Builder::new().name("audit-read".into()).spawn(move || {
                                let mut output = Vec::new();
                                let result = read.run(&mut output, &store, rings.as_deref());
                                let (code, error) = match result {
                                    Ok(code) => (code, String::new()),
                                    Err((code, error)) => (code, error),
                                };
                                let output = String::from_utf8_lossy(&output).into_owned();
                                let mut line = serde_json::json!({ "ok": true, "code": code, "output": output, "error": error }).to_string();
                                line.push('\n');
                                let _ = sender.send(Message::Reply(id, line));
                            });
                            if spawned.is_err() {
                                let _ = reply.send(refusal("cannot start a reader thread"));
                            }
                            continue;
                        }
                        let peer = peer.clone();
                        let durable = matches!(request, Request::Exited { .. });
                        let answer = self.handle(id, &peer, request, ring.get_mut());
                        if durable && self.writer.committed() < self.writer.queued() {
                            // `governor run` returns once the agent's last rows are in the
                            // store, as standalone: answered when the writer has committed them.
                            deferred.push((reply.clone(), answer, self.writer.queued()));
                        } else {
                            let _ = reply.send(answer);
                        }
                    }
                    Message::Committed => {
                        let committed = self.writer.committed();
                        commits.send_replace(committed);
                        deferred.retain(|(reply, answer, target)| {
                            let done = committed >= *target;
                            if done {
                                let _ = reply.send(answer.clone());
                            }
                            !done
                        });
                    }
                    Message::Reply(id, line) => {
                        if let Some((reply, _)) = replies.get(&id) {
                            let _ = reply.send(line);
                        }
                    }
                    Message::Closed(id) => {
                        replies.remove(&id);
                        // Its event streams end with it.
                        for stream in streams.remove(&id).unwrap_or_default() {
                            stream.abort();
                        }
                        self.connection_closed(id);
                    }
                },

                _ = tick.tick() => {
                    self.drain_events(ring.get_mut());
                    self.report_drops();
                    for supervised in self.agents.values_mut() {
                        supervised.output.tick();
                    }
                    self.check_orphans(ring.get_mut());
                    if !self.agents.is_empty() || !replies.is_empty() {
                        idle_since = Instant::now();
                    } else if idle_exit.is_some_and(|idle| idle_since.elapsed() >= idle) {
                        tracing::info!(idle = ?idle_since.elapsed(), "stopping: no agent and no connection (--idle-exit)");
                        notify(&[sd_notify::NotifyState::Stopping]);
                        self.stop(ring.get_mut());
                        return Ok(());
                    }
                    if last_heartbeat.elapsed() >= HEARTBEAT.min(watchdog.unwrap_or(HEARTBEAT)) {
                        last_heartbeat = Instant::now();
                        self.heartbeat();
                        if watchdog.is_some() {
                            notify(&[sd_notify::NotifyState::Watchdog]);
                        }
                    }
                }
            }
        }
    }

    /// Answers one request (reads are answered by reader threads, in the loop).
    pub(super) fn handle(
        &mut self,
        connection: u64,
        peer: &Peer,
        request: Request,
        ring: &mut RingBuf<MapData>,
    ) -> String {
        let result = match request {
            Request::Hello => serde_json::to_value(&self.hello).map_err(|error| error.to_string()),
            // Launching is root's: the daemon reads the agent's --policy files as root, and a
            // group member must not get other files' lines back in a parse error.
            Request::Register(_) if peer.uid != 0 => Err("only root may launch agents through the daemon".into()),
            Request::Register(registration) => self.register(connection, peer.pid as u32, registration),
            Request::Attach { agent } => match self.names.get(&agent).copied() {
                Some(id) => {
                    if let Some(supervised) = self.agents.get_mut(&id) {
                        supervised.connection = Some(connection);
                        supervised.orphaned_since = None;
                        tracing::info!(agent = %agent, "its governor run is attached again");
                    }
                    self.take_opens(id, peer.pid as u32)
                }
                None => Err(format!("unknown agent '{agent}'")),
            },
            Request::Started { .. } if peer.uid != 0 => Err("only root may launch agents through the daemon".into()),
            Request::Started { agent, pid, session } => self.started(&agent, pid, session),
            Request::Exited { agent, code } => self.exited(&agent, Some(code), ring),
            Request::Suspend { agent, reason } => self.act(&agent, Act::Suspend, &peer.describe(), &reason),
            Request::Resume { agent, reason } => self.act(&agent, Act::Resume, &peer.describe(), &reason),
            Request::Kill { agent, reason } => self.act(&agent, Act::Kill, &peer.describe(), &reason),
            Request::Reload => self.reload(ring).map(|rules| serde_json::json!({ "rules": rules })),
            Request::Read(_) => Err("reads are answered by the loop's reader threads".into()),
            Request::Api(_) => Err("service calls are answered by dispatch".into()),
            Request::Agents => Ok(serde_json::Value::Array(
                self.agents
                    .values()
                    .map(|supervised| {
                        serde_json::json!({
                            "agent": supervised.output.agent_id,
                            "trust": supervised.registration.trust,
                            "state": state_of(supervised),
                            "cgroup_id": supervised.cgroup_id,
                        })
                    })
                    .collect(),
            ))
            .map(|agents| serde_json::json!({ "agents": agents })),
        };
        match result {
            Ok(mut value) => {
                if let serde_json::Value::Object(map) = &mut value {
                    map.insert("ok".into(), true.into());
                }
                let mut line = value.to_string();
                line.push('\n');
                line
            }
            Err(error) => refusal(&error),
        }
    }

    /// The time the daemon was last alive, for the next one to measure the gap.
    pub(super) fn heartbeat(&self) {
        let path = self.state_dir.join("daemon.alive");
        let _ = std::fs::write(&path, audit::now_ns().to_string());
    }

    /// Every event there is, to the agents' outputs: as a standalone run does, what was read
    /// in userspace (the notify backend) first, then the ring buffer.
    pub(super) fn drain_events(&mut self, ring: &mut RingBuf<MapData>) {
        let read = self.probes.read_userspace();
        crate::supervise::deliver(read, &mut Dispatch { daemon: self });
        crate::supervise::drain(ring, &mut Dispatch { daemon: self });
    }

    /// On the way out: what was decided is recorded; agents stay as they are.
    pub(super) fn stop(&mut self, ring: &mut RingBuf<MapData>) {
        self.drain_events(ring);
        for supervised in self.agents.values_mut() {
            while supervised.output.write_pending(usize::MAX) {}
            supervised.output.finish();
            supervised.output.record_action("unwatched", "governor daemon", "the daemon stopped; the agent runs on");
        }
        self.heartbeat();
    }
}

/// Sends a service answer to its door.
pub(super) fn send(reply: Reply, answer: service::Answer) {
    match reply {
        Reply::Socket(line) => {
            let _ = line.send(answer_line(answer));
        }
        Reply::Http(reply) => {
            let _ = reply.send(answer);
        }
    }
}

pub(super) fn refusal(error: &str) -> String {
    let mut line = serde_json::json!({ "ok": false, "error": error }).to_string();
    line.push('\n');
    line
}

pub(super) fn peer_of(stream: &UnixStream) -> Option<Peer> {
    let fd = stream.as_raw_fd();
    // SAFETY: the descriptor belongs to `stream`, which outlives this borrow.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let credentials = nix::sys::socket::getsockopt(&borrowed, nix::sys::socket::sockopt::PeerCredentials).ok()?;
    Some(Peer { pid: credentials.pid(), uid: credentials.uid(), gid: credentials.gid() })
}

/// `SO_PEERPIDFD` (Linux 6.5): a pidfd of the process that connected.
const SO_PEERPIDFD: libc::c_int = 77;

pub(super) fn peer_pidfd(stream: &impl std::os::fd::AsRawFd) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd as _;
    let mut pidfd: libc::c_int = -1;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt(2) into a c_int of the size given, on the stream's descriptor.
    let ret = unsafe {
        libc::getsockopt(stream.as_raw_fd(), libc::SOL_SOCKET, SO_PEERPIDFD, (&raw mut pidfd).cast(), &raw mut len)
    };
    // SAFETY: on success the kernel returned a new descriptor that this process now owns.
    (ret == 0 && pidfd >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(pidfd) })
}

/// Whether the process of `pidfd` is still running (pidfd_send_signal with signal 0).
pub(super) fn alive(pidfd: &std::os::fd::OwnedFd) -> bool {
    // SAFETY: pidfd_send_signal(2) with signal 0 only checks; the descriptor is a pidfd.
    let ret = unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), 0, std::ptr::null::<libc::siginfo_t>(), 0)
    };
    ret == 0
}

/// Longest request line accepted.
const MAX_LINE: u64 = 1 << 20;

async fn read_lines(id: u64, read: tokio::net::unix::OwnedReadHalf, sender: mpsc::UnboundedSender<Message>) {
    let mut reader = tokio::io::BufReader::new(read.take(u64::MAX));
    loop {
        let mut line = String::new();
        reader.get_mut().set_limit(MAX_LINE);
        match reader.read_line(&mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) if !line.ends_with('\n') => break,
            Ok(_) => {
                if sender.send(Message::Line(id, line)).is_err() {
                    break;
                }
            }
        }
    }
    let _ = sender.send(Message::Closed(id));
}

async fn write_lines(mut write: tokio::net::unix::OwnedWriteHalf, mut lines: mpsc::UnboundedReceiver<String>) {
    while let Some(line) = lines.recv().await {
        if write.write_all(line.as_bytes()).await.is_err() {
            return;
        }
    }
    let _ = write.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::ApiError;

    #[test]
    fn service_answers_become_lines_with_ok_and_refusals_keep_their_field() {
        let line = answer_line(Ok(serde_json::json!({ "agent": "a" })));
        assert_eq!(line, "{\"agent\":\"a\",\"ok\":true}\n");
        let line = answer_line(Err(ApiError::bad("limit", "limit must be at least 1")));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        assert_eq!(value["ok"], false);
        assert_eq!(value["field"], "limit");
        assert_eq!(value["kind"], "bad-request");
        let parsed: ApiError = serde_json::from_value(value).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(parsed.kind.status(), 400);
    }

    #[test]
    fn a_peer_pidfd_tells_a_live_peer_from_one_that_has_exited() {
        // Our own end's peer is this process: alive.
        let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap_or_else(|error| panic!("{error}"));
        match peer_pidfd(&ours) {
            Some(pidfd) => assert!(alive(&pidfd)),
            None => println!("no SO_PEERPIDFD on this kernel (before 6.5): the pid-reuse check is skipped"),
        }
        // A child that has exited and been reaped: its pidfd says so.
        let mut child = std::process::Command::new("true").spawn().unwrap_or_else(|error| panic!("{error}"));
        // SAFETY: pidfd_open(2) on our own child, which is not reaped yet.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
        assert!(raw >= 0, "pidfd_open");
        // SAFETY: a new descriptor this process owns.
        let pidfd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw as i32) };
        let _ = child.wait();
        assert!(!alive(&pidfd));
    }
}
