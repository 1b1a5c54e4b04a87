//! The process context of an event: parent, executable, command line, effective ids and
//! capabilities. The executable and arguments come from the kernel's own exec events, which
//! every process of an agent went through (governor sees its first exec); the parent, ids and
//! capabilities from procfs, read once per process and again after each exec. A process that
//! forked without exec'ing has its parent's executable and arguments. A process already
//! reaped when its first event is decided has no procfs left: its row says so (`ppid` 0, ids
//! -1, no capabilities) rather than guess.

use std::{collections::HashMap, rc::Rc};

/// What procfs says about one process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    pub ppid: i32,
    pub euid: u32,
    pub egid: u32,
    /// Effective capability set (`CapEff`).
    pub cap_eff: u64,
}

/// One process's context.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    pub exe: String,
    /// Arguments joined with spaces, at most `CMDLINE_MAX` bytes.
    pub cmdline: String,
    /// `None` once the process has been reaped.
    pub status: Option<Status>,
}

const CMDLINE_MAX: usize = 4096;

/// Processes remembered at most; past that the cache starts over (a fork bomb costs reads,
/// not memory).
const CAPACITY: usize = 8192;

fn status(process: &procfs::process::Process) -> Option<Status> {
    let status = process.status().ok()?;
    Some(Status { ppid: status.ppid, euid: status.euid, egid: status.egid, cap_eff: status.capeff })
}

/// Reads the context of a live (or zombie) process; `None` once it has been reaped.
pub fn read(tgid: u32) -> Option<Context> {
    let process = procfs::process::Process::new(i32::try_from(tgid).ok()?).ok()?;
    let status = status(&process)?;
    let exe = process.exe().map(|path| path.to_string_lossy().into_owned()).unwrap_or_default();
    let cmdline = truncate(process.cmdline().map(|args| args.join(" ")).unwrap_or_default());
    Some(Context { exe, cmdline, status: Some(status) })
}

fn truncate(mut text: String) -> String {
    if text.len() > CMDLINE_MAX {
        let mut end = CMDLINE_MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Per-process cache of contexts, keyed by tgid.
#[derive(Debug, Default)]
pub struct Cache {
    known: HashMap<u32, Rc<Context>>,
}

impl Cache {
    /// The context of `tgid`, read on first use; `None` for a process reaped before that.
    pub fn get(&mut self, tgid: u32) -> Option<Rc<Context>> {
        if let Some(known) = self.known.get(&tgid) {
            return Some(Rc::clone(known));
        }
        // A process found gone is not remembered: its pid may come back as another process.
        let mut context = read(tgid)?;
        // A zombie still has its status but no executable or arguments: one that never
        // exec'd has its parent's.
        let parent = context.status.and_then(|status| u32::try_from(status.ppid).ok());
        if context.exe.is_empty()
            && let Some(parent) = parent.and_then(|parent| self.known.get(&parent))
        {
            context.exe.clone_from(&parent.exe);
            context.cmdline.clone_from(&parent.cmdline);
        }
        Some(self.remember(tgid, context))
    }

    /// `tgid` has exec'd `filename` with `argv` (facts from the kernel's exec event): its
    /// ids and capabilities are read again (a setuid program changes them).
    pub fn exec(&mut self, tgid: u32, filename: &str, argv: &[String]) -> Rc<Context> {
        let previous = self.known.remove(&tgid);
        let status = i32::try_from(tgid)
            .ok()
            .and_then(|pid| procfs::process::Process::new(pid).ok())
            .and_then(|process| status(&process))
            .or_else(|| previous.as_ref().and_then(|previous| previous.status));
        let cmdline = if argv.is_empty() {
            // sched_process_exec carries no arguments; the syscall's exit does.
            previous.filter(|previous| previous.exe == filename).map(|previous| previous.cmdline.clone())
        } else {
            Some(truncate(argv.join(" ")))
        };
        self.remember(tgid, Context { exe: filename.to_owned(), cmdline: cmdline.unwrap_or_default(), status })
    }

    fn remember(&mut self, tgid: u32, context: Context) -> Rc<Context> {
        if self.known.len() >= CAPACITY {
            self.known.clear();
        }
        let context = Rc::new(context);
        self.known.insert(tgid, Rc::clone(&context));
        context
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = read(std::process::id()).unwrap_or_else(|| panic!("no context for this process"));
        let status = me.status.unwrap_or_else(|| panic!("no status"));
        assert_eq!(status.ppid, nix::unistd::getppid().as_raw());
        let exe = std::env::current_exe().unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(me.exe, exe.to_string_lossy());
        assert!(me.cmdline.contains("governor"), "{}", me.cmdline);
        assert_eq!(status.euid, nix::unistd::geteuid().as_raw());
        assert_eq!(status.egid, nix::unistd::getegid().as_raw());
    }

    #[test]
    fn a_reaped_process_has_none_and_is_not_cached() {
        let mut child = std::process::Command::new("true").spawn().unwrap_or_else(|error| panic!("{error}"));
        let pid = child.id();
        let _ = child.wait();
        let mut cache = Cache::default();
        assert_eq!(cache.get(pid), None);
        assert!(cache.known.is_empty());
        // Its exec event still names what it ran.
        let execed = cache.exec(pid, "/usr/bin/true", &["true".to_owned(), "--x".to_owned()]);
        assert_eq!((execed.exe.as_str(), execed.cmdline.as_str(), execed.status), ("/usr/bin/true", "true --x", None));
        assert_eq!(cache.get(pid).map(|context| context.cmdline.clone()).as_deref(), Some("true --x"));
    }

    #[test]
    fn a_zombie_that_never_execd_has_its_parents_program() {
        // SAFETY: the child only calls _exit.
        let child = match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => unsafe { libc::_exit(0) },
            Ok(nix::unistd::ForkResult::Parent { child }) => child,
            Err(error) => panic!("{error}"),
        };
        // Wait until it is a zombie, without reaping it.
        let pid = u32::try_from(child.as_raw()).unwrap_or(0);
        while procfs::process::Process::new(child.as_raw())
            .and_then(|process| process.stat())
            .is_ok_and(|stat| stat.state != 'Z')
        {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let mut cache = Cache::default();
        let me = std::process::id();
        cache.exec(me, "/opt/agent", &["agent".to_owned(), "--run".to_owned()]);
        let zombie = cache.get(pid).unwrap_or_else(|| panic!("no context for the zombie"));
        assert_eq!((zombie.exe.as_str(), zombie.cmdline.as_str()), ("/opt/agent", "agent --run"));
        assert_eq!(zombie.status.map(|status| status.ppid), Some(i32::try_from(me).unwrap_or(0)));
        let _ = nix::sys::wait::waitpid(child, None);
    }
}
