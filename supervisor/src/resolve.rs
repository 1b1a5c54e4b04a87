//! What an event's path really names, found before the policy engine decides: rules about
//! secrets and programs must not be dodged by naming the same file another way.
//!
//! - An open's relative path is resolved against the opening process's working directory
//!   (or the directory descriptor it passed), and symlinks are followed: `cd ~/.ssh; cat
//!   id_ed25519` and a symlink to a key both name `~/.ssh/id_ed25519`.
//! - An exec's program is the file the kernel runs: `/proc/PID/exe` (symlinks resolved by the
//!   kernel); for a dynamic loader run as a program (`/lib64/ld-linux-x86-64.so.2
//!   /usr/bin/curl`), the program it was asked to load; and for a file whose content is that
//!   of a program some rule names (a renamed copy of curl), that program's path.
//!
//! Everything here reads procfs of a process that may already be gone (within the ~10 ms it
//! takes to decide an event): then the names the kernel reported stand alone.

use std::{
    collections::HashMap,
    fs,
    io::Read as _,
    os::unix::fs::MetadataExt as _,
    path::{Component, Path, PathBuf},
    time::{Duration, Instant},
};

use sha2::{Digest as _, Sha256};

use crate::{
    engine::Engine,
    probes::events::{Event, ExecFile},
};

/// `AT_FDCWD` of openat(2).
const AT_FDCWD: i32 = -100;

/// Directories searched for the programs that rules name, besides those on `PATH`.
const PROGRAM_DIRS: [&str; 6] = ["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin", "/usr/local/sbin"];

/// A file reached by more names than this in the program directories (besides its own and
/// those the rules name) is a multi-call binary: busybox or toybox, hundreds of programs in
/// one file, chosen by the name it is run under. Its content says nothing about which
/// program ran, so it is not identified by content (the name the kernel reported still
/// counts). Aliases such as `slogin -> ssh` are one or two names.
const MULTI_CALL_NAMES: usize = 3;

/// Resolved absolute paths are reused this long (a flood opens the same path again and
/// again; a symlink changed meanwhile is seen after this).
const CACHE_FOR: Duration = Duration::from_secs(1);
const CACHE_MAX: usize = 4096;

/// The programs the rules of one engine name, found in the program directories, by file
/// size (sizes filter before anything is hashed); and the directories' modification times
/// when they were listed.
#[derive(Debug, Default)]
struct Programs {
    by_size: HashMap<u64, Vec<PathBuf>>,
    dirs: Vec<(PathBuf, Option<std::time::SystemTime>)>,
}

impl Programs {
    /// Lists the program directories and `PATH` (a stat of every file: thousands), each
    /// directory once: `PATH` names most of them again, and on a merged `/usr` `/bin` is
    /// `/usr/bin`. A rule may name a program by any spelling of its directory (`/bin/nc`),
    /// so each entry is asked about under every spelling.
    fn find(engine: &Engine) -> Programs {
        let mut dirs: Vec<PathBuf> = PROGRAM_DIRS.iter().map(PathBuf::from).collect();
        if let Some(path) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&path).filter(|dir| dir.is_absolute()));
        }
        Programs::find_in(engine, dirs)
    }

    fn find_in(engine: &Engine, dirs: Vec<PathBuf>) -> Programs {
        let mut programs = Programs::default();
        // The spellings of each directory, by (device, inode), in the order first met.
        let mut spellings: Vec<((u64, u64), Vec<PathBuf>)> = Vec::new();
        for dir in dirs {
            let meta = fs::metadata(&dir).ok();
            // Every spelling stays in `dirs`, one that does not exist too: a spelling
            // re-pointed, or a directory appearing, later is a change (`current`).
            programs.dirs.push((dir.clone(), meta.as_ref().and_then(|meta| meta.modified().ok())));
            let Some(meta) = meta else { continue };
            let key = (meta.dev(), meta.ino());
            match spellings.iter_mut().find(|(known, _)| *known == key) {
                Some((_, names)) => names.push(dir),
                None => spellings.push((key, vec![dir])),
            }
        }
        let mut seen = std::collections::HashSet::new();
        // Every program file of the directories: (device, inode) -> (named by a rule, the
        // names that lead to it, symlinks followed).
        let mut files: HashMap<(u64, u64), Vec<(PathBuf, bool)>> = HashMap::new();
        for (_, dirs) in &spellings {
            let Ok(entries) = fs::read_dir(&dirs[0]) else { continue };
            for entry in entries.filter_map(Result::ok) {
                let name = entry.file_name();
                let spelled =
                    dirs.iter().map(|dir| dir.join(&name)).find(|path| engine.names_program(&path.to_string_lossy()));
                let named = spelled.is_some();
                let path = spelled.unwrap_or_else(|| entry.path());
                let Ok(meta) = fs::metadata(&path) else { continue };
                if !meta.is_file() {
                    continue;
                }
                let names = files.entry((meta.dev(), meta.ino())).or_default();
                names.push((path.clone(), named));
                if named && seen.insert((meta.dev(), meta.ino())) {
                    programs.by_size.entry(meta.len()).or_default().push(path);
                }
            }
        }
        for known in programs.by_size.values_mut() {
            known.retain(|path| !multi_call(path, &files));
        }
        programs
    }

    /// Whether no program directory has gained, lost or renamed an entry since the listing.
    fn current(&self) -> bool {
        self.dirs.iter().all(|(dir, then)| modified(dir) == *then)
    }
}

