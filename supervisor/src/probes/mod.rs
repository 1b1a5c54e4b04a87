//! The eBPF probes: the object built from `ebpf/` (embedded), the choice of backend, loading
//! and attaching, registering agents, and reading the events and drop counters.
//!
//! Backends: BPF LSM where the kernel has it (`bpf` in the active LSM list and the programs
//! load), else syscall tracepoints. Both get the cgroup `sock_addr` hooks, attached to each
//! agent's cgroup, which narrow UDP.

pub mod events;
mod tracefs;

use std::{
    fs::File,
    net::IpAddr,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, LpmTrie, MapData, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::{CgroupAttachMode, CgroupSockAddr, TracePoint},
};
use governor_common::{AgentSlot, UDP_ALLOW_FIXED_BITS, UdpAllowKey, UdpPolicy, counter};

/// The object file, aligned for aya's ELF parser.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/governor"));

/// `--probes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Choice {
    /// LSM where the kernel has BPF LSM, else tracepoints.
    Auto,
    Lsm,
    Tracepoint,
    /// No probes: no kernel events, and no UDP narrowing.
    Off,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[expect(dead_code, reason = "chosen once the BPF LSM programs are in the object")]
    Lsm,
    Tracepoint,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Lsm => "lsm",
            Backend::Tracepoint => "tracepoint",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--probes lsm: {0}")]
    NoLsm(String),
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("eBPF program {name}: {source}")]
    Program { name: &'static str, source: aya::programs::ProgramError },
    #[error("eBPF map {name}: {source}")]
    Map { name: &'static str, source: aya::maps::MapError },
    #[error("eBPF object has no {0}")]
    Missing(&'static str),
    #[error(transparent)]
    Tracefs(#[from] tracefs::Error),
}

/// The tracepoint programs: (program, category, event).
const TRACEPOINTS: [(&str, &str, &str); 11] = [
    ("sys_enter_openat", "syscalls", "sys_enter_openat"),
    ("sys_exit_openat", "syscalls", "sys_exit_openat"),
    ("sys_enter_openat2", "syscalls", "sys_enter_openat2"),
    ("sys_exit_openat2", "syscalls", "sys_exit_openat2"),
    ("sys_enter_execve", "syscalls", "sys_enter_execve"),
    ("sys_exit_execve", "syscalls", "sys_exit_execve"),
    ("sys_enter_execveat", "syscalls", "sys_enter_execveat"),
    ("sys_exit_execveat", "syscalls", "sys_exit_execveat"),
    ("sys_enter_connect", "syscalls", "sys_enter_connect"),
    ("sys_exit_connect", "syscalls", "sys_exit_connect"),
    ("sched_process_exec", "sched", "sched_process_exec"),
];

/// The cgroup socket hooks, attached per agent.
const SOCK_ADDR: [&str; 4] = ["connect4", "connect6", "sendmsg4", "sendmsg6"];

/// Loaded and attached probes.
pub struct Probes {
    ebpf: Ebpf,
    pub backend: Backend,
    /// The attachments, owned here so that their release can be handed off (see `Drop`).
    links: Vec<Box<dyn Send>>,
}

impl Drop for Probes {
    /// Detaching a tracepoint waits for an RCU grace period under a kernel-wide mutex (40 to
    /// 70 ms each here, one after the other: most of a second for eleven), and would hold
    /// governor's exit for that long. A child that keeps only the attachments releases them
    /// after governor has gone; governor's own copies then close at once.
    fn drop(&mut self) {
        let links = std::mem::take(&mut self.links);
        if links.is_empty() {
            return;
        }
        // SAFETY: governor runs one thread here (the event loop has ended); the child only
        // closes descriptors and exits.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                // Only the links stay open: a caller waiting for EOF on governor's stdout
                // must not wait for this child. Exiting closes the links.
                for (fd, target) in open_fds() {
                    if target != "anon_inode:bpf_link" {
                        // SAFETY: closing descriptors of this (forked) process.
                        unsafe { libc::close(fd) };
                    }
                }
                // SAFETY: leave without running destructors that belong to the parent.
                unsafe { libc::_exit(0) }
            }
            Ok(nix::unistd::ForkResult::Parent { .. }) | Err(_) => drop(links),
        }
    }
}

/// The descriptors this process has open, with what they point to.
fn open_fds() -> Vec<(i32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let entry = entry.ok()?;
        let fd = entry.file_name().to_str()?.parse().ok()?;
        let target = std::fs::read_link(entry.path()).ok()?.to_string_lossy().into_owned();
        Some((fd, target))
    })
    .collect()
}

