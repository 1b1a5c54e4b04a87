//! Pathname UNIX sockets. Landlock governs connecting to them only from ABI 9, and a uid-0
//! agent passes the owner check of a root-owned socket (a container runtime's, systemd's),
//! so below admin every socket bound when the agent starts is masked in the agent's own
//! mount namespace: a mode-000 FIFO is mounted over it, and a connect to it fails with
//! EACCES (the write permission check comes first, and the agent has no capability to
//! override it nor to unmount). The ring's `[[unix.connect]]` list and `--policy` files name
//! the sockets left reachable, and sockets in the workspace or the agent's temp directory
//! (the agent's own) are never masked.
//!
//! The sockets bound when the agent starts are the kernel's list in `/proc/net/unix`. One
//! bound later is reachable through its file permissions only (README, Known limits).

use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};

/// The pathname sockets in `/proc/net/unix` text (`Num RefCount Protocol Flags Type St Inode
/// Path`; abstract names start with `@`, unbound sockets have no path), once each.
pub fn bound_sockets(proc_net_unix: &str) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = proc_net_unix
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut rest = line;
            for _ in 0..7 {
                rest = rest.trim_start();
                rest = &rest[rest.find(' ').unwrap_or(rest.len())..];
            }
            let path = rest.trim();
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// The allowed sockets as a glob set (the last component of each may be a glob).
pub fn allowed(patterns: &[PathBuf]) -> GlobSet {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        // A pattern that is not a valid glob is taken literally.
        let text = pattern.to_string_lossy();
        let glob = Glob::new(&text).or_else(|_| Glob::new(&globset::escape(&text)));
        if let Ok(glob) = glob {
            builder.add(glob);
        }
    }
    builder.build().unwrap_or_else(|_| GlobSet::empty())
}

/// The sockets to mask: every bound one but those allowed and those under `own` (the
/// workspace, the temp directory).
pub fn masks(bound: &[PathBuf], allowed: &GlobSet, own: &[&Path]) -> Vec<PathBuf> {
    bound
        .iter()
        .filter(|path| !allowed.is_match(path))
        .filter(|path| !own.iter().any(|dir| path.starts_with(dir)))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 12345 /run/docker.sock
0000000000000000: 00000002 00000000 00010000 0001 01 12346 @/tmp/.X11-unix/X0
0000000000000000: 00000002 00000000 00000000 0002 01 12347
0000000000000000: 00000003 00000000 00000000 0001 03 12348 /run/systemd/journal/stdout
0000000000000000: 00000002 00000000 00010000 0001 01 12349 /run/nscd/socket
0000000000000000: 00000002 00000000 00010000 0001 01 12350 /work/ws/agent.sock
0000000000000000: 00000002 00000000 00010000 0001 01 12351 /run/docker.sock
0000000000000000: 00000002 00000000 00010000 0001 01 12352 /run/with space.sock
";

    #[test]
    fn bound_pathname_sockets_are_listed_once_without_abstract_or_unbound_ones() {
        let bound = bound_sockets(SAMPLE);
        let names: Vec<&str> = bound.iter().filter_map(|path| path.to_str()).collect();
        assert_eq!(
            names,
            [
                "/run/docker.sock",
                "/run/nscd/socket",
                "/run/systemd/journal/stdout",
                "/run/with space.sock",
                "/work/ws/agent.sock"
            ]
        );
    }

    #[test]
    fn allowed_and_own_sockets_are_not_masked() {
        let bound = bound_sockets(SAMPLE);
        let allow = allowed(&[PathBuf::from("/run/nscd/socket"), PathBuf::from("/run/systemd/journal/*")]);
        let masked = masks(&bound, &allow, &[Path::new("/work/ws")]);
        let names: Vec<&str> = masked.iter().filter_map(|path| path.to_str()).collect();
        assert_eq!(names, ["/run/docker.sock", "/run/with space.sock"]);
    }
}