fn modified(dir: &Path) -> Option<std::time::SystemTime> {
    fs::metadata(dir).and_then(|meta| meta.modified()).ok()
}

thread_local! {
    /// The last listing and the engine it was made for: the daemon's agents share its
    /// engine, so a launch through the daemon reuses the listing while the directories are
    /// unchanged (one stat per directory instead of one per program).
    static LISTED: std::cell::RefCell<Option<(std::rc::Weak<Engine>, std::rc::Rc<Programs>)>> =
        const { std::cell::RefCell::new(None) };
}

/// The last listing, when it was made for `engine` and its directories have not changed
/// since.
fn made_for(engine: &std::rc::Rc<Engine>) -> Option<std::rc::Rc<Programs>> {
    LISTED.with_borrow(|listed| {
        listed
            .as_ref()
            .filter(|(made_for, programs)| {
                made_for.upgrade().is_some_and(|made_for| std::rc::Rc::ptr_eq(&made_for, engine)) && programs.current()
            })
            .map(|(_, programs)| std::rc::Rc::clone(programs))
    })
}

/// The listing of the programs `engine`'s rules name: the last one when it was made for this
/// engine and its directories have not changed since, else a new one.
fn listed(engine: &std::rc::Rc<Engine>) -> std::rc::Rc<Programs> {
    made_for(engine).unwrap_or_else(|| {
        let programs = std::rc::Rc::new(Programs::find(engine));
        LISTED.set(Some((std::rc::Rc::downgrade(engine), std::rc::Rc::clone(&programs))));
        programs
    })
}

/// Lists the programs `engine`'s rules name now, before an agent runs, so that its first
/// decisions do not wait for the listing (a stat per file of the program directories): the
/// resolvers made for `engine` on this thread find it made.
pub fn list_programs(engine: &std::rc::Rc<Engine>) {
    drop(listed(engine));
}

/// The resolver of one agent's events.
#[derive(Debug, Default)]
pub struct Resolver {
    /// The engine whose rules name the programs below.
    engine: Option<std::rc::Rc<Engine>>,
    /// Programs the rules name, listed when first needed: an agent that runs no program
    /// (or a run without probes, which has no events) never pays for the listing.
    programs: std::cell::OnceCell<std::rc::Rc<Programs>>,
    /// Hashes of the programs the rules name, read when a file of the same size is first run.
    known: HashMap<PathBuf, Option<[u8; 32]>>,
    /// Hashes of executed files, by (device, inode, mtime, size).
    hashed: HashMap<(u64, u64, i64, u64), [u8; 32]>,
    /// Absolute path -> canonical path, and when.
    canonical: HashMap<PathBuf, (PathBuf, Instant)>,
    /// Each thread's working directory, as the kernel last reported it (`kind::CWD`).
    cwds: HashMap<u32, PathBuf>,
}

