//! The supervisor's loop while an agent runs: forwards signals, reaps children, and drains
//! the probes' ring buffer into the event sink, reporting every event the kernel dropped.
//! One thread (a current-thread tokio runtime, started after the fork), waiting on the
//! signalfd and the ring buffer with `AsyncFd`.

use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use nix::{
    errno::Errno,
    sys::{
        signal::{Signal, kill},
        signalfd::SignalFd,
        wait::{WaitPidFlag, WaitStatus, waitpid},
    },
    unistd::Pid,
};
use tokio::io::{Interest, unix::AsyncFd};

use crate::probes::{
    Probes,
    events::{Sink, decode},
    landlock_audit::{AuditLog, Marker},
};

/// How often the ring buffer is drained and the drop counters read while the agent runs.
/// The programs wake the loop at once for refusals and errors, and when 1 MiB has piled
/// up; ordinary events wait for this tick rather than cost a wakeup each.
const TICK: Duration = Duration::from_millis(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {errno}")]
    Sys { what: &'static str, errno: Errno },
    #[error("{what}: {source}")]
    Io { what: &'static str, source: std::io::Error },
    #[error(transparent)]
    Probes(#[from] crate::probes::Error),
}

/// The event side: the probes and where their events go.
pub struct Events<'a> {
    pub probes: &'a mut Probes,
    pub sink: &'a mut dyn Sink,
    /// Drops already reported, in all and per agent.
    reported_drops: u64,
    reported_by_agent: std::collections::HashMap<u64, u64>,
}

impl<'a> Events<'a> {
    pub fn new(probes: &'a mut Probes, sink: &'a mut dyn Sink) -> Events<'a> {
        Events { probes, sink, reported_drops: 0, reported_by_agent: std::collections::HashMap::new() }
    }

    /// Hands what the notify backend read in userspace (fanotify, Landlock's audit records)
    /// to the sink, and reports what was lost.
    fn drain_audit(&mut self) {
        let _ = deliver(self.probes.read_userspace(), self.sink);
    }

    /// Drains the audit records until a marker logged now has come back behind them (see
    /// the daemon's exit), or, where the kernel refuses one, until none has come for a
    /// while (at most 100 ms).
    fn settle_audit(&mut self) {
        let Some(mark) = self.probes.audit.as_mut().map(AuditLog::mark) else {
            return;
        };
        if let Some(mark) = mark {
            let deadline = std::time::Instant::now() + Duration::from_millis(100);
            loop {
                self.drain_audit();
                let Some(audit) = self.probes.audit.as_mut() else { return };
                match audit.wait_for(mark, deadline) {
                    Marker::Back => return self.drain_audit(),
                    Marker::Awaited => {}
                    Marker::Overdue => return,
                }
            }
        }
        let mut quiet = 0;
        while quiet < 5 {
            std::thread::sleep(Duration::from_millis(20));
            let before = self.probes.audit.as_ref().map_or(0, |audit| audit.received());
            self.drain_audit();
            let after = self.probes.audit.as_ref().map_or(0, |audit| audit.received());
            quiet = if after == before { quiet + 1 } else { 0 };
        }
    }

    /// Reports drops counted since the last call: the total, then each agent's share.
    fn report_drops(&mut self) -> Result<(), Error> {
        let dropped = self.probes.counters()?.dropped;
        if dropped > self.reported_drops {
            self.sink.lost(dropped - self.reported_drops);
            self.reported_drops = dropped;
            for (cgroup_id, count) in new_drops(self.probes, &mut self.reported_by_agent)? {
                self.sink.lost_in(cgroup_id, count);
            }
        }
        Ok(())
    }
}

/// Hands events read in userspace to `sink`, after their losses; whether there was any.
pub fn deliver(read: crate::probes::Userspace, sink: &mut dyn Sink) -> bool {
    let came = !read.events.is_empty() || read.lost > 0;
    if read.lost > 0 {
        sink.lost(read.lost);
    }
    for (cgroup_id, count) in read.lost_in {
        sink.lost_in(cgroup_id, count);
    }
    if !read.events.is_empty() {
        sink.events(read.events);
        while sink.write_pending(usize::MAX) {}
    }
    came
}

/// Before a held exec is decided: the notify backend's records of the time before it. An
/// earlier refusal (a secret's) comes through the audit socket, from kauditd's thread, and
/// may arrive after the exec's event is in the ring buffer; the exec is held meanwhile, so
/// waiting for it costs the agent time only. `step` reads and delivers once (`deliver`),
/// and says whether anything came; it runs until nothing has for 2 ms, at most 20 ms.
pub fn catch_up(mut step: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    let mut last = started;
    while started.elapsed() < Duration::from_millis(20) {
        if step() {
            last = std::time::Instant::now();
        }
        if last.elapsed() >= Duration::from_millis(2) {
            return;
        }
        std::thread::sleep(Duration::from_micros(250));
    }
}

/// The standalone loop's sink with its probes: a held exec waits for the userspace sources.
struct WithProbes<'s> {
    probes: &'s mut Probes,
    sink: &'s mut dyn Sink,
}

