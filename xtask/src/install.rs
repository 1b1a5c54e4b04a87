//! `cargo xtask install [--prefix DIR] [--destdir DIR]`: the release binary into
//! `PREFIX/bin`, the systemd unit (its ExecStart naming that binary) into
//! `/etc/systemd/system`, and the policies into `/etc/governor` (`rings/` with the rings,
//! the secrets and the engine's `rules.toml`, and `governor.toml` for the daemon). Files an
//! operator may have edited (the policies, governor.toml) are kept when they exist; the
//! binary and the unit are replaced. `--destdir` stages everything under another root.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

/// The daemon's settings as installed: every setting, at its default, explained.
const CONFIG: &str = r#"# governor daemon settings (governor daemon --config FILE; this file is the default).

# A group whose members may control agents through the daemon's socket, besides root.
# control_group = "governor"

# When an agent's supervisor is gone (the daemon was killed) for longer than loss_grace:
# "keep" lets it run on, confined by Landlock and seccomp, until a daemon watches it again;
# "kill" kills it when the next daemon starts.
on_supervisor_loss = "keep"
loss_grace = "30s"

# Audit store retention: rows older than this, and the oldest events while the store is
# larger than this, are pruned at start and every ten minutes (checkpoints keep the hash
# chains verifiable). Unset: nothing is pruned.
# audit_max_age = "90d"
# audit_max_size = "10GiB"
"#;

pub struct Layout {
    pub binary: PathBuf,
    pub unit: PathBuf,
    pub rings: PathBuf,
    pub config: PathBuf,
}

/// Installs from the workspace at `root`; `binary` is the built governor.
pub fn install(root: &Path, binary: &Path, prefix: &Path, destdir: &Path) -> Result<Layout> {
    if !prefix.is_absolute() {
        bail!("--prefix {} must be an absolute path", prefix.display());
    }
    let staged = |path: &Path| destdir.join(path.strip_prefix("/").unwrap_or(path));
    let installed_binary = prefix.join("bin/governor");
    let layout = Layout {
        binary: staged(&installed_binary),
        unit: staged(Path::new("/etc/systemd/system/governor.service")),
        rings: staged(Path::new("/etc/governor/rings")),
        config: staged(Path::new("/etc/governor/governor.toml")),
    };
    for dir in [&layout.binary, &layout.unit, &layout.config].iter().filter_map(|path| path.parent()) {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::create_dir_all(&layout.rings).with_context(|| format!("creating {}", layout.rings.display()))?;

    // Replaced whole (a new file, then renamed): a running daemon keeps its old binary.
    let temporary = layout.binary.with_extension("new");
    fs::copy(binary, &temporary).with_context(|| format!("copying {}", binary.display()))?;
    fs::set_permissions(&temporary, fs::Permissions::from_mode(0o755))?;
    fs::rename(&temporary, &layout.binary)?;
    say("installed", &layout.binary);

    let unit = fs::read_to_string(root.join("dist/governor.service")).context("reading dist/governor.service")?;
    let unit = unit.replace("ExecStart=/usr/local/bin/governor", &format!("ExecStart={}", installed_binary.display()));
    fs::write(&layout.unit, unit)?;
    say("installed", &layout.unit);

    let mut policies: Vec<(PathBuf, PathBuf)> = Vec::new();
    for entry in fs::read_dir(root.join("policies/rings")).context("reading policies/rings")? {
        let entry = entry?;
        policies.push((entry.path(), layout.rings.join(entry.file_name())));
    }
    policies.push((root.join("policies/rules.toml"), layout.rings.join("rules.toml")));
    policies.sort();
    for (from, to) in policies {
        if to.exists() {
            say("kept (exists)", &to);
            continue;
        }
        fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
        fs::set_permissions(&to, fs::Permissions::from_mode(0o644))?;
        say("installed", &to);
    }
    if layout.config.exists() {
        say("kept (exists)", &layout.config);
    } else {
        fs::write(&layout.config, CONFIG)?;
        say("installed", &layout.config);
    }
    Ok(layout)
}

/// `cargo xtask uninstall`: the binary and the unit go, and the daemon's pinned links
/// (`/sys/fs/bpf/governor`: removing a pin detaches its program once no daemon holds it),
/// which would otherwise go on enforcing an agent's rules after governor is gone. The
/// policies, the settings and the audit store stay unless `purge`.
pub fn uninstall(prefix: &Path, destdir: &Path, purge: bool) -> Result<()> {
    let staged = |path: &Path| destdir.join(path.strip_prefix("/").unwrap_or(path));
    let mut gone =
        vec![staged(&prefix.join("bin/governor")), staged(Path::new("/etc/systemd/system/governor.service"))];
    let mut dirs = vec![staged(Path::new("/sys/fs/bpf/governor"))];
    if purge {
        dirs.push(staged(Path::new("/etc/governor")));
        dirs.push(staged(Path::new("/var/lib/governor")));
    }
    for file in gone.drain(..) {
        match fs::remove_file(&file) {
            Ok(()) => say("removed", &file),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error).with_context(|| format!("removing {}", file.display())),
        }
    }
    for dir in dirs {
        match fs::remove_dir_all(&dir) {
            Ok(()) => say("removed", &dir),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error).with_context(|| format!("removing {}", dir.display())),
        }
    }
    Ok(())
}

fn say(what: &str, path: &Path) {
    println!("xtask: {what} {}", path.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    #[test]
    fn install_lays_out_binary_unit_and_policies_and_keeps_edited_policies() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("governor-install-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let binary = dir.join("built-governor");
        fs::write(&binary, "#!/bin/sh\n")?;
        let destdir = dir.join("root");
        let layout = install(&workspace(), &binary, Path::new("/opt/governor"), &destdir)?;
        assert_eq!(layout.binary, destdir.join("opt/governor/bin/governor"));
        assert_eq!(fs::metadata(&layout.binary)?.permissions().mode() & 0o777, 0o755);
        let unit = fs::read_to_string(&layout.unit)?;
        assert!(unit.contains("\nExecStart=/opt/governor/bin/governor daemon\n"), "{unit}");
        assert!(unit.contains("\nType=notify\n"));
        for ring in ["low.toml", "medium.toml", "high.toml", "admin.toml", "secrets.toml", "rules.toml"] {
            assert!(layout.rings.join(ring).is_file(), "{ring}");
        }
        assert!(fs::read_to_string(&layout.config)?.contains("on_supervisor_loss = \"keep\""));
        // An operator's edit survives a second install.
        fs::write(layout.rings.join("rules.toml"), "# mine\n")?;
        install(&workspace(), &binary, Path::new("/opt/governor"), &destdir)?;
        assert_eq!(fs::read_to_string(layout.rings.join("rules.toml"))?, "# mine\n");
        assert!(install(&workspace(), &binary, Path::new("relative"), &destdir).is_err());
        // Uninstall: binary, unit and pins go; the policies stay unless purged.
        let pins = destdir.join("sys/fs/bpf/governor/agents/a");
        fs::create_dir_all(&pins)?;
        fs::write(pins.join("1-connect4"), "")?;
        uninstall(Path::new("/opt/governor"), &destdir, false)?;
        assert!(!layout.binary.exists() && !layout.unit.exists());
        assert!(!destdir.join("sys/fs/bpf/governor").exists());
        assert!(layout.rings.join("rules.toml").exists());
        uninstall(Path::new("/opt/governor"), &destdir, true)?;
        assert!(!layout.rings.exists());
        fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