impl Resolver {
    /// For the exec rules of `engine`: the programs they name are looked up in the usual
    /// program directories and on `PATH`, to recognise copies of them by content.
    pub fn new(engine: &std::rc::Rc<Engine>) -> Resolver {
        // The listing made ahead for this engine ([`list_programs`]), taken now: asked for
        // at the first exec instead, it could be another engine's by then (a daemon's
        // agents with rules of their own take turns), and be made again while that exec
        // waits for its decision.
        let programs = std::cell::OnceCell::new();
        if let Some(made) = made_for(engine) {
            let _ = programs.set(made);
        }
        Resolver { engine: Some(std::rc::Rc::clone(engine)), programs, ..Resolver::default() }
    }

    /// The programs the rules name (listed at the first call).
    fn programs(&self) -> std::rc::Rc<Programs> {
        let programs = self.programs.get_or_init(|| self.engine.as_ref().map(listed).unwrap_or_default());
        std::rc::Rc::clone(programs)
    }

    /// Adds the other names of the event's path or program (`aka`).
    pub fn resolve(&mut self, event: &mut Event) {
        match event {
            Event::Open { header, dirfd, path, aka, .. } => {
                if let Some(resolved) = self.open_path((header.tgid, header.pid), *dirfd, path)
                    && resolved.as_os_str() != path.as_str()
                {
                    aka.push(resolved.to_string_lossy().into_owned());
                }
            }
            Event::Exec { header, filename, argv, file, aka } if header.kind == governor_common::kind::EXECED => {
                self.program((header.tgid, header.pid), filename, argv, *file, aka);
            }
            // A dynamic loader run as a program: sched_process_exec carries no arguments, and
            // procfs is gone once a short program has ended, so the program it was asked to
            // run is found from the syscall's own event, which captured them at entry.
            Event::Exec { header, filename, argv, aka, .. } if header.result == 0 && is_loader(Path::new(filename)) => {
                if let Some(program) = loaded_program(argv).map(str::to_owned) {
                    let resolved = self.open_path((header.tgid, header.pid), AT_FDCWD, &program);
                    aka.push(program);
                    if let Some(resolved) = resolved.map(|path| path.to_string_lossy().into_owned())
                        && !aka.contains(&resolved)
                    {
                        aka.push(resolved);
                    }
                }
            }
            // A multi-call binary run as `busybox wget`: the applet is the program (the
            // syscall's event has the arguments; sched_process_exec has none).
            Event::Exec { header, filename, argv, aka, .. }
                if header.result == 0 && header.kind == governor_common::kind::EXEC =>
            {
                // Run under its own name (`/bin/wget -> busybox`), the applet was matched by
                // that name already, on the kernel's event.
                if let Some(binary) = self.open_path((header.tgid, header.pid), AT_FDCWD, filename)
                    && let Some(applet) = applet(&binary, argv)
                    && Path::new(filename).file_name().is_none_or(|name| name != applet)
                {
                    aka.push(binary.join(applet).to_string_lossy().into_owned());
                }
            }
            Event::Exec { header, filename, aka, .. } if header.result != 0 => {
                // A refused exec: its path as the process named it, resolved.
                if let Some(resolved) = self.open_path((header.tgid, header.pid), AT_FDCWD, filename)
                    && resolved.as_os_str() != filename.as_str()
                {
                    aka.push(resolved.to_string_lossy().into_owned());
                }
            }
            Event::Fs { header, dirfd, path, dirfd2, path2, aka, .. } => {
                if let Some(resolved) = self.open_path((header.tgid, header.pid), *dirfd, path)
                    && resolved.as_os_str() != path.as_str()
                {
                    aka.push(resolved.to_string_lossy().into_owned());
                }
                if !path2.is_empty() {
                    // Rules match the new name too (the engine reads `path` and `aka`).
                    aka.push(path2.clone());
                    if let Some(resolved) = self.open_path((header.tgid, header.pid), *dirfd2, path2)
                        && resolved.as_os_str() != path2.as_str()
                    {
                        aka.push(resolved.to_string_lossy().into_owned());
                    }
                }
            }
            Event::Cwd { header, path } => {
                if self.cwds.len() >= CACHE_MAX {
                    self.cwds.clear();
                }
                self.cwds.insert(header.pid, PathBuf::from(path.as_str()));
            }
            Event::Exec { .. } | Event::Net { .. } => {}
        }
    }