impl Sink for WithProbes<'_> {
    fn event(&mut self, event: &crate::probes::events::Event) {
        self.sink.event(event);
    }
    fn events(&mut self, batch: Vec<crate::probes::events::Event>) {
        self.sink.events(batch);
    }
    fn write_pending(&mut self, max: usize) -> bool {
        self.sink.write_pending(max)
    }
    fn lost(&mut self, count: u64) {
        self.sink.lost(count);
    }
    fn undecodable(&mut self, error: &crate::probes::events::DecodeError) {
        self.sink.undecodable(error);
    }
    fn lost_in(&mut self, cgroup_id: u64, count: u64) {
        self.sink.lost_in(cgroup_id, count);
    }
    fn tick(&mut self) {
        self.sink.tick();
    }
    fn catch_up(&mut self) {
        if self.probes.backend == crate::probes::Backend::Notify {
            let (probes, sink) = (&mut *self.probes, &mut *self.sink);
            catch_up(|| deliver(probes.read_userspace(), sink));
        }
    }
}

impl Events<'_> {
    /// Drains the ring buffer into the sink, a held exec waiting for the userspace sources.
    fn drain_ring(&mut self, ring: &mut RingBuf<MapData>) {
        drain(ring, &mut WithProbes { probes: self.probes, sink: self.sink });
    }
}

/// Each agent's drops since the last report (`reported`, updated): `(cgroup id, count)`.
pub fn new_drops(
    probes: &mut Probes,
    reported: &mut std::collections::HashMap<u64, u64>,
) -> Result<Vec<(u64, u64)>, Error> {
    let mut fresh = Vec::new();
    for (cgroup_id, lost) in probes.lost_by_agent()? {
        let before = reported.insert(cgroup_id, lost).unwrap_or(0);
        if lost > before {
            fresh.push((cgroup_id, lost - before));
        }
    }
    Ok(fresh)
}

/// Events handed to the sink at most at once.
const BATCH: usize = 256;
/// Records written between two looks at the ring buffer.
const RECORDS: usize = 32;

/// Hands what the ring buffer holds to the sink, batch by batch, letting it write its records
/// a few at a time in between: an event that arrives while earlier ones are being recorded is
/// decided (and its agent frozen) without waiting for their paperwork.
pub fn drain(ring: &mut RingBuf<MapData>, sink: &mut dyn Sink) {
    loop {
        let mut batch = Vec::new();
        while batch.len() < BATCH {
            let Some(item) = ring.next() else { break };
            match decode(&item) {
                Ok(event) => batch.push(event),
                Err(error) => sink.undecodable(&error),
            }
        }
        let read = !batch.is_empty();
        if batch.iter().any(|event| event.header().verdict == governor_common::verdict::STOPPED) {
            sink.catch_up();
        }
        if read {
            sink.events(batch);
        }
        let more = sink.write_pending(RECORDS);
        if !read && !more {
            return;
        }
    }
}

/// The connection of a `governor run` to the daemon that supervises its agent. The daemon
/// never speaks first, so the connection turning readable means it went away.
pub trait Link {
    /// A descriptor to watch for the current connection (a duplicate, taken once per
    /// connection); `None` while there is none or it is already watched.
    fn watch(&mut self) -> Option<std::os::fd::OwnedFd>;
    /// The watched connection turned readable: the daemon is gone.
    fn lost(&mut self);
    /// Every tick: try to reach a daemon again, or give up on the agent.
    fn tick(&mut self);
}

/// Runs until the agent has exited, then `after_exit` (which kills what the agent left
/// behind), then delivers the events still in the ring buffer. Returns the agent's exit code
/// (128+N for signal N).
pub fn run(
    agent: Pid,
    signals: SignalFd,
    forwarded: &[Signal],
    events: Option<Events<'_>>,
    link: Option<&mut dyn Link>,
    after_exit: impl FnOnce(),
) -> Result<i32, Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|source| Error::Io { what: "starting the event loop", source })?;
    runtime.block_on(supervise(agent, signals, forwarded, events, link, after_exit))
}

