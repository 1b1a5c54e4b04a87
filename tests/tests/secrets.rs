//! Secrets an agent below admin must not reach, run through the real `governor` binary: a
//! credential created in another user's home while the agent runs, the credential files of
//! common tools, set-id files made with a creating syscall's mode, and secret-looking
//! environment variables.

use std::{
    fs,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use governor_tests::{Scene, require, scene, stderr, stdout};

const BELOW_ADMIN: [&str; 3] = ["low", "medium", "high"];

fn must<T, E: std::fmt::Display>(result: Result<T, E>, what: &str) -> T {
    result.unwrap_or_else(|error| panic!("{what}: {error}"))
}

/// A user added to the passwd database for one test (home given, not created), removed when
/// dropped.
struct PasswdUser {
    name: String,
    uid: u32,
}

impl PasswdUser {
    fn add(home: &Path, index: usize) -> PasswdUser {
        let name = format!("govtest{}x{index}", std::process::id());
        // No group of its own (-N -g nogroup) and no home made by useradd: the test makes it.
        let added = must(
            Command::new("useradd")
                .args(["-M", "-N", "-g", "65534", "-s", "/usr/sbin/nologin", "-d"])
                .arg(home)
                .arg(&name)
                .output(),
            "useradd",
        );
        assert!(added.status.success(), "useradd {name}: {}", stderr(&added));
        let id = must(Command::new("id").args(["-u", &name]).output(), "id");
        let uid = must(stdout(&id).trim().parse::<u32>(), "uid of the new user");
        PasswdUser { name, uid }
    }
}

impl Drop for PasswdUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).output();
    }
}

