//! Who the agent runs as, and dropping every capability below admin. The identity is looked
//! up in the parent; `drop_in_child` runs in the forked child before `exec`.

use std::{
    fs,
    path::{Path, PathBuf},
};

use caps::CapSet;
use nix::unistd::{Gid, Uid, User};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown user '{0}'")]
    UnknownUser(String),
    #[error("cannot look up user '{user}': {source}")]
    Lookup { user: String, source: nix::Error },
    #[error("cannot run the agent as uid {uid}: only root can change user")]
    NotRoot { uid: u32 },
}

/// The user the agent runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub name: String,
    pub home: PathBuf,
    /// `false` when the agent keeps governor's own user.
    pub switch: bool,
}

impl Identity {
    /// `--user NAME|UID`; else the invoking user when started through sudo; else unchanged.
    pub fn resolve(user: Option<&str>) -> Result<Identity, Error> {
        let me = Uid::current();
        let requested = match user {
            Some(spec) => Some(lookup(spec)?),
            None if me.is_root() => match std::env::var("SUDO_UID").ok().and_then(|uid| uid.parse::<u32>().ok()) {
                Some(uid) if uid != 0 => Some(lookup(&uid.to_string())?),
                _ => None,
            },
            None => None,
        };
        match requested {
            Some(user) if user.uid != me => {
                if !me.is_root() {
                    return Err(Error::NotRoot { uid: user.uid.as_raw() });
                }
                let name =
                    std::ffi::CString::new(user.name.clone()).map_err(|_| Error::UnknownUser(user.name.clone()))?;
                let groups = nix::unistd::getgrouplist(&name, user.gid)
                    .map_err(|source| Error::Lookup { user: user.name.clone(), source })?;
                Ok(Identity {
                    uid: user.uid.as_raw(),
                    gid: user.gid.as_raw(),
                    groups: groups.into_iter().map(Gid::as_raw).collect(),
                    name: user.name,
                    home: user.dir,
                    switch: true,
                })
            }
            _ => {
                // Unchanged user: $HOME is what the agent will see as its home. The passwd
                // database (an NSS lookup, possibly over nscd's socket) is asked only when
                // the environment does not say.
                let (name, home) = match (std::env::var("USER"), std::env::var_os("HOME")) {
                    (Ok(name), Some(home)) => (name, PathBuf::from(home)),
                    (name, home) => {
                        let user = User::from_uid(me).ok().flatten();
                        let home = home
                            .map(PathBuf::from)
                            .or_else(|| user.as_ref().map(|user| user.dir.clone()))
                            .unwrap_or_else(|| PathBuf::from("/"));
                        let name = name.ok().or_else(|| user.map(|user| user.name)).unwrap_or_else(|| me.to_string());
                        (name, home)
                    }
                };
                Ok(Identity {
                    uid: me.as_raw(),
                    gid: Gid::current().as_raw(),
                    groups: Vec::new(),
                    name,
                    home,
                    switch: false,
                })
            }
        }
    }
}

fn lookup(spec: &str) -> Result<User, Error> {
    let found = match spec.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)),
        Err(_) => User::from_name(spec),
    };
    found.map_err(|source| Error::Lookup { user: spec.into(), source })?.ok_or_else(|| Error::UnknownUser(spec.into()))
}

/// Every home directory in the passwd file, so that `~/.ssh` is carved out of every user's
/// home and not only the agent's.
pub fn all_homes() -> Vec<super::Home> {
    let text = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let mut homes: Vec<super::Home> = text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let uid = fields.get(2)?.parse::<u32>().ok()?;
            let home = *fields.get(5)?;
            (home.starts_with('/') && home != "/").then(|| super::Home {
                may_gain_secrets: may_gain_secrets(Path::new(home), uid),
                path: PathBuf::from(home),
            })
        })
        .collect();
    homes.sort();
    homes.dedup_by(|later, first| {
        // Two users sharing a home (`bin` and `sync` in /bin): keep it once, as open as
        // either entry says.
        let same = later.path == first.path;
        if same {
            first.may_gain_secrets |= later.may_gain_secrets;
        }
        same
    });
    homes
}

/// Whether a secret can appear in `home` after launch: it is a directory that someone other
/// than root may create entries in (its owner is not root, or its group or others may write),
/// or it is the home of a uid-0 user. Only root can write into the system directories the
/// passwd file gives as homes (`/bin`, `/usr/sbin`, `/dev`), and expanding those entry by entry
/// would cost rules for nothing; a user's own home, 0755 and empty of secrets at launch, must
/// not be granted whole, or `~other/.aws/credentials` written later is readable.
fn may_gain_secrets(home: &Path, uid: u32) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    // fs::metadata follows symlinks: what matters is the directory the home resolves to.
    fs::metadata(home).is_ok_and(|meta| meta.is_dir() && (uid == 0 || meta.uid() != 0 || meta.mode() & 0o022 != 0))
}

/// The failed step, for the parent to report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Bounding,
    Securebits,
    Groups,
    Gid,
    Uid,
    Capabilities,
}

impl Step {
    pub fn describe(self) -> &'static str {
        match self {
            Step::Bounding => "clearing the capability bounding set",
            Step::Securebits => "locking the securebits",
            Step::Groups => "setting supplementary groups",
            Step::Gid => "setting the group id",
            Step::Uid => "setting the user id",
            Step::Capabilities => "clearing capabilities",
        }
    }
}

// securebits(7)
const SECBIT_NOROOT: libc::c_ulong = 1 << 0;
const SECBIT_NOROOT_LOCKED: libc::c_ulong = 1 << 1;
const SECBIT_KEEP_CAPS_LOCKED: libc::c_ulong = 1 << 5;

/// Runs in the forked child. Clears the bounding set first (that needs CAP_SETPCAP, which
/// the switch of user or the clearing below takes away), locks `SECBIT_NOROOT` so that a
/// uid-0 agent gains no capability at `exec`, switches user, then clears the ambient,
/// inheritable, effective and permitted sets.
pub fn drop_in_child(identity: &Identity, drop_capabilities: bool) -> Result<(), (Step, i32)> {
    let errno = |step| move |_| (step, nix::errno::Errno::last_raw());
    let may_setpcap = caps::has_cap(None, CapSet::Effective, caps::Capability::CAP_SETPCAP).unwrap_or(false);
    if drop_capabilities && may_setpcap {
        caps::clear(None, CapSet::Bounding).map_err(errno(Step::Bounding))?;
        // SAFETY: prctl on the calling thread with integer arguments.
        let set = unsafe {
            libc::prctl(
                libc::PR_SET_SECUREBITS,
                SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_KEEP_CAPS_LOCKED,
                0,
                0,
                0,
            )
        };
        if set != 0 {
            return Err((Step::Securebits, nix::errno::Errno::last_raw()));
        }
    }
    if identity.switch {
        let groups: Vec<Gid> = identity.groups.iter().map(|gid| Gid::from_raw(*gid)).collect();
        nix::unistd::setgroups(&groups).map_err(|errno| (Step::Groups, errno as i32))?;
        let gid = Gid::from_raw(identity.gid);
        nix::unistd::setresgid(gid, gid, gid).map_err(|errno| (Step::Gid, errno as i32))?;
        let uid = Uid::from_raw(identity.uid);
        nix::unistd::setresuid(uid, uid, uid).map_err(|errno| (Step::Uid, errno as i32))?;
    }
    if drop_capabilities {
        for set in [CapSet::Ambient, CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
            caps::clear(None, set).map_err(errno(Step::Capabilities))?;
        }
    }
    Ok(())
}
