//! Carving secrets out of allowed trees. Landlock can only allow: a rule on a directory covers
//! everything beneath it. To let an agent read `$HOME` but not `~/.ssh`, the rule on `$HOME` is
//! replaced by rules on each of its entries except `.ssh`, recursing along the path to each
//! secret. The secret itself never gets a rule, and neither does anything created later in a
//! directory that was expanded, so a secret that does not exist yet stays unreadable when it
//! appears. This module is pure: it sees the filesystem only through [`FsView`].

use std::{
    ffi::{OsStr, OsString},
    fs,
    path::{Path, PathBuf},
};

use std::{ffi::CString, os::unix::ffi::OsStrExt as _};

/// What the expansion needs to know about a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Missing,
    Dir,
    File,
    Symlink,
}

/// The filesystem as the expansion sees it (a fake in tests).
pub trait FsView {
    /// The kind of `path` itself (a symlink is not followed).
    fn kind(&self, path: &Path) -> Kind;
    /// The entries of directory `dir` with their kinds, sorted by name.
    fn children(&self, dir: &Path) -> Vec<(OsString, Kind)>;
    /// `path` with every symlink resolved, or `None` when it does not exist.
    fn canonical(&self, path: &Path) -> Option<PathBuf>;
}

/// The real filesystem. Canonical paths are remembered for as long as it lives (one plan):
/// a plan resolves hundreds of paths under the same few directories, and `realpath` asks
/// the kernel about every component of each (600 `readlink`s for ring medium).
#[derive(Default)]
pub struct RealFs {
    /// By the path's bytes: `Path` compares `a/` and `a` equal, which realpath does not.
    canonical: std::cell::RefCell<std::collections::HashMap<OsString, Option<PathBuf>>>,
}

impl FsView for RealFs {
    fn kind(&self, path: &Path) -> Kind {
        match fs::symlink_metadata(path) {
            Err(_) => Kind::Missing,
            Ok(meta) if meta.file_type().is_symlink() => Kind::Symlink,
            Ok(meta) if meta.is_dir() => Kind::Dir,
            Ok(_) => Kind::File,
        }
    }

    fn children(&self, dir: &Path) -> Vec<(OsString, Kind)> {
        // The kind comes from the directory entry (d_type), not from a stat per entry: /etc
        // alone has a couple of hundred, and this runs on every launch.
        let mut entries: Vec<(OsString, Kind)> = fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|entry| {
                        let entry = entry.ok()?;
                        let kind = match entry.file_type() {
                            Err(_) => Kind::Missing,
                            Ok(kind) if kind.is_symlink() => Kind::Symlink,
                            Ok(kind) if kind.is_dir() => Kind::Dir,
                            Ok(_) => Kind::File,
                        };
                        Some((entry.file_name(), kind))
                    })
                    .collect()
            })
            .unwrap_or_default();
        entries.sort();
        entries
    }

    fn canonical(&self, path: &Path) -> Option<PathBuf> {
        if let Some(known) = self.canonical.borrow().get(path.as_os_str()) {
            return known.clone();
        }
        // The canonical parent and this name: the name is canonical there unless it is a
        // symlink (or `..`, which `file_name` does not give), which is resolved in full.
        // `Path` drops a trailing `/` or `/.`, which realpath does not (a file so written is
        // not a directory: ENOTDIR), so such a path is resolved in full too.
        let bytes = path.as_os_str().as_bytes();
        let trailing = bytes.ends_with(b"/") || bytes.ends_with(b"/.");
        let resolved = match (path.parent(), path.file_name()) {
            (Some(parent), Some(name)) if path.is_absolute() && !trailing => {
                self.canonical(parent).and_then(|parent| {
                    let joined = parent.join(name);
                    match fs::symlink_metadata(&joined) {
                        Ok(meta) if meta.file_type().is_symlink() => fs::canonicalize(&joined).ok(),
                        Ok(_) => Some(joined),
                        Err(_) => None,
                    }
                })
            }
            _ => fs::canonicalize(path).ok(),
        };
        self.canonical.borrow_mut().insert(path.as_os_str().to_os_string(), resolved.clone());
        resolved
    }
}

/// A path the agent must not reach.
#[derive(Clone, Debug)]
pub struct Carve {
    /// Absolute; its last component may be a glob.
    pub path: PathBuf,
    /// `true` for secrets: never granted, not even by a rule naming a path inside them.
    /// `false` for a ring's exclusions: carved out of broader rules only, so a narrower rule
    /// inside can grant part of it back (`/dev` out of `/`, then `/dev/null`).
    pub hard: bool,
    /// What to call it in notes (the policy's spelling and reason).
    pub label: String,
}