/// Waits for `path` to appear (the agent saying it has started).
fn wait_for(path: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        assert!(Instant::now() < deadline, "{} did not appear", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Writes `text` to `path` (making its parents), owned by `uid`, mode 0644, its new parent
/// directories 0755, as that user's tools would.
fn write_as(uid: u32, home: &Path, path: &Path, text: &str) {
    let parent = path.parent().unwrap_or(home);
    must(fs::create_dir_all(parent), "mkdir");
    for dir in parent.ancestors().take_while(|dir| dir.starts_with(home) && *dir != home) {
        must(std::os::unix::fs::chown(dir, Some(uid), None), "chown");
        must(fs::set_permissions(dir, fs::Permissions::from_mode(0o755)), "chmod");
    }
    must(fs::write(path, text), "write");
    must(std::os::unix::fs::chown(path, Some(uid), None), "chown");
    must(fs::set_permissions(path, fs::Permissions::from_mode(0o644)), "chmod");
}

#[test]
fn a_secret_created_later_in_another_users_home_stays_unreadable() {
    require!("a_secret_created_later_in_another_users_home_stays_unreadable");
    let scene = scene!();
    // Two other users' homes, 0755 like useradd -m makes them. At launch `bare` holds only an
    // ordinary file (no ~/.aws, ~/.kube or ~/.config at all), `aws` also an empty ~/.aws.
    let mut homes = Vec::new();
    let mut users = Vec::new();
    for (index, name) in ["bare", "aws"].into_iter().enumerate() {
        let home = scene.root.join(name);
        must(fs::create_dir(&home), "mkdir");
        let user = PasswdUser::add(&home, index);
        must(std::os::unix::fs::chown(&home, Some(user.uid), None), "chown");
        must(fs::set_permissions(&home, fs::Permissions::from_mode(0o755)), "chmod");
        write_as(user.uid, &home, &home.join("projects/readme"), "public\n");
        homes.push(home);
        users.push(user);
    }
    let aws_dir = homes[1].join(".aws");
    must(fs::create_dir(&aws_dir), "mkdir");
    must(std::os::unix::fs::chown(&aws_dir, Some(users[1].uid), None), "chown");

    let later: Vec<(u32, &Path, PathBuf)> = vec![
        (users[0].uid, &homes[0], homes[0].join(".aws/credentials")),
        (users[0].uid, &homes[0], homes[0].join(".kube/config")),
        (users[0].uid, &homes[0], homes[0].join(".config/gh/hosts.yml")),
        (users[1].uid, &homes[1], homes[1].join(".aws/credentials")),
    ];
    let started = scene.workspace.join("started");
    let ready = scene.workspace.join("ready");
    let mut script = format!(
        "touch {started}; while [ ! -e {ready} ]; do sleep 0.01; done; {attempt} read {readme}",
        started = started.display(),
        ready = ready.display(),
        attempt = scene.attempt.display(),
        readme = homes[0].join("projects/readme").display(),
    );
    for (_, _, path) in &later {
        script.push_str(&format!("; {} read {}", scene.attempt.display(), path.display()));
    }
    let child = must(
        Command::new(governor_tests::governor_bin())
            .args(["run", "--trust", "high", "--workspace"])
            .arg(&scene.workspace)
            .args(["--", "sh", "-c", &script])
            .env("HOME", &scene.home)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn(),
        "governor",
    );
    wait_for(&started, Duration::from_secs(20));
    for (uid, home, path) in &later {
        write_as(*uid, home, path, "secret\n");
    }
    must(fs::write(&ready, ""), "write");
    let output = must(child.wait_with_output(), "governor");
    let lines: Vec<String> = stdout(&output).lines().map(str::to_owned).collect();
    // The rest of that home stays readable: the carve-out is exact.
    assert_eq!(lines, ["ok", "EACCES", "EACCES", "EACCES", "EACCES"], "{later:?}; stderr: {}", stderr(&output));
}

/// Every creating syscall with its mode, as `attempt create` spells them.
const CREATING: [&str; 8] = ["open", "openat", "openat2", "creat", "mknod", "mknodat", "mkdir", "mkdirat"];

/// Runs `attempt create SYSCALL PATH MODE` for every syscall and mode in one agent of ring
/// `trust`; returns (syscall, mode, outcome) and where each path was.
fn create_all(scene: &Scene, trust: &str, modes: &[&str]) -> Vec<(String, String, String, PathBuf)> {
    let dir = scene.workspace.join(trust);
    must(fs::create_dir(&dir), "mkdir");
    let mut cases = Vec::new();
    let mut script = String::new();
    for syscall in CREATING {
        for mode in modes {
            let path = dir.join(format!("{syscall}-{mode}"));
            script.push_str(&format!("{} create {syscall} {} {mode}; ", scene.attempt.display(), path.display()));
            cases.push((syscall.to_owned(), (*mode).to_owned(), path));
        }
    }
    script.push_str("true");
    // Without the probes: every refused create is an event (kind fs, or open), and the
    // engine would rightly suspend an agent making two dozen of them in low and medium.
    // What is tested is seccomp, which needs no probes.
    let extra: &[&str] = if trust == "admin" { &[] } else { &["--probes", "off", "--best-effort"] };
    let output = scene.governor(trust, extra, ["sh", "-c", &script]);
    let outcomes: Vec<String> = stdout(&output).lines().map(str::to_owned).collect();
    assert_eq!(outcomes.len(), cases.len(), "ring {trust}: {outcomes:?}; stderr: {}", stderr(&output));
    cases.into_iter().zip(outcomes).map(|((syscall, mode, path), outcome)| (syscall, mode, outcome, path)).collect()
}

#[test]
fn no_creating_syscall_makes_a_set_id_file_below_admin() {
    require!("no_creating_syscall_makes_a_set_id_file_below_admin");
    let scene = scene!();
    for trust in BELOW_ADMIN {
        for (syscall, mode, outcome, path) in create_all(&scene, trust, &["4755", "2755", "6755", "0755"]) {
            let expected = match (syscall.as_str(), mode.as_str()) {
                // openat2 hides its mode from seccomp: refused whatever the mode, so that
                // callers fall back to openat.
                ("openat2", _) => "ENOSYS",
                (_, "0755") => "ok",
                _ => "EPERM",
            };
            assert_eq!(outcome, expected, "{syscall} with mode {mode} in ring {trust}");
            match fs::symlink_metadata(&path) {
                Ok(meta) => {
                    assert_eq!(expected, "ok", "{syscall} {mode} in ring {trust} left {}", path.display());
                    assert_eq!(meta.mode() & 0o7777, 0o755, "{syscall} {mode} in ring {trust}");
                }
                Err(_) => assert_ne!(expected, "ok", "{syscall} {mode} in ring {trust} made nothing"),
            }
        }
    }
    // admin is not restricted: the same calls work there, so the refusals above are the ring's.
    for (syscall, mode, outcome, path) in create_all(&scene, "admin", &["4755", "0755"]) {
        assert_eq!(outcome, "ok", "{syscall} with mode {mode} in ring admin");
        let meta = must(fs::symlink_metadata(&path), "stat");
        // mkdir(2) drops S_ISUID and S_ISGID from its mode by itself (vfs_mkdir keeps
        // S_IRWXUGO | S_ISVTX), so only the files come out set-id.
        let expected = if mode == "4755" && !syscall.starts_with("mkdir") { 0o4755 } else { 0o755 };
        assert_eq!(meta.mode() & 0o7777, expected, "{syscall} {mode} in ring admin");
    }
}

/// Credential files of common tools, as they sit in a home (directories listed whole get a
/// file inside).
const CREDENTIALS: [&str; 29] = [
    ".config/git/credentials",
    ".git-credentials",
    ".cargo/credentials",
    ".cargo/credentials.toml",
    ".gem/credentials",
    ".my.cnf",
    ".mylogin.cnf",
    ".npmrc",
    ".pypirc",
    ".netrc",
    ".pgpass",
    ".vault-token",
    ".docker/config.json",
    ".config/containers/auth.json",
    ".kube/config",
    ".config/gh/hosts.yml",
    ".config/hub",
    ".config/gcloud/credentials.db",
    ".azure/msal_token_cache.json",
    ".terraform.d/credentials.tfrc.json",
    ".password-store/github.gpg",
    ".local/share/keyrings/login.keyring",
    ".config/rclone/rclone.conf",
    ".s3cfg",
    ".boto",
    ".databrickscfg",
    ".oci/config",
    ".cache/huggingface/token",
    ".codex/auth.json",
];

/// What ordinary tools read next to them, which must stay readable.
const NEIGHBOURS: [&str; 7] = [
    ".cargo/config.toml",
    ".cargo/registry/index/entry",
    ".config/git/config",
    ".gem/specs/index",
    ".terraform.d/plugins/provider",
    ".local/share/applications/app.desktop",
    ".cache/pip/http/entry",
];

#[test]
fn credential_files_of_common_tools_are_unreadable_below_admin() {
    require!("credential_files_of_common_tools_are_unreadable_below_admin");
    let scene = scene!();
    let reads = |trust: &str| {
        let script: Vec<String> = CREDENTIALS
            .iter()
            .chain(&NEIGHBOURS)
            .map(|relative| format!("{} read {}", scene.attempt.display(), scene.home.join(relative).display()))
            .collect();
        // Without the probes: medium's engine would rightly suspend an agent making this
        // many refused opens (repeated-kernel-denials); Landlock alone is under test here.
        let output =
            scene.governor(trust, &["--verbose", "--probes", "off", "--best-effort"], ["sh", "-c", &script.join("; ")]);
        let lines: Vec<String> = stdout(&output).lines().map(str::to_owned).collect();
        assert_eq!(lines.len(), CREDENTIALS.len() + NEIGHBOURS.len(), "ring {trust}: {}", stderr(&output));
        (lines, stderr(&output))
    };
    let rules_of = |log: &str| {
        log.lines()
            .find_map(|line| line.split_once(" path rules").and_then(|(head, _)| head.rsplit('(').next()))
            .and_then(|count| count.parse::<usize>().ok())
    };
    // What each ring carves before the files exist: the host's other homes (every user's
    // in the passwd database, root's among them) and /etc, which change with the machine.
    let before: Vec<Option<usize>> = ["medium", "high"].iter().map(|trust| rules_of(&reads(trust).1)).collect();
    for relative in CREDENTIALS.iter().chain(&NEIGHBOURS) {
        let path = scene.home.join(relative);
        must(fs::create_dir_all(path.parent().unwrap_or(&scene.home)), "mkdir");
        must(fs::write(&path, "token = secret\n"), "write");
    }
    for (trust, before) in ["medium", "high"].into_iter().zip(before) {
        let (lines, log) = reads(trust);
        for (relative, outcome) in CREDENTIALS.iter().zip(&lines) {
            assert_eq!(outcome, "EACCES", "~/{relative} in ring {trust}");
        }
        for (relative, outcome) in NEIGHBOURS.iter().zip(&lines[CREDENTIALS.len()..]) {
            assert_eq!(outcome, "ok", "~/{relative} in ring {trust}");
        }
        // Carving them stays well within what a launch can afford: a few rules each, not
        // a walk of everything beside them.
        let rules = rules_of(&log);
        let added = rules.zip(before).map(|(rules, before)| rules.saturating_sub(before));
        assert!(added.is_some_and(|added| added < 100), "ring {trust}: {rules:?} path rules, {before:?} before");
    }
    // admin reads them all: the refusals above are the rings'.
    let (lines, _) = reads("admin");
    assert!(lines.iter().all(|outcome| outcome == "ok"), "{lines:?}");
}

/// Variables set for the env tests: (name, value, withheld below admin).
const ENV: [(&str, &str, bool); 8] = [
    ("GITHUB_TOKEN", "ghp_value1", true),
    ("OPENAI_API_KEY", "sk-value2", true),
    ("AWS_SECRET_ACCESS_KEY", "value3", true),
    ("AWS_SESSION_TOKEN", "value4", true),
    ("PGPASSWORD", "value5", true),
    ("PIP_FIND_LINKS", "/opt/wheels", false),
    ("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt", false),
    ("GITHUB_TOKEN_FILE", "/run/secrets/token", false),
];

/// `governor EXTRA... run --trust TRUST ... -- sh -c 'attempt env NAME; ...'` with [`ENV`] set.
fn env_run(scene: &Scene, trust: &str, extra: &[&str]) -> (Vec<String>, String) {
    let script: Vec<String> =
        ENV.iter().map(|(name, _, _)| format!("{} env {name}", scene.attempt.display())).collect();
    let output = must(
        Command::new(governor_tests::governor_bin())
            .args(["run", "--trust", trust, "--workspace"])
            .arg(&scene.workspace)
            .args(extra)
            .args(["--", "sh", "-c", &script.join("; ")])
            .env("HOME", &scene.home)
            .envs(ENV.iter().map(|(name, value, _)| (name, value)))
            .output(),
        "governor",
    );
    (stdout(&output).lines().map(str::to_owned).collect(), stderr(&output))
}

#[test]
fn secret_looking_environment_variables_are_withheld_below_admin() {
    require!("secret_looking_environment_variables_are_withheld_below_admin");
    let scene = scene!();
    for trust in BELOW_ADMIN {
        let (lines, log) = env_run(&scene, trust, &["--verbose"]);
        assert_eq!(lines.len(), ENV.len(), "ring {trust}: {log}");
        for ((name, value, secret), got) in ENV.iter().zip(&lines) {
            assert_eq!(got, if *secret { "unset" } else { value }, "{name} in ring {trust}");
            assert!(!*secret || !log.contains(value), "ring {trust} printed the value of {name}: {log}");
        }
    }
    // --verbose names what was withheld (among the other variables of this environment).
    let (_, log) = env_run(&scene, "medium", &["--verbose"]);
    let named: Vec<&str> = log
        .lines()
        .find_map(|line| line.strip_prefix("governor: environment withheld"))
        .and_then(|line| line.split_once(": "))
        .map(|(_, names)| names.split_whitespace().collect())
        .unwrap_or_default();
    for (name, _, secret) in ENV {
        assert_eq!(named.contains(&name), secret, "{name} in {named:?}");
    }
    let (lines, _) = env_run(&scene, "admin", &[]);
    assert_eq!(lines, ENV.iter().map(|(_, value, _)| (*value).to_owned()).collect::<Vec<_>>(), "admin gets all");

    // A --policy overlay passes a named one through; the others stay withheld.
    let overlay = scene.root.join("pass.toml");
    must(
        fs::write(&overlay, "[[env.pass]]\nnames = [\"GITHUB_TOKEN\"]\nreason = \"the agent opens pull requests\"\n"),
        "write",
    );
    let overlay = overlay.to_string_lossy().into_owned();
    let (lines, log) = env_run(&scene, "medium", &["--policy", &overlay]);
    assert_eq!(lines.first().map(String::as_str), Some("ghp_value1"), "{log}");
    assert_eq!(lines.get(1).map(String::as_str), Some("unset"), "{log}");

    // policy show lists the names of its own environment that a run would withhold.
    let shown = must(
        Command::new(governor_tests::governor_bin())
            .args(["policy", "show", "--trust", "medium", "--workspace"])
            .arg(&scene.workspace)
            .env("HOME", &scene.home)
            .envs(ENV.iter().map(|(name, value, _)| (name, value)))
            .output(),
        "policy show",
    );
    let text = stdout(&shown);
    let section = text.split("environment withheld").nth(1).unwrap_or_default();
    let section = section.split("\n\n").next().unwrap_or_default();
    for (name, value, secret) in ENV {
        assert_eq!(
            section.lines().any(|line| line.trim_start().starts_with(&format!("{name} "))),
            secret,
            "{name}: {section}"
        );
        assert!(!text.contains(value) || !secret, "policy show printed the value of {name}");
    }
}
