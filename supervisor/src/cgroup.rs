//! One cgroup v2 leaf per agent: created before the agent starts, joined by the child before
//! `exec`, emptied with `cgroup.kill` and removed once the agent and its descendants are gone.
//! The v2 mount is found in `/proc/self/mountinfo`: hosts with the hybrid layout mount it at
//! `/sys/fs/cgroup/unified`, others at `/sys/fs/cgroup`.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read as _, Seek as _, Write as _},
    os::{fd::AsFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use nix::{
    poll::{PollFd, PollFlags, ppoll},
    sys::time::TimeSpec,
};

/// The directory under the cgroup v2 root that holds governor's agents.
pub const BASE: &str = "governor";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no cgroup v2 hierarchy is mounted (none in /proc/self/mountinfo); governor needs one to contain agents")]
    NoCgroup2,
    #[error("cannot read /proc/self/mountinfo: {0}")]
    MountInfo(io::Error),
    #[error("an agent with id '{id}' is already running ({path} exists)")]
    Exists { id: String, path: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: cgroup.events did not change within {waited:?}")]
    Busy { path: PathBuf, waited: Duration },
    #[error("unknown agent '{id}': no cgroup at {path}")]
    NoAgent { id: String, path: PathBuf },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// The mount point of the cgroup v2 hierarchy. The two usual places are tried first with
/// statfs(2), which says for certain whether a cgroup2 filesystem is mounted there and is
/// much cheaper than reading mountinfo on every launch; mountinfo is the authority otherwise.
pub fn mount_point() -> Result<PathBuf, Error> {
    for candidate in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        let is_cgroup2 = nix::sys::statfs::statfs(candidate)
            .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC);
        if is_cgroup2 {
            return Ok(PathBuf::from(candidate));
        }
    }
    let text = fs::read_to_string("/proc/self/mountinfo").map_err(Error::MountInfo)?;
    find_cgroup2(&text).ok_or(Error::NoCgroup2)
}

