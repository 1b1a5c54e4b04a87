//! tracefs: where the tracepoints are, and a check that each record field the programs read
//! sits at the offset they assume (the layouts are stable, but a program reading the wrong
//! offset would report garbage silently; refusing is better).

use std::{
    fs,
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("tracefs is not mounted and mounting it at /sys/kernel/tracing failed: {0}")]
    Mount(nix::Error),
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{event}: field {field} is at offset {found:?}, the probes read it at {expected}")]
    Layout { event: &'static str, field: &'static str, expected: usize, found: Option<usize> },
}

/// (event, field, offset the programs use).
const LAYOUT: [(&str, &str, usize); 17] = [
    ("syscalls/sys_enter_openat", "filename", 24),
    ("syscalls/sys_enter_openat", "flags", 32),
    ("syscalls/sys_enter_openat2", "filename", 24),
    ("syscalls/sys_enter_openat2", "how", 32),
    ("syscalls/sys_exit_openat", "ret", 16),
    ("syscalls/sys_exit_openat2", "ret", 16),
    ("syscalls/sys_enter_execve", "filename", 16),
    ("syscalls/sys_enter_execve", "argv", 24),
    ("syscalls/sys_enter_execveat", "filename", 24),
    ("syscalls/sys_enter_execveat", "argv", 32),
    ("syscalls/sys_exit_execve", "ret", 16),
    ("syscalls/sys_exit_execveat", "ret", 16),
    ("syscalls/sys_enter_connect", "uservaddr", 24),
    ("syscalls/sys_enter_connect", "addrlen", 32),
    ("syscalls/sys_exit_connect", "ret", 16),
    ("sched/sched_process_exec", "filename", 8),
    ("sched/sched_process_exec", "pid", 12),
];

const TRACING: &str = "/sys/kernel/tracing";

/// The tracefs root, mounting it when needed (aya also looks for it there).
pub fn root() -> Result<PathBuf, Error> {
    let root = PathBuf::from(TRACING);
    if !root.join("events").is_dir() {
        nix::mount::mount(Some("tracefs"), TRACING, Some("tracefs"), nix::mount::MsFlags::empty(), None::<&str>)
            .map_err(Error::Mount)?;
    }
    Ok(root)
}

/// Mounts securityfs at /sys/kernel/security when it is not, so the LSM list can be read.
pub fn mount_securityfs() {
    let path = "/sys/kernel/security";
    if !Path::new(path).join("lsm").exists() {
        let _ =
            nix::mount::mount(Some("securityfs"), path, Some("securityfs"), nix::mount::MsFlags::empty(), None::<&str>);
    }
}

pub fn check_layouts(root: &Path) -> Result<(), Error> {
    for (event, field, expected) in LAYOUT {
        let path = root.join("events").join(event).join("format");
        let text = fs::read_to_string(&path).map_err(|source| Error::Read { path, source })?;
        let found = field_offset(&text, field);
        if found != Some(expected) {
            return Err(Error::Layout { event, field, expected, found });
        }
    }
    Ok(())
}

/// The offset of `field` in a tracepoint format file
/// (`field:const char * filename;\toffset:24;\tsize:8;\tsigned:0;`).
fn field_offset(format: &str, field: &str) -> Option<usize> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';');
        let declaration = parts.next()?.strip_prefix("field:")?;
        let name = declaration.rsplit([' ', '*']).next()?;
        if name != field {
            return None;
        }
        parts.find_map(|part| part.trim().strip_prefix("offset:")?.parse().ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_read_from_format_files() {
        let format = "name: sys_enter_openat\nformat:\n\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\
            \tfield:const char * filename;\toffset:24;\tsize:8;\tsigned:0;\n\
            \tfield:__data_loc char[] path;\toffset:8;\tsize:4;\tsigned:0;\n";
        assert_eq!(field_offset(format, "filename"), Some(24));
        assert_eq!(field_offset(format, "__syscall_nr"), Some(8));
        assert_eq!(field_offset(format, "path"), Some(8));
        assert_eq!(field_offset(format, "flags"), None);
    }
}