    /// An opened (or refused) path, absolute and with symlinks followed as far as it exists.
    fn open_path(&mut self, (tgid, tid): (u32, u32), dirfd: i32, path: &str) -> Option<PathBuf> {
        if path.is_empty() {
            return None;
        }
        let path = Path::new(path);
        let absolute = if path.is_absolute() {
            path.to_path_buf()
        } else {
            let base = if dirfd == AT_FDCWD {
                // The kernel's report, taken when the path was used; procfs only while the
                // process lives.
                match self.cwds.get(&tid).filter(|cwd| !cwd.starts_with("...")) {
                    Some(cwd) => cwd.clone(),
                    None => fs::read_link(format!("/proc/{tgid}/cwd")).ok()?,
                }
            } else {
                fs::read_link(format!("/proc/{tgid}/fd/{dirfd}")).ok()?
            };
            base.join(path)
        };
        // `/proc/self` is whoever reads it: here governor, for the agent it is the agent
        // (busybox's shell runs its applets as `/proc/self/exe`). So is `/dev/fd`, which an
        // exec by descriptor (fexecve) names.
        let absolute = match absolute.strip_prefix("/proc/self").or_else(|_| absolute.strip_prefix("/proc/thread-self"))
        {
            Ok(rest) => Path::new(&format!("/proc/{tgid}")).join(rest),
            Err(_) => match absolute.strip_prefix("/dev/fd") {
                Ok(rest) => Path::new(&format!("/proc/{tgid}/fd")).join(rest),
                Err(_) => absolute,
            },
        };
        Some(self.canonical(&normalize(&absolute)))
    }

    /// Symlinks followed: the longest existing prefix canonicalized, the rest appended.
    fn canonical(&mut self, path: &Path) -> PathBuf {
        if let Some((resolved, when)) = self.canonical.get(path)
            && when.elapsed() < CACHE_FOR
        {
            return resolved.clone();
        }
        let mut existing = path.to_path_buf();
        let mut rest = Vec::new();
        let resolved = loop {
            if let Ok(found) = fs::canonicalize(&existing) {
                break rest.iter().rev().fold(found, |acc: PathBuf, part: &std::ffi::OsString| acc.join(part));
            }
            match (existing.file_name().map(std::ffi::OsStr::to_os_string), existing.parent()) {
                (Some(name), Some(parent)) => {
                    rest.push(name);
                    existing = parent.to_path_buf();
                }
                _ => break path.to_path_buf(),
            }
        };
        if self.canonical.len() >= CACHE_MAX {
            self.canonical.clear();
        }
        self.canonical.insert(path.to_path_buf(), (resolved.clone(), Instant::now()));
        resolved
    }

    /// The names of what a completed exec ran. What the kernel reported comes first and
    /// does not depend on the process still running: its own copy of the path (absolute
    /// when the program was found on `PATH` or named so), resolved on this machine, and the
    /// arguments captured at the syscall's entry. procfs adds the kernel's resolution of the
    /// executable while the process lives (a relative or symlinked name).
    ///
    /// `file` is the file the kernel ran: what is read to identify it must be that file,
    /// and when it cannot be read (a memfd or a deleted file, gone with a short-lived
    /// process; a path now naming another file) it may be any named program of its size,
    /// which fails closed.
    fn program(
        &mut self,
        (tgid, tid): (u32, u32),
        filename: &str,
        argv: &[String],
        file: Option<ExecFile>,
        aka: &mut Vec<String>,
    ) {
        let push = |name: String, aka: &mut Vec<String>| {
            if name != filename && !aka.contains(&name) {
                aka.push(name);
            }
        };
        let mut run: Option<PathBuf> = self.open_path((tgid, tid), AT_FDCWD, filename);
        if let Some(resolved) = &run {
            push(resolved.to_string_lossy().into_owned(), aka);
        }
        if let Ok(exe) = fs::read_link(format!("/proc/{tgid}/exe")) {
            push(exe.to_string_lossy().into_owned(), aka);
            run = Some(exe);
        }
        // Set when the program is one a dynamic loader runs: not the file the kernel ran.
        let mut loaded = false;
        if run.as_deref().is_some_and(is_loader) || is_loader(Path::new(filename)) {
            let live = fs::read(format!("/proc/{tgid}/cmdline")).ok().map(|bytes| {
                bytes
                    .split(|byte| *byte == 0)
                    .filter(|arg| !arg.is_empty())
                    .map(|arg| String::from_utf8_lossy(arg).into_owned())
                    .collect::<Vec<_>>()
            });
            // The captured arguments first (the process may be gone), then the whole
            // command line, which has every option (the capture keeps three arguments).
            let program = loaded_program(argv)
                .map(str::to_owned)
                .or_else(|| live.as_deref().and_then(loaded_program).map(str::to_owned));
            if let Some(program) = program {
                push(program.clone(), aka);
                let resolved = self.open_path((tgid, tid), AT_FDCWD, &program);
                if let Some(resolved) = &resolved {
                    push(resolved.to_string_lossy().into_owned(), aka);
                }
                run = resolved;
                loaded = true;
            }
        }
        let ran = file.filter(|_| !loaded);
        // The content is read from the file the process runs where it still can: a memfd or
        // a deleted file has no path to open, only its `/proc/PID/exe`.
        let known = match run {
            Some(path) => {
                let exe = PathBuf::from(format!("/proc/{tgid}/exe"));
                let source = if fs::read_link(&exe).is_ok_and(|running| running == path) { exe } else { path.clone() };
                let known = match (open_program(&source), ran) {
                    (Some(Program::Open(opened)), Some(ran)) if !is_file(&opened, ran) => self.of_size(ran.size),
                    (Some(opened), _) => self.identify(&source, opened),
                    (None, Some(ran)) => self.of_size(ran.size),
                    (None, None) => Vec::new(),
                };
                known.into_iter().filter(|known| *known != path).collect()
            }
            None => ran.map(|ran| self.of_size(ran.size)).unwrap_or_default(),
        };
        for known in known {
            push(known.to_string_lossy().into_owned(), aka);
        }
    }