/// Totals of the per-CPU counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub produced: u64,
    pub dropped: u64,
    pub errors: u64,
}

/// A UDP destination an agent may send to; port 0 is any port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpAllow {
    pub addr: IpAddr,
    pub prefix: u8,
    pub port: u16,
}

/// Whether the kernel runs BPF LSM programs: `bpf` must be in the active LSM list
/// (`/sys/kernel/security/lsm`; securityfs is mounted when it is not yet).
pub fn bpf_lsm_active() -> Option<bool> {
    tracefs::mount_securityfs();
    std::fs::read_to_string("/sys/kernel/security/lsm").ok().map(|lsms| lsms.trim().split(',').any(|lsm| lsm == "bpf"))
}

impl Probes {
    /// Loads the probes for `choice`; `None` for `--probes off`.
    pub fn load(choice: Choice) -> Result<Option<Probes>, Error> {
        let backend = match choice {
            Choice::Off => return Ok(None),
            Choice::Tracepoint => Backend::Tracepoint,
            Choice::Lsm => match bpf_lsm_active() {
                Some(true) => {
                    return Err(Error::NoLsm(
                        "the LSM programs are not part of this build yet; use --probes tracepoint".into(),
                    ));
                }
                Some(false) => return Err(Error::NoLsm(
                    "'bpf' is not in this kernel's active LSM list (/sys/kernel/security/lsm); boot with lsm=...,bpf"
                        .into(),
                )),
                None => return Err(Error::NoLsm("cannot read /sys/kernel/security/lsm (securityfs)".into())),
            },
            Choice::Auto => Backend::Tracepoint,
        };
        let mut ebpf = EbpfLoader::new().load(OBJECT)?;
        let mut links = Vec::new();
        if backend == Backend::Tracepoint {
            let tracing = tracefs::root()?;
            tracefs::check_layouts(&tracing)?;
            for (name, category, event) in TRACEPOINTS {
                let program: &mut TracePoint = ebpf
                    .program_mut(name)
                    .ok_or(Error::Missing(name))?
                    .try_into()
                    .map_err(|source| Error::Program { name, source })?;
                program.load().map_err(|source| Error::Program { name, source })?;
                let id = program.attach(category, event).map_err(|source| Error::Program { name, source })?;
                let link = program.take_link(id).map_err(|source| Error::Program { name, source })?;
                links.push(Box::new(link) as Box<dyn Send>);
            }
        }
        for name in SOCK_ADDR {
            let program: &mut CgroupSockAddr = ebpf
                .program_mut(name)
                .ok_or(Error::Missing(name))?
                .try_into()
                .map_err(|source| Error::Program { name, source })?;
            program.load().map_err(|source| Error::Program { name, source })?;
        }
        Ok(Some(Probes { ebpf, backend, links }))
    }