/// Finds the cgroup2 mount in mountinfo text (proc(5): fields up to ` - `, then the type).
fn find_cgroup2(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (fields, rest) = line.split_once(" - ")?;
        if rest.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        fields.split_whitespace().nth(4).map(|mount| PathBuf::from(unescape(mount)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'\\'
            && let Some(octal) = field.get(index + 1..index + 4)
            && let Ok(byte) = u8::from_str_radix(octal, 8)
        {
            out.push(byte);
            index += 4;
            continue;
        }
        out.push(bytes[index]);
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An agent's cgroup.
#[derive(Debug)]
pub struct Cgroup {
    path: PathBuf,
    /// Removed already, or not ours to remove (opened by `governor suspend` and friends).
    removed: bool,
}

impl Cgroup {
    /// Creates `<cgroup2>/governor/<id>`.
    pub fn create(root: &Path, id: &str) -> Result<Cgroup, Error> {
        let base = root.join(BASE);
        match fs::create_dir(&base) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(Error::Io { path: base, source }),
        }
        let path = base.join(id);
        match fs::create_dir(&path) {
            Ok(()) => Ok(Cgroup { path, removed: false }),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Err(Error::Exists { id: id.into(), path }),
            Err(source) => Err(Error::Io { path, source }),
        }
    }

    /// The cgroup of a running agent, found by its id under `<cgroup2>/governor`.
    pub fn open(root: &Path, id: &str) -> Result<Cgroup, Error> {
        let path = root.join(BASE).join(id);
        if !path.join("cgroup.procs").exists() {
            return Err(Error::NoAgent { id: id.into(), path });
        }
        Ok(Cgroup { path, removed: true })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Freezes (`true`) or thaws every process in the cgroup, and waits until
    /// `cgroup.events` confirms it (cgroup-v2.rst, "cgroup.freeze").
    pub fn set_frozen(&self, frozen: bool, timeout: Duration) -> Result<(), Error> {
        let path = self.path.join("cgroup.freeze");
        fs::write(&path, if frozen { "1" } else { "0" }).map_err(io_error(&path))?;
        self.wait_event("frozen", u64::from(frozen), timeout)
    }

    /// Asks the kernel to freeze (`true`) or thaw the cgroup, without waiting for it to be
    /// done: for the event loop, which must not wait on an agent.
    pub fn request_frozen(&self, frozen: bool) -> Result<(), Error> {
        let path = self.path.join("cgroup.freeze");
        fs::write(&path, if frozen { "1" } else { "0" }).map_err(io_error(&path))
    }

    /// Whether `cgroup.freeze` asks for the cgroup to be frozen.
    pub fn freeze_requested(&self) -> bool {
        fs::read_to_string(self.path.join("cgroup.freeze")).is_ok_and(|text| text.trim() == "1")
    }

    /// The cgroup id the kernel reports for processes in it (`bpf_get_current_cgroup_id`):
    /// the inode number of the directory.
    pub fn id(&self) -> Result<u64, Error> {
        fs::metadata(&self.path).map(|meta| meta.ino()).map_err(io_error(&self.path))
    }

    /// The cgroup directory, for `clone3(CLONE_INTO_CGROUP)`.
    pub fn dir(&self) -> Result<File, Error> {
        File::open(&self.path).map_err(io_error(&self.path))
    }

    /// `cgroup.procs`, opened for the child: writing "0" to it moves the writer in.
    pub fn procs_for_join(&self) -> Result<File, Error> {
        let path = self.path.join("cgroup.procs");
        OpenOptions::new().write(true).open(&path).map_err(io_error(&path))
    }

    /// Kills every process in the cgroup (`cgroup.kill`, Linux 5.14), falling back to
    /// signalling the pids in `cgroup.procs` on older kernels.
    pub fn kill(&self) -> Result<(), Error> {
        let path = self.path.join("cgroup.kill");
        match fs::write(&path, "1") {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                for pid in self.pids()? {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
                }
                Ok(())
            }
            Err(source) => Err(Error::Io { path, source }),
        }
    }

    /// The processes in the cgroup.
    pub fn pids(&self) -> Result<Vec<i32>, Error> {
        let path = self.path.join("cgroup.procs");
        let text = fs::read_to_string(&path).map_err(io_error(&path))?;
        Ok(text.lines().filter_map(|line| line.trim().parse().ok()).collect())
    }

    /// Whether any process is left, from `cgroup.events`.
    pub fn populated(&self) -> Result<bool, Error> {
        self.event_set("populated")
    }

    /// Whether the cgroup is frozen, from `cgroup.events`.
    pub fn frozen(&self) -> Result<bool, Error> {
        self.event_set("frozen")
    }

    /// Whether `key` is 1 in `cgroup.events`.
    fn event_set(&self, key: &str) -> Result<bool, Error> {
        let path = self.path.join("cgroup.events");
        let text = fs::read_to_string(&path).map_err(io_error(&path))?;
        Ok(events_field(&text, key) == Some(1))
    }

    /// Waits until `cgroup.events` says `populated 0`.
    pub fn wait_empty(&self, timeout: Duration) -> Result<(), Error> {
        self.wait_event("populated", 0, timeout)
    }

    /// Waits until `cgroup.events` says `key value`. The kernel signals changes of that file
    /// as POLLPRI (cgroup-v2.rst, "cgroup.events").
    fn wait_event(&self, key: &str, value: u64, timeout: Duration) -> Result<(), Error> {
        let path = self.path.join("cgroup.events");
        let mut file = File::open(&path).map_err(io_error(&path))?;
        let start = Instant::now();
        loop {
            let mut text = String::new();
            file.rewind().map_err(io_error(&path))?;
            file.read_to_string(&mut text).map_err(io_error(&path))?;
            if events_field(&text, key) == Some(value) {
                return Ok(());
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(Error::Busy { path: self.path.clone(), waited: timeout });
            }
            // The kernel's change notification for cgroup.events goes through a work queue
            // and can come milliseconds late: look again every 100 µs meanwhile.
            let wait = left.min(Duration::from_micros(100));
            let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLPRI)];
            match ppoll(&mut fds, Some(TimeSpec::from_duration(wait)), None) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(errno) => return Err(Error::Io { path, source: errno.into() }),
            }
        }
    }

    /// Removes the (empty) cgroup.
    pub fn remove(mut self) -> Result<(), Error> {
        self.removed = true;
        fs::remove_dir(&self.path).map_err(io_error(&self.path))
    }
}

impl Drop for Cgroup {
    /// A cgroup that was never used (an error before the child started) is removed; one with
    /// processes in it cannot be and stays for `governor` to find.
    fn drop(&mut self) {
        if !self.removed {
            let _ = fs::remove_dir(&self.path);
        }
    }
}

/// Reads `key value` from a `cgroup.events`-style file.
fn events_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (name == key).then(|| value.trim().parse().ok()).flatten()
    })
}

/// Writes "0" to `cgroup.procs`: the calling process joins the cgroup. Runs in the forked
/// child, so it only makes a raw write.
pub fn join(procs: &mut File) -> io::Result<()> {
    procs.write_all(b"0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount_in_a_hybrid_layout() {
        let mountinfo = "\
25 1 0:23 / /sys rw,nosuid - sysfs sysfs rw
31 25 0:27 / /sys/fs/cgroup ro - tmpfs tmpfs ro,mode=755
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 31 0:39 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";
        assert_eq!(find_cgroup2(mountinfo), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(find_cgroup2("25 1 0:23 / /sys rw - sysfs sysfs rw\n"), None);
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        let line = "41 31 0:38 / /mnt/my\\040cgroup rw shared:1 - cgroup2 none rw\n";
        assert_eq!(find_cgroup2(line), Some(PathBuf::from("/mnt/my cgroup")));
    }

    #[test]
    fn events_fields_parse() {
        let events = "populated 1\nfrozen 0\n";
        assert_eq!(events_field(events, "populated"), Some(1));
        assert_eq!(events_field(events, "frozen"), Some(0));
        assert_eq!(events_field(events, "missing"), None);
    }
}