    /// Every named program of `size` bytes: what a file that cannot be read may have been.
    fn of_size(&self, size: u64) -> Vec<PathBuf> {
        self.programs().by_size.get(&size).cloned().unwrap_or_default()
    }

    /// The programs a rule names whose content `file` has: one, or none; every program of
    /// its size when the content cannot be read now (a lease the agent holds on it), which
    /// fails closed.
    fn identify(&mut self, path: &Path, file: Program) -> Vec<PathBuf> {
        match file {
            Program::Open(file) => self.identify_open(file).unwrap_or_default(),
            // stat does not wait for a lease.
            Program::Busy => fs::metadata(path)
                .ok()
                .and_then(|meta| self.programs().by_size.get(&meta.len()).cloned())
                .unwrap_or_default(),
        }
    }

    fn identify_open(&mut self, mut file: fs::File) -> Option<Vec<PathBuf>> {
        let meta = file.metadata().ok()?;
        if !meta.is_file() {
            return None;
        }
        let programs = self.programs();
        let candidates = programs.by_size.get(&meta.len())?;
        // The program itself or a hard link of it: the same inode, nothing to read.
        if let Some(known) = candidates
            .iter()
            .find(|known| fs::metadata(known).is_ok_and(|m| m.ino() == meta.ino() && m.dev() == meta.dev()))
        {
            return Some(vec![known.clone()]);
        }
        let key = (meta.dev(), meta.ino(), meta.mtime(), meta.len());
        let hash = match self.hashed.get(&key) {
            Some(hash) => *hash,
            None => match hash_open(&mut file) {
                Ok(hash) => {
                    self.hashed.insert(key, hash);
                    hash
                }
                // A lease (or a read that would wait) on a file the size of a named
                // program: it may be any of them.
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => return Some(candidates.clone()),
                Err(_) => return None,
            },
        };
        for known in candidates {
            let known_hash = *self.known.entry(known.clone()).or_insert_with(|| hash_file(known));
            if known_hash == Some(hash) {
                return Some(vec![known.clone()]);
            }
        }
        None
    }
}

/// Multi-call binaries, by file name: one file, many programs, chosen by the name it runs
/// under or by its first argument.
const MULTI_CALL_BINARIES: [&str; 2] = ["busybox", "toybox"];