    /// Starts watching the agent in cgroup `cgroup_id` (its directory is `cgroup_dir`): the
    /// probes report its events, and the socket hooks enforce `udp` (`None`: any UDP).
    pub fn watch(
        &mut self,
        cgroup_id: u64,
        cgroup_dir: &File,
        slot: AgentSlot,
        udp: Option<&[UdpAllow]>,
    ) -> Result<(), Error> {
        // Single: with bpf_link (Linux 5.7+) a cgroup takes any number of links whatever the
        // mode, and the kernel refuses link flags; the mode only matters for legacy attach.
        for name in SOCK_ADDR {
            let program: &mut CgroupSockAddr = self
                .ebpf
                .program_mut(name)
                .ok_or(Error::Missing(name))?
                .try_into()
                .map_err(|source| Error::Program { name, source })?;
            let id = program
                .attach(cgroup_dir, CgroupAttachMode::Single)
                .map_err(|source| Error::Program { name, source })?;
            let link = program.take_link(id).map_err(|source| Error::Program { name, source })?;
            self.links.push(Box::new(link));
        }
        {
            let mut policy: HashMap<_, u64, UdpPolicy> = self.map("UDP_POLICY")?;
            let value = UdpPolicy { restricted: u32::from(udp.is_some()), _pad: 0 };
            policy.insert(cgroup_id, value, 0).map_err(|source| Error::Map { name: "UDP_POLICY", source })?;
        }
        if let Some(rules) = udp {
            let mut allow: LpmTrie<_, UdpAllowKey, u8> = self.map("UDP_ALLOW")?;
            for rule in rules {
                let (family, addr) = match rule.addr {
                    IpAddr::V4(v4) => {
                        let mut addr = [0u8; 16];
                        addr[..4].copy_from_slice(&v4.octets());
                        (libc::AF_INET as u16, addr)
                    }
                    IpAddr::V6(v6) => (libc::AF_INET6 as u16, v6.octets()),
                };
                let key = UdpAllowKey { cgroup_id, family, port: rule.port.to_be(), addr, _pad: 0 };
                let key = Key::new(UDP_ALLOW_FIXED_BITS + u32::from(rule.prefix), key);
                allow.insert(&key, 1, 0).map_err(|source| Error::Map { name: "UDP_ALLOW", source })?;
            }
        }
        // Last: from here on the agent's events are reported.
        let mut agents: HashMap<_, u64, AgentSlot> = self.map("AGENTS")?;
        agents.insert(cgroup_id, slot, 0).map_err(|source| Error::Map { name: "AGENTS", source })?;
        Ok(())
    }

    fn map<'a, T>(&'a mut self, name: &'static str) -> Result<T, Error>
    where
        T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
    {
        let map = self.ebpf.map_mut(name).ok_or(Error::Missing(name))?;
        T::try_from(map).map_err(|source| Error::Map { name, source })
    }

    /// The ring buffer the events arrive in (taken once).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, Error> {
        let map = self.ebpf.take_map("EVENTS").ok_or(Error::Missing("EVENTS"))?;
        RingBuf::try_from(map).map_err(|source| Error::Map { name: "EVENTS", source })
    }

    /// The counters summed over CPUs.
    pub fn counters(&mut self) -> Result<Counters, Error> {
        let counters: PerCpuArray<_, u64> = self.map("COUNTERS")?;
        let sum = |index: u32| -> Result<u64, Error> {
            let values = counters.get(&index, 0).map_err(|source| Error::Map { name: "COUNTERS", source })?;
            Ok(values.iter().sum())
        };
        Ok(Counters {
            produced: sum(counter::PRODUCED)?,
            dropped: sum(counter::DROPPED)?,
            errors: sum(counter::ERRORS)?,
        })
    }
}

/// The resolvers in `/etc/resolv.conf` (or `path`), which `resolvers` in a ring stands for.
pub fn resolvers(path: &Path) -> Vec<IpAddr> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().split('%').next()?.parse().ok())
        .collect()
}

/// `/etc/resolv.conf`.
pub fn resolv_conf() -> PathBuf {
    PathBuf::from("/etc/resolv.conf")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolvers_come_from_nameserver_lines() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let path = dir.path().join("resolv.conf");
        std::fs::write(
            &path,
            "# comment\nnameserver 10.0.0.2\nsearch example\nnameserver fe80::1%eth0\nnameserver bogus\n",
        )
        .unwrap_or_else(|error| panic!("{error}"));
        let found: Vec<String> = resolvers(&path).iter().map(IpAddr::to_string).collect();
        assert_eq!(found, ["10.0.0.2", "fe80::1"]);
    }
}
