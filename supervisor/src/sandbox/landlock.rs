//! A ring's Landlock rule set: planning (pure: policy words to rights, carved paths, ports,
//! scopes, and which kernel ABI each part needs) and building the kernel ruleset.

use std::{
    os::fd::OwnedFd,
    path::{Path, PathBuf},
};

use landlock::{
    ABI, Access as _, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible as _, NetPort, PathBeneath, Ruleset,
    RulesetAttr as _, RulesetCreated, RulesetCreatedAttr as _, Scope,
};
use nix::{errno::Errno, fcntl::OFlag, sys::stat::Mode};

use crate::policy::{Access, ScopeName};

/// The newest Landlock ABI governor was tested against. Rights of newer ABIs are not handled,
/// so a newer kernel behaves as this one (the Landlock compatibility contract).
pub const NEWEST_TESTED_ABI: i32 = 7;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Landlock: cannot open {path} for a rule: {errno}")]
    Open { path: PathBuf, errno: Errno },
    #[error("Landlock: {0}")]
    Ruleset(#[from] landlock::RulesetError),
}

/// A rule on one path, after secrets were carved out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathRule {
    pub path: PathBuf,
    pub is_dir: bool,
    pub access: Vec<Access>,
    /// The policy rule it came from: its spelling and reason.
    pub origin: String,
}

/// What the Landlock domain of an agent will be.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// `false`: no Landlock domain at all (admin).
    pub enforce: bool,
    pub paths: Vec<PathRule>,
    /// `None`: TCP connect is not restricted; `Some(ports)`: only these.
    pub connect_ports: Option<Vec<u16>>,
    pub bind_ports: Option<Vec<u16>>,
    pub scopes: Vec<ScopeName>,
}

/// A kernel feature a plan relies on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Feature {
    pub what: &'static str,
    pub abi: i32,
    /// Required features refuse the ring when missing; others are reported as not enforced.
    pub required: bool,
}

impl Plan {
    /// Every Landlock feature this plan uses, with the ABI that brought it.
    pub fn features(&self) -> Vec<Feature> {
        if !self.enforce {
            return Vec::new();
        }
        let mut features = vec![Feature { what: "filesystem rules", abi: 1, required: true }];
        features.push(Feature { what: "linking and renaming across directories (refer)", abi: 2, required: false });
        features.push(Feature { what: "truncate(2) control", abi: 3, required: false });
        if self.connect_ports.is_some() || self.bind_ports.is_some() {
            features.push(Feature { what: "TCP bind/connect rules", abi: 4, required: true });
        }
        features.push(Feature { what: "ioctl control on devices", abi: 5, required: false });
        if self.scopes.contains(&ScopeName::AbstractUnixSocket) {
            features.push(Feature { what: "abstract unix socket scoping", abi: 6, required: true });
        }
        if self.scopes.contains(&ScopeName::Signal) {
            features.push(Feature { what: "signal scoping", abi: 6, required: true });
        }
        features
    }

    /// The kernel ruleset for this plan on a kernel with Landlock ABI `kernel_abi`. Parts the
    /// kernel lacks are left out (the caller has decided that this is acceptable); everything
    /// requested is then a hard requirement, so nothing is dropped silently.
    /// The rule set, not yet applied. `log_new_exec`: Landlock logs the domain's denials
    /// after the agent's `exec` too (`LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON`, ABI 7), for
    /// the backend that reads them from the audit log.
    pub fn build(&self, kernel_abi: i32, log_new_exec: bool) -> Result<Option<RulesetCreated>, Error> {
        if !self.enforce || kernel_abi < 1 {
            return Ok(None);
        }
        let abi = ABI::from(kernel_abi.min(NEWEST_TESTED_ABI));
        let mut ruleset = Ruleset::default()
            .set_compatibility(CompatLevel::HardRequirement)
            .handle_access(AccessFs::from_all(abi))?;
        let tcp = kernel_abi >= 4;
        if tcp && self.connect_ports.is_some() {
            ruleset = ruleset.handle_access(AccessNet::ConnectTcp)?;
        }
        if tcp && self.bind_ports.is_some() {
            ruleset = ruleset.handle_access(AccessNet::BindTcp)?;
        }
        if kernel_abi >= 6 {
            for scope in &self.scopes {
                ruleset = ruleset.scope(match scope {
                    ScopeName::AbstractUnixSocket => Scope::AbstractUnixSocket,
                    ScopeName::Signal => Scope::Signal,
                })?;
            }
        }
        let mut created = ruleset.create()?;
        if log_new_exec {
            created = created.log_new_exec(true)?;
        }
        let mut opener = Opener::default();
        for rule in &self.paths {
            let mut access = rights(&rule.access, abi);
            if !rule.is_dir {
                access &= AccessFs::from_file(abi);
            }
            if access.is_empty() {
                continue;
            }
            let fd = match opener.open(&rule.path) {
                Ok(fd) => fd,
                // Gone since the plan listed it (a temp file, say): a rule on nothing grants
                // nothing, so leaving it out is safe.
                Err(Errno::ENOENT) => continue,
                Err(errno) => return Err(Error::Open { path: rule.path.clone(), errno }),
            };
            created = created.add_rule(PathBeneath::new(fd, access))?;
        }
        if tcp {
            for port in self.connect_ports.iter().flatten() {
                created = created.add_rule(NetPort::new(*port, AccessNet::ConnectTcp))?;
            }
            for port in self.bind_ports.iter().flatten() {
                created = created.add_rule(NetPort::new(*port, AccessNet::BindTcp))?;
            }
        }
        Ok(Some(created))
    }
}