/// The applet a multi-call binary at `binary` (symlinks resolved) runs with `argv`: the
/// name it was run under (a symlink, or busybox's shell re-running `/proc/self/exe`), else
/// its first argument (`busybox wget`). Named `<binary>/<applet>` (`/usr/bin/busybox/wget`),
/// which a rule on `**/wget` matches and no real file has.
fn applet<'a>(binary: &Path, argv: &'a [String]) -> Option<&'a str> {
    let name = binary.file_name()?.to_str()?;
    if !MULTI_CALL_BINARIES.contains(&name) {
        return None;
    }
    let base = |arg: &'a String| arg.rsplit('/').next().unwrap_or(arg);
    let first = base(argv.first()?);
    let applet = if MULTI_CALL_BINARIES.contains(&first) { argv.get(1).map(base)? } else { first };
    (!applet.is_empty() && !applet.starts_with('-') && !MULTI_CALL_BINARIES.contains(&applet)).then_some(applet)
}

/// Whether `opened` is the file the kernel ran (the path was not pointed at another since).
fn is_file(opened: &fs::File, ran: ExecFile) -> bool {
    opened.metadata().is_ok_and(|meta| crate::probes::kernel_dev(meta.dev()) == ran.dev && meta.ino() == ran.ino)
}

/// A program file opened to read its content.
enum Program {
    Open(fs::File),
    /// Someone holds a lease on it: opening would wait for the lease to break.
    Busy,
}

/// Opens `path` without ever waiting: a file the agent controls is read in the decision
/// loop, so a lease on it (which makes an open wait up to `lease-break-time`), a FIFO or a
/// terminal must not stall governor. Non-regular files are not programs.
fn open_program(path: &Path) -> Option<Program> {
    use std::os::unix::fs::OpenOptionsExt as _;
    match fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path) {
        Ok(file) => file.metadata().ok().filter(fs::Metadata::is_file).map(|_| Program::Open(file)),
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => Some(Program::Busy),
        Err(_) => None,
    }
}

/// Whether the program file at `path` is also reached by more than [`MULTI_CALL_NAMES`]
/// names that no rule names, other than the file's own name (`files` from
/// [`Resolver::new`]).
fn multi_call(path: &Path, files: &HashMap<(u64, u64), Vec<(PathBuf, bool)>>) -> bool {
    let Ok(meta) = fs::metadata(path) else { return false };
    let own = fs::canonicalize(path).ok().and_then(|real| real.file_name().map(std::ffi::OsStr::to_os_string));
    let Some(names) = files.get(&(meta.dev(), meta.ino())) else { return false };
    let mut others: Vec<&std::ffi::OsStr> = names
        .iter()
        .filter(|(_, named)| !named)
        .filter_map(|(name, _)| name.file_name())
        .filter(|name| Some(*name) != own.as_deref())
        .collect();
    others.sort_unstable();
    others.dedup();
    others.len() > MULTI_CALL_NAMES
}

/// The content hash of a program a rule names (root's, never waited on).
fn hash_file(path: &Path) -> Option<[u8; 32]> {
    match open_program(path)? {
        Program::Open(mut file) => hash_open(&mut file).ok(),
        Program::Busy => None,
    }
}

fn hash_open(file: &mut fs::File) -> std::io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hasher.finalize().into())
}

/// `.` and `..` removed without touching the filesystem (a `..` after a symlink is what the
/// kernel would also walk lexically only with the symlink resolved; `canonical` follows the
/// links of whatever prefix exists).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Whether `exe` is a dynamic loader (ld.so(8)), which runs the program named by its first
/// argument that is not an option.
fn is_loader(exe: &Path) -> bool {
    let name = exe.file_name().map(|name| name.to_string_lossy()).unwrap_or_default();
    name.starts_with("ld-linux")
        || name.starts_with("ld-musl")
        || name == "ld.so"
        || (name.starts_with("ld-") && name.contains(".so"))
}