async fn supervise(
    agent: Pid,
    signals: SignalFd,
    forwarded: &[Signal],
    mut events: Option<Events<'_>>,
    mut link: Option<&mut dyn Link>,
    after_exit: impl FnOnce(),
) -> Result<i32, Error> {
    // SAFETY (both): the AsyncFd owns the signalfd and the ring buffer map, whose descriptors
    // stay open and unchanged until it is dropped.
    let signals = unsafe { AsyncFd::register_with_interest(signals, Interest::READABLE) }
        .map_err(|error| Error::Io { what: "watching signals", source: error.into() })?;
    let mut ring = match events.as_mut() {
        Some(events) => Some(
            unsafe { AsyncFd::register_with_interest(events.probes.take_events()?, Interest::READABLE) }
                .map_err(|error| Error::Io { what: "watching the ring buffer", source: error.into() })?,
        ),
        None => None,
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut daemon: Option<AsyncFd<std::os::fd::OwnedFd>> = None;
    let code = loop {
        if daemon.is_none()
            && let Some(fd) = link.as_mut().and_then(|link| link.watch())
        {
            // SAFETY: the AsyncFd owns the duplicate descriptor until it is dropped.
            daemon = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.ok();
        }
        tokio::select! {
            guard = signals.readable() => {
                let mut guard = guard.map_err(|source| Error::Io { what: "waiting for signals", source })?;
                let mut exited = None;
                loop {
                    match guard.get_inner().read_signal() {
                        Ok(Some(info)) => {
                            if let Some(code) = on_signal(agent, &info, forwarded)? {
                                exited = Some(code);
                            }
                        }
                        Ok(None) | Err(Errno::EAGAIN) => {
                            guard.clear_ready();
                            break;
                        }
                        Err(errno) => return Err(Error::Sys { what: "reading signals", errno }),
                    }
                }
                if let Some(code) = exited {
                    break code;
                }
            }
            guard = ring_readable(&mut ring) => {
                let mut guard = guard.map_err(|source| Error::Io { what: "waiting for events", source })?;
                if let Some(events) = events.as_mut() {
                    events.drain_ring(guard.get_inner_mut());
                }
                guard.clear_ready();
            }
            _ = daemon_readable(&daemon) => {
                daemon = None;
                if let Some(link) = link.as_mut() {
                    link.lost();
                }
            }
            _ = tick.tick() => {
                if let Some(link) = link.as_mut() {
                    link.tick();
                }
                if let (Some(ring), Some(events)) = (ring.as_mut(), events.as_mut()) {
                    // The opens and refusals read in userspace (notify) first: an exec in
                    // the ring buffer may have come after them within the tick, and a
                    // sequence rule (a network tool after a secret) errs towards matching.
                    events.drain_audit();
                    events.drain_ring(ring.get_mut());
                    events.report_drops()?;
                    events.sink.tick();
                }
            }
        }
    };
    after_exit();
    if let (Some(ring), Some(events)) = (ring.as_mut(), events.as_mut()) {
        events.drain_audit();
        events.drain_ring(ring.get_mut());
        // kauditd hands records on from its own thread: what the agent did last may still
        // be on its way.
        events.settle_audit();
        events.report_drops()?;
    }
    Ok(code)
}

async fn daemon_readable(daemon: &Option<AsyncFd<std::os::fd::OwnedFd>>) {
    match daemon {
        Some(fd) => {
            let _ = fd.readable().await;
        }
        None => std::future::pending().await,
    }
}

async fn ring_readable(
    ring: &mut Option<AsyncFd<RingBuf<MapData>>>,
) -> std::io::Result<tokio::io::unix::AsyncFdReadyMutGuard<'_, RingBuf<MapData>>> {
    match ring {
        Some(ring) => ring.readable_mut().await,
        None => std::future::pending().await,
    }
}

/// Handles one signal; returns the agent's exit code once it has exited.
fn on_signal(agent: Pid, info: &libc::signalfd_siginfo, forwarded: &[Signal]) -> Result<Option<i32>, Error> {
    let Ok(signal) = Signal::try_from(i32::try_from(info.ssi_signo).unwrap_or(0)) else {
        return Ok(None);
    };
    if signal == Signal::SIGCHLD {
        return reap(agent);
    }
    // A signal from the terminal (SI_KERNEL) already reached the agent, which is in our
    // foreground process group; one sent to governor alone is passed on.
    if forwarded.contains(&signal) && sent_by_a_process(info.ssi_code) {
        let _ = kill(agent, signal);
    }
    Ok(None)
}

/// `si_code` values of signals sent with kill(2), sigqueue(3) or tgkill(2).
fn sent_by_a_process(code: i32) -> bool {
    code == libc::SI_USER || code == libc::SI_QUEUE || code == libc::SI_TKILL
}

/// Reaps every exited child; returns the agent's exit code once it has exited.
pub fn reap(agent: Pid) -> Result<Option<i32>, Error> {
    let mut agent_code = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == agent => agent_code = Some(code),
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == agent => agent_code = Some(128 + signal as i32),
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return Ok(agent_code),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(errno) => return Err(Error::Sys { what: "waitpid", errno }),
        }
    }
}