/// Opens rule paths with `O_PATH`. Carving yields runs of siblings (every entry of /etc), so
/// each is opened relative to its parent, which is opened once: a path walk per rule was a
/// measurable part of every launch. `O_NOFOLLOW`: the plan never puts a rule on a symlink
/// (it would grant the link's target), so one that appeared since is not followed.
#[derive(Default)]
struct Opener {
    parent: Option<(PathBuf, OwnedFd)>,
}

impl Opener {
    fn open(&mut self, path: &Path) -> Result<OwnedFd, Errno> {
        let flags = OFlag::O_PATH | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return nix::fcntl::open(path, flags, Mode::empty());
        };
        if self.parent.as_ref().is_none_or(|(cached, _)| cached != parent) {
            let fd = nix::fcntl::open(parent, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
            self.parent = Some((parent.to_path_buf(), fd));
        }
        match &self.parent {
            Some((_, dir)) => nix::fcntl::openat(dir, name, flags, Mode::empty()),
            None => Err(Errno::EBADF),
        }
    }
}

/// The Landlock rights an access word stands for, limited to what `abi` knows.
pub fn rights(words: &[Access], abi: ABI) -> BitFlags<AccessFs> {
    let mut rights = BitFlags::<AccessFs>::empty();
    for word in words {
        rights |= match word {
            Access::Read => AccessFs::ReadFile | AccessFs::ReadDir,
            Access::Exec => AccessFs::Execute.into(),
            Access::Write => AccessFs::WriteFile | AccessFs::Truncate,
            Access::Create => {
                AccessFs::MakeReg
                    | AccessFs::MakeDir
                    | AccessFs::MakeSym
                    | AccessFs::MakeSock
                    | AccessFs::MakeFifo
                    | AccessFs::RemoveFile
                    | AccessFs::RemoveDir
                    | AccessFs::Refer
            }
            Access::Ioctl => AccessFs::IoctlDev.into(),
            Access::List => AccessFs::ReadDir.into(),
        };
    }
    rights & AccessFs::from_all(abi)
}

/// The running kernel's Landlock ABI: 0 when Landlock is not built in or not enabled.
pub fn kernel_abi() -> i32 {
    // SAFETY: LANDLOCK_CREATE_RULESET_VERSION with a NULL attribute and size 0 only returns
    // the ABI version (landlock_create_ruleset(2)).
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32, // LANDLOCK_CREATE_RULESET_VERSION
        )
    };
    i32::try_from(version).unwrap_or(0).max(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_words_map_to_rights_within_the_abi() {
        let read = rights(&[Access::Read], ABI::V7);
        assert_eq!(read, AccessFs::ReadFile | AccessFs::ReadDir);
        let write_v2 = rights(&[Access::Write, Access::Ioctl], ABI::V2);
        // truncate is ABI 3 and ioctl on devices ABI 5: not known to an ABI 2 kernel.
        assert_eq!(write_v2, BitFlags::from(AccessFs::WriteFile));
        let all = rights(&[Access::Read, Access::Exec, Access::Write, Access::Create, Access::Ioctl], ABI::V7);
        // Nothing a ring can ask for creates devices.
        assert!(!all.contains(AccessFs::MakeChar) && !all.contains(AccessFs::MakeBlock));
    }

    #[test]
    fn features_name_the_abi_of_network_and_scopes() {
        let plan =
            Plan { enforce: true, connect_ports: Some(vec![443]), scopes: vec![ScopeName::Signal], ..Plan::default() };
        let required: Vec<(&str, i32)> =
            plan.features().into_iter().filter(|f| f.required).map(|f| (f.what, f.abi)).collect();
        assert_eq!(required, [("filesystem rules", 1), ("TCP bind/connect rules", 4), ("signal scoping", 6)]);
        assert!(Plan::default().features().is_empty());
    }
}