/// A rule before carving: `path` gets `access`.
#[derive(Clone, Debug)]
pub struct Grant<A> {
    pub path: PathBuf,
    pub access: A,
    /// Index of the policy rule it came from.
    pub origin: usize,
}

/// A rule after carving.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule<A> {
    pub path: PathBuf,
    pub is_dir: bool,
    pub access: A,
    pub origin: usize,
    /// The root of an expanded grant: it keeps only the right to list directories (the
    /// whole tree's, a Landlock rule covering everything beneath), so that `ls` of it and of
    /// its subdirectories works while files are read through the rules on each entry.
    pub listing: bool,
}

#[derive(Debug, Default)]
pub struct Expansion<A> {
    pub rules: Vec<Rule<A>>,
    /// What a user should know about the result, for `policy show` and `--verbose`.
    pub notes: Vec<String>,
}

/// A shell wildcard for one file name (`*_key`), matched with fnmatch(3): compiling a regex
/// for it, as globset does, cost more than the rest of the plan on every launch.
struct NamePattern(CString);

impl NamePattern {
    fn new(pattern: &str) -> Option<NamePattern> {
        CString::new(pattern).ok().map(NamePattern)
    }

    fn matches(&self, name: &OsStr) -> bool {
        let Ok(name) = CString::new(name.as_bytes()) else {
            return false;
        };
        // SAFETY: two NUL-terminated strings; fnmatch only reads them.
        unsafe { libc::fnmatch(self.0.as_ptr(), name.as_ptr(), libc::FNM_PERIOD) == 0 }
    }
}

/// A carve resolved against the filesystem.
struct Target {
    /// The parent directory and a matcher for the last component, when it is a glob.
    glob: Option<(PathBuf, NamePattern)>,
    /// Exact paths: the spelled path and, when symlinks lead elsewhere, where they lead.
    exact: Vec<PathBuf>,
    hard: bool,
    label: String,
}

impl Target {
    fn resolve(carve: &Carve, fs: &dyn FsView) -> Target {
        let name = carve.path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        let parent = carve.path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
        let is_glob = name.contains(['*', '?', '[', '{']);
        let glob = if is_glob {
            NamePattern::new(&name).map(|pattern| {
                let dir = fs.canonical(&parent).unwrap_or(parent.clone());
                (dir, pattern)
            })
        } else {
            None
        };
        let mut exact = Vec::new();
        if !is_glob {
            exact.push(carve.path.clone());
            // The secret may be a symlink, or sit below one: carve where it really is too.
            let real = fs.canonical(&carve.path).or_else(|| fs.canonical(&parent).map(|dir| dir.join(&name)));
            if let Some(real) = real
                && real != carve.path
            {
                exact.push(real);
            }
        }
        Target { glob, exact, hard: carve.hard, label: carve.label.clone() }
    }

    /// Whether `path` is this target or lies inside it.
    fn covers(&self, path: &Path) -> bool {
        self.exact.iter().any(|exact| path.starts_with(exact))
            || self.glob.as_ref().is_some_and(|(dir, matcher)| {
                path.strip_prefix(dir)
                    .ok()
                    .and_then(|rest| rest.components().next())
                    .is_some_and(|first| matcher.matches(first.as_os_str()))
            })
    }

    /// Whether this target lies strictly inside `dir` (so `dir` must be expanded).
    fn is_inside(&self, dir: &Path) -> bool {
        self.exact.iter().any(|exact| exact != dir && exact.starts_with(dir))
            || self.glob.as_ref().is_some_and(|(glob_dir, _)| glob_dir.starts_with(dir))
    }
}

/// Replaces every grant that contains a carve by grants on the carve's siblings, along the
/// path down to it.
pub fn expand<A: Copy>(grants: &[Grant<A>], carves: &[Carve], fs: &dyn FsView) -> Expansion<A> {
    let targets: Vec<Target> = carves.iter().map(|carve| Target::resolve(carve, fs)).collect();
    let mut out = Expansion { rules: Vec::new(), notes: Vec::new() };
    for grant in grants {
        let Some(path) = fs.canonical(&grant.path) else {
            out.notes.push(format!("{} does not exist: no rule", grant.path.display()));
            continue;
        };
        if let Some(secret) = targets.iter().find(|target| target.hard && target.covers(&path)) {
            out.notes.push(format!("{} is inside secret {}: not granted", grant.path.display(), secret.label));
            continue;
        }
        // Exclusions that this grant is inside of do not apply to it: it is the narrower rule.
        let applicable: Vec<&Target> = targets
            .iter()
            .filter(|target| target.hard || !target.covers(&path))
            .filter(|target| target.is_inside(&path))
            .collect();
        if applicable.is_empty() {
            let is_dir = fs.kind(&path) == Kind::Dir;
            out.rules.push(Rule { path, is_dir, access: grant.access, origin: grant.origin, listing: false });
        } else {
            out.rules.push(Rule {
                path: path.clone(),
                is_dir: true,
                access: grant.access,
                origin: grant.origin,
                listing: true,
            });
            walk(&path, grant, &applicable, fs, &mut out.rules);
        }
    }
    for target in &targets {
        if let Some(missing) = target.exact.iter().find(|exact| target.hard && fs.kind(exact) == Kind::Missing) {
            out.notes.push(format!(
                "secret {} ({}) does not exist: its parent directories are granted entry by entry, so it stays unreadable if it is created later",
                missing.display(),
                target.label
            ));
        }
    }
    out.notes.dedup();
    out
}