/// The program ld.so(8) runs for `args` (`argv[0]` first): the first argument after the
/// loader's own options (those listed in ld.so(8); the ones that take a value skip it).
fn loaded_program(args: &[String]) -> Option<&str> {
    const WITH_VALUE: [&str; 7] = [
        "--library-path",
        "--inhibit-rpath",
        "--audit",
        "--preload",
        "--argv0",
        "--glibc-hwcaps-prefix",
        "--glibc-hwcaps-mask",
    ];
    let mut rest = args.iter().skip(1);
    while let Some(arg) = rest.next() {
        if WITH_VALUE.contains(&arg.as_str()) {
            rest.next();
        } else if arg.starts_with("--") {
            if arg == "--" {
                return rest.next().map(String::as_str);
            }
        } else {
            return Some(arg);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|arg| (*arg).to_owned()).collect()
    }

    #[test]
    fn the_loader_runs_its_first_non_option_argument() {
        assert_eq!(loaded_program(&strings(&["ld.so", "/usr/bin/curl", "-s"])), Some("/usr/bin/curl"));
        assert_eq!(
            loaded_program(&strings(&["ld.so", "--library-path", "/x", "--inhibit-cache", "./curl"])),
            Some("./curl")
        );
        assert_eq!(loaded_program(&strings(&["ld.so", "--argv0", "sh", "--", "/bin/nc"])), Some("/bin/nc"));
        assert_eq!(loaded_program(&strings(&["ld.so", "--list"])), None);
        assert!(is_loader(Path::new("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")));
        assert!(is_loader(Path::new("/lib/ld-musl-x86_64.so.1")));
        assert!(!is_loader(Path::new("/usr/bin/ldd")));
    }

    #[test]
    fn relative_paths_and_symlinks_resolve() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let root = dir.path().canonicalize().unwrap_or_else(|error| panic!("{error}"));
        let secret = root.join("home/.ssh");
        fs::create_dir_all(&secret).unwrap_or_else(|error| panic!("{error}"));
        fs::write(secret.join("id"), "k").unwrap_or_else(|error| panic!("{error}"));
        std::os::unix::fs::symlink(secret.join("id"), root.join("link")).unwrap_or_else(|error| panic!("{error}"));
        let mut resolver = Resolver::default();
        assert_eq!(resolver.canonical(&root.join("link")), secret.join("id"));
        assert_eq!(normalize(&root.join("home/./x/../.ssh/id")), secret.join("id"));
        // A file that does not exist yet: its existing prefix resolved, the rest kept.
        std::os::unix::fs::symlink(&secret, root.join("keys")).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(resolver.canonical(&root.join("keys/new")), secret.join("new"));
        // This process's own cwd, through procfs.
        let me = std::process::id();
        let cwd = std::env::current_dir().unwrap_or_else(|error| panic!("{error}"));
        let cwd = cwd.canonicalize().unwrap_or(cwd);
        assert_eq!(resolver.open_path((me, me), AT_FDCWD, "some-file"), Some(cwd.join("some-file")));
        // `/proc/self` names the agent's process, not governor's.
        let exe = fs::read_link("/proc/self/exe").unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(resolver.open_path((me, me), AT_FDCWD, "/proc/self/exe"), Some(exe));
        assert_eq!(
            resolver.open_path((u32::MAX, u32::MAX), AT_FDCWD, "/proc/self/exe"),
            Some(PathBuf::from(format!("/proc/{}/exe", u32::MAX)))
        );
    }

    #[test]
    fn a_program_that_cannot_be_read_may_be_any_named_program_of_its_size() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let root = dir.path().canonicalize().unwrap_or_else(|error| panic!("{error}"));
        let curl = root.join("curl");
        fs::write(&curl, "a network tool").unwrap_or_else(|error| panic!("{error}"));
        let mut programs = Programs::default();
        programs.by_size.insert(14, vec![curl.clone()]);
        let mut resolver =
            Resolver { programs: std::cell::OnceCell::from(std::rc::Rc::new(programs)), ..Resolver::default() };
        let gone = (u32::MAX, u32::MAX);
        let size = |size| Some(ExecFile { dev: 1, ino: 2, size });
        // fexecve of a memfd whose process has ended: nothing left to read but its size.
        let mut aka = Vec::new();
        resolver.program(gone, "/dev/fd/4", &[], size(14), &mut aka);
        assert_eq!(aka, [format!("/proc/{}/fd/4", u32::MAX), curl.to_string_lossy().into_owned()]);
        let mut aka = Vec::new();
        resolver.program(gone, "/dev/fd/4", &[], size(15), &mut aka);
        assert_eq!(aka, [format!("/proc/{}/fd/4", u32::MAX)]);
        // A path now naming another file than the one the kernel ran (device 1, inode 2).
        let other = root.join("other");
        fs::write(&other, "something else").unwrap_or_else(|error| panic!("{error}"));
        let mut aka = Vec::new();
        resolver.program(gone, &other.to_string_lossy(), &[], size(14), &mut aka);
        assert_eq!(aka, [curl.to_string_lossy().into_owned()]);
        // The same file, read: its content decides (it is not curl).
        let meta = fs::metadata(&other).unwrap_or_else(|error| panic!("{error}"));
        let same = Some(ExecFile { dev: crate::probes::kernel_dev(meta.dev()), ino: meta.ino(), size: 14 });
        let mut aka = Vec::new();
        resolver.program(gone, &other.to_string_lossy(), &[], same, &mut aka);
        assert!(aka.is_empty(), "{aka:?}");
    }

    #[test]
    fn a_multi_call_binary_s_applet_is_its_program() {
        let busybox = Path::new("/usr/bin/busybox");
        assert_eq!(applet(busybox, &strings(&["busybox", "wget", "-q", "http://x"])), Some("wget"));
        assert_eq!(applet(busybox, &strings(&["/bin/busybox", "nc"])), Some("nc"));
        // Run under the applet's own name: a symlink, or `/proc/self/exe` from busybox's shell.
        assert_eq!(applet(busybox, &strings(&["wget", "http://x"])), Some("wget"));
        assert_eq!(applet(busybox, &strings(&["busybox", "--list"])), None);
        assert_eq!(applet(busybox, &strings(&["busybox"])), None);
        assert_eq!(applet(Path::new("/usr/bin/curl"), &strings(&["curl", "x"])), None);
    }

    #[test]
    fn a_multi_call_binary_is_not_identified_by_content() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let root = dir.path().canonicalize().unwrap_or_else(|error| panic!("{error}"));
        let busybox = root.join("busybox");
        fs::write(&busybox, "multi").unwrap_or_else(|error| panic!("{error}"));
        let nc = root.join("nc.openbsd");
        fs::write(&nc, "nc").unwrap_or_else(|error| panic!("{error}"));
        let mut files: HashMap<(u64, u64), Vec<(PathBuf, bool)>> = HashMap::new();
        let mut link = |name: &str, target: &Path, named: bool| {
            let path = root.join(name);
            std::os::unix::fs::symlink(target, &path).unwrap_or_else(|error| panic!("{error}"));
            let meta = fs::metadata(&path).unwrap_or_else(|error| panic!("{error}"));
            files.entry((meta.dev(), meta.ino())).or_default().push((path, named));
        };
        link("wget", &busybox, true);
        for applet in ["cat", "sleep", "sh", "ls"] {
            link(applet, &busybox, false);
        }
        // An alternative: nc and netcat lead to nc.openbsd, one alias besides.
        link("nc", &nc, true);
        link("netcat", &nc, true);
        link("nc-alias", &nc, false);
        assert!(multi_call(&root.join("wget"), &files));
        assert!(!multi_call(&root.join("nc"), &files));
    }

    #[test]
    fn a_program_named_by_another_spelling_of_its_directory_is_known_and_its_directory_listed_once() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let root = dir.path().canonicalize().unwrap_or_else(|error| panic!("{error}"));
        let usr_bin = root.join("usr/bin");
        fs::create_dir_all(&usr_bin).unwrap_or_else(|error| panic!("{error}"));
        fs::write(usr_bin.join("nc"), "a network tool").unwrap_or_else(|error| panic!("{error}"));
        fs::write(usr_bin.join("ls"), "a lister").unwrap_or_else(|error| panic!("{error}"));
        // A merged /usr: bin -> usr/bin.
        std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap_or_else(|error| panic!("{error}"));
        let text = format!(
            "[[rule]]\nid = \"nc\"\nkind = \"exec\"\nbinary = [\"{}/bin/nc\"]\naction = \"kill\"\nseverity = \"high\"\npriority = 1\nreason = \"x\"\n",
            root.display()
        );
        let file: crate::policy::rules::RulesFile = toml::from_str(&text).unwrap_or_else(|error| panic!("{error}"));
        let engine = Engine::new(file.rule).unwrap_or_else(|error| panic!("{error}"));
        let programs = Programs::find_in(&engine, vec![usr_bin.clone(), root.join("bin"), usr_bin.clone()]);
        assert_eq!(programs.by_size.get(&14), Some(&vec![root.join("bin/nc")]));
        assert_eq!(programs.by_size.len(), 1, "{:?}", programs.by_size);
        // Every spelling is watched for changes.
        assert_eq!(programs.dirs.len(), 3);
        assert!(programs.current());
    }
}