/// Grants every entry of `dir` except the carved ones, descending into the entries that lead
/// to a carve. Which names to skip or descend into is worked out once per directory, so each
/// entry costs a name comparison (this runs on every launch, over all of /etc).
fn walk<'a, A: Copy>(dir: &Path, grant: &Grant<A>, targets: &[&'a Target], fs: &dyn FsView, rules: &mut Vec<Rule<A>>) {
    let mut skip: Vec<&'a OsStr> = Vec::new();
    let mut descend: Vec<&'a OsStr> = Vec::new();
    let mut globs: Vec<&'a NamePattern> = Vec::new();
    let mut classify = |path: &'a Path, is_glob_dir: bool| {
        let Ok(rest) = path.strip_prefix(dir) else {
            return;
        };
        let mut components = rest.components();
        match (components.next(), components.next()) {
            (Some(first), None) if !is_glob_dir => skip.push(first.as_os_str()),
            (Some(first), _) => descend.push(first.as_os_str()),
            (None, _) => {}
        }
    };
    for target in targets {
        for exact in &target.exact {
            classify(exact, false);
        }
        if let Some((glob_dir, matcher)) = &target.glob {
            if glob_dir == dir {
                globs.push(matcher);
            } else {
                classify(glob_dir, true);
            }
        }
    }
    for (name, kind) in fs.children(dir) {
        if skip.contains(&name.as_os_str()) || globs.iter().any(|pattern| pattern.matches(&name)) {
            continue;
        }
        let path = dir.join(&name);
        match kind {
            // Landlock checks the path a symlink resolves to, against that path's own rules,
            // so a symlink needs none (and a rule on it would grant its target).
            Kind::Symlink | Kind::Missing => {}
            Kind::Dir if descend.contains(&name.as_os_str()) => walk(&path, grant, targets, fs, rules),
            kind => rules.push(Rule {
                path,
                is_dir: kind == Kind::Dir,
                access: grant.access,
                origin: grant.origin,
                listing: false,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// An in-memory tree: path -> kind, plus symlink targets.
    #[derive(Default)]
    struct FakeFs {
        entries: BTreeMap<PathBuf, Kind>,
        links: BTreeMap<PathBuf, PathBuf>,
    }

    impl FakeFs {
        fn with(paths: &[&str]) -> FakeFs {
            let mut fake = FakeFs::default();
            fake.entries.insert("/".into(), Kind::Dir);
            for path in paths {
                fake.add(path);
            }
            fake
        }

        /// `a/b/` is a directory, `a/b` a file; parents are created as directories.
        fn add(&mut self, spec: &str) {
            let path = PathBuf::from(spec.trim_end_matches('/'));
            for ancestor in path.ancestors().skip(1) {
                self.entries.insert(ancestor.to_path_buf(), Kind::Dir);
            }
            self.entries.insert(path, if spec.ends_with('/') { Kind::Dir } else { Kind::File });
        }

        fn link(&mut self, from: &str, to: &str) {
            self.entries.insert(from.into(), Kind::Symlink);
            self.links.insert(from.into(), to.into());
        }
    }

    impl FsView for FakeFs {
        fn kind(&self, path: &Path) -> Kind {
            self.entries.get(path).copied().unwrap_or(Kind::Missing)
        }

        fn children(&self, dir: &Path) -> Vec<(OsString, Kind)> {
            self.entries
                .iter()
                .filter(|(path, _)| path.parent() == Some(dir) && path.as_path() != dir)
                .filter_map(|(path, kind)| path.file_name().map(|name| (OsString::from(name), *kind)))
                .collect()
        }

        fn canonical(&self, path: &Path) -> Option<PathBuf> {
            let mut real = PathBuf::from("/");
            for component in path.components().skip(1) {
                real.push(component);
                while let Some(target) = self.links.get(&real) {
                    real = target.clone();
                }
                if self.kind(&real) == Kind::Missing {
                    return None;
                }
            }
            Some(real)
        }
    }

    fn grant(path: &str) -> Grant<u8> {
        Grant { path: path.into(), access: 1, origin: 0 }
    }

    fn secret(path: &str) -> Carve {
        Carve { path: path.into(), hard: true, label: path.into() }
    }

    /// The rules that grant their access (not the listing-only roots).
    fn paths(expansion: &Expansion<u8>) -> Vec<String> {
        expansion.rules.iter().filter(|rule| !rule.listing).map(|rule| rule.path.display().to_string()).collect()
    }

    #[test]
    fn an_expanded_grant_keeps_listing_its_root() {
        let fs = FakeFs::with(&["/home/ann/.ssh/id_ed25519", "/home/ann/a.txt"]);
        let out = expand(&[grant("/home/ann"), grant("/usr")], &[secret("/home/ann/.ssh")], &fs);
        let listing: Vec<&Path> =
            out.rules.iter().filter(|rule| rule.listing).map(|rule| rule.path.as_path()).collect();
        assert_eq!(listing, [Path::new("/home/ann")], "only the expanded grant lists");
    }

    #[test]
    fn a_grant_without_secrets_stays_one_rule() {
        let fs = FakeFs::with(&["/usr/bin/sh", "/home/ann/.ssh/id_ed25519"]);
        let out = expand(&[grant("/usr")], &[secret("/home/ann/.ssh")], &fs);
        assert_eq!(paths(&out), ["/usr"]);
        assert!(out.rules[0].is_dir);
    }

    #[test]
    fn siblings_along_the_path_are_granted_and_the_secret_is_not() {
        let fs = FakeFs::with(&[
            "/home/ann/.ssh/id_ed25519",
            "/home/ann/.bashrc",
            "/home/ann/src/",
            "/home/ann/.config/gcloud/credentials.db",
            "/home/ann/.config/git/config",
        ]);
        let out = expand(&[grant("/home/ann")], &[secret("/home/ann/.ssh"), secret("/home/ann/.config/gcloud")], &fs);
        assert_eq!(paths(&out), ["/home/ann/.bashrc", "/home/ann/.config/git", "/home/ann/src"]);
        let kinds: Vec<bool> = out.rules.iter().filter(|rule| !rule.listing).map(|rule| rule.is_dir).collect();
        assert_eq!(kinds, [false, true, true]);
    }

    #[test]
    fn a_missing_secret_leaves_no_hole_for_later() {
        // ~/.config exists, ~/.config/gcloud does not: ~/.config must not be granted whole,
        // or a gcloud directory created during the run would be readable.
        let fs = FakeFs::with(&["/home/ann/.config/git/config", "/home/ann/notes.txt"]);
        let out = expand(&[grant("/home/ann")], &[secret("/home/ann/.config/gcloud")], &fs);
        assert_eq!(paths(&out), ["/home/ann/.config/git", "/home/ann/notes.txt"]);
        assert!(out.notes.iter().any(|note| note.contains("does not exist") && note.contains("gcloud")));
        // The same when the whole chain is missing: the home directory is expanded.
        let out = expand(&[grant("/home/ann")], &[secret("/home/ann/.aws/credentials")], &fs);
        assert_eq!(paths(&out), ["/home/ann/.config", "/home/ann/notes.txt"]);
    }

    #[test]
    fn a_symlinked_secret_is_carved_where_it_really_is() {
        let mut fs = FakeFs::with(&["/home/ann/dotfiles/ssh/id_ed25519", "/home/ann/dotfiles/vimrc"]);
        fs.link("/home/ann/.ssh", "/home/ann/dotfiles/ssh");
        let out = expand(&[grant("/home/ann")], &[secret("/home/ann/.ssh")], &fs);
        // The link itself gets no rule, and the directory it points to is carved too.
        assert_eq!(paths(&out), ["/home/ann/dotfiles/vimrc"]);
    }

    #[test]
    fn symlinks_in_expanded_directories_get_no_rule() {
        // A rule on a symlink would follow it; Landlock checks the target's own rules anyway.
        let mut fs = FakeFs::with(&["/home/ann/.ssh/id_ed25519", "/home/ann/a.txt"]);
        fs.link("/home/ann/keys", "/home/ann/.ssh");
        let out = expand(&[grant("/home/ann")], &[secret("/home/ann/.ssh")], &fs);
        assert_eq!(paths(&out), ["/home/ann/a.txt"]);
    }

    #[test]
    fn a_symlinked_grant_is_granted_at_its_target() {
        let mut fs = FakeFs::with(&["/usr/lib/libc.so"]);
        fs.link("/lib", "/usr/lib");
        let out = expand(&[grant("/lib")], &[], &fs);
        assert_eq!(paths(&out), ["/usr/lib"]);
    }

    #[test]
    fn grants_inside_a_secret_or_missing_are_dropped_with_a_note() {
        let fs = FakeFs::with(&["/home/ann/.ssh/id_ed25519"]);
        let out = expand(&[grant("/home/ann/.ssh/id_ed25519"), grant("/opt/none")], &[secret("/home/ann/.ssh")], &fs);
        assert!(out.rules.is_empty());
        assert!(out.notes.iter().any(|note| note.contains("inside secret")));
        assert!(out.notes.iter().any(|note| note.contains("/opt/none does not exist")));
    }

    #[test]
    fn glob_secrets_skip_matches_and_expand_their_directory() {
        let fs = FakeFs::with(&[
            "/etc/ssh/ssh_host_ed25519_key",
            "/etc/ssh/ssh_host_ed25519_key.pub",
            "/etc/ssh/sshd_config",
            "/etc/passwd",
        ]);
        let out = expand(&[grant("/etc")], &[secret("/etc/ssh/*_key")], &fs);
        assert_eq!(paths(&out), ["/etc/passwd", "/etc/ssh/ssh_host_ed25519_key.pub", "/etc/ssh/sshd_config"]);
    }

    #[test]
    fn exclusions_yield_to_narrower_grants_but_secrets_do_not() {
        let fs = FakeFs::with(&["/dev/null", "/dev/sda", "/usr/bin/sh", "/root/.ssh/id_rsa"]);
        let exclusion = Carve { path: "/dev".into(), hard: false, label: "/dev".into() };
        let out =
            expand(&[grant("/"), grant("/dev/null"), grant("/root/.ssh")], &[exclusion, secret("/root/.ssh")], &fs);
        assert_eq!(paths(&out), ["/usr", "/dev/null"]);
        assert!(out.notes.iter().any(|note| note.contains("/root/.ssh is inside secret")));
    }

    #[test]
    fn the_real_filesystem_agrees() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let home = dir.path().join("home");
        let make = |path: &Path| fs::create_dir_all(path).unwrap_or_else(|error| panic!("{error}"));
        make(&home.join(".ssh"));
        make(&home.join("src"));
        fs::write(home.join(".ssh/id_ed25519"), "key").unwrap_or_else(|error| panic!("{error}"));
        std::os::unix::fs::symlink(home.join(".ssh"), home.join("link")).unwrap_or_else(|error| panic!("{error}"));
        let home = fs::canonicalize(&home).unwrap_or_else(|error| panic!("{error}"));
        let out = expand(
            &[grant(&home.display().to_string())],
            &[secret(&home.join(".ssh").display().to_string())],
            &RealFs::default(),
        );
        assert_eq!(
            out.rules.iter().filter(|rule| !rule.listing).map(|rule| rule.path.clone()).collect::<Vec<_>>(),
            [home.join("src")]
        );
    }

    #[test]
    fn the_remembered_canonical_paths_are_what_realpath_says() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let root = dir.path();
        fs::create_dir_all(root.join("real/inner")).unwrap_or_else(|error| panic!("{error}"));
        fs::write(root.join("real/inner/file"), "x").unwrap_or_else(|error| panic!("{error}"));
        std::os::unix::fs::symlink(root.join("real"), root.join("absolute")).unwrap_or_else(|error| panic!("{error}"));
        std::os::unix::fs::symlink("real/inner", root.join("relative")).unwrap_or_else(|error| panic!("{error}"));
        std::os::unix::fs::symlink("relative", root.join("chain")).unwrap_or_else(|error| panic!("{error}"));
        std::os::unix::fs::symlink("nowhere", root.join("dangling")).unwrap_or_else(|error| panic!("{error}"));
        let fs_view = RealFs::default();
        for path in [
            "real/inner/file",
            "absolute/inner/file",
            "relative/file",
            "chain/file",
            "chain/../inner/file",
            "real/./inner",
            "dangling",
            "missing/file",
            "real/inner/file/below",
            "real/inner/file/",
            "real/inner/file/.",
            "real/inner/",
            "absolute/",
        ] {
            let path = root.join(path);
            // Twice: the second answer comes from what was remembered.
            for _ in 0..2 {
                assert_eq!(fs_view.canonical(&path), fs::canonicalize(&path).ok(), "{}", path.display());
            }
        }
    }
}
