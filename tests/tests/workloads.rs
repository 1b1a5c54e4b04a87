//! The workload suite: the work agents really do, in the ring meant for it, with the shipped
//! rings and rules and the machine's own `PATH` and environment (`PIP_FIND_LINKS`,
//! `PIP_CERT`, toolchain shims under `$HOME`, ...). Only `HOME` is the test's: a home with a
//! secret in it and a toolchain of its own (a pyenv-style shim and a rustup toolchain), found
//! through `PATH` like a user's. Each step asserts that it succeeded, that the agent was never
//! suspended (no incident on stderr or in the store, its cgroup never frozen) and that the
//! secret stayed unreadable. medium reaches the package registries (Python, npm, crates.io);
//! low is offline. A tool the machine lacks is installed by `cargo xtask setup`, not skipped.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use governor_tests::{Scene, cgroup2_root, governor_bin, require, scene, stderr, stdout};
use serde_json::Value;

fn must<T, E: std::fmt::Display>(result: Result<T, E>, what: &str) -> T {
    result.unwrap_or_else(|error| panic!("{what}: {error}"))
}

/// The scene plus what the workloads need in the test home.
struct Workbench {
    scene: Scene,
    /// `PATH` as the agent is started with it: the test home's toolchains first, then the
    /// machine's own.
    path: String,
    store: PathBuf,
}

impl Workbench {
    fn new() -> Workbench {
        let scene = scene!();
        let home = &scene.home;
        // A toolchain manager's shim, as pyenv writes them: a bash script through env.
        let shims = home.join(".pyenv/shims");
        must(fs::create_dir_all(&shims), "mkdir shims");
        let shim = shims.join("python3");
        must(
            fs::write(&shim, "#!/usr/bin/env bash\nexport GOVERNOR_TEST_SHIM=1\nexec /usr/bin/python3 \"$@\"\n"),
            "shim",
        );
        must(fs::set_permissions(&shim, fs::Permissions::from_mode(0o755)), "chmod shim");
        install_rust_toolchain(home);
        let machine = std::env::var("PATH").unwrap_or_default();
        let path = format!("{}:{}:{machine}", shims.display(), home.join(".cargo/bin").display());
        let store = scene.root.join("audit.db");
        Workbench { scene, path, store }
    }

    /// Runs `script` under bash in ring `trust`, standalone, with the machine's environment.
    fn run(&self, trust: &str, id: &str, script: &str) -> Output {
        self.run_with(trust, id, &[], script)
    }

    /// [`Workbench::run`] with more options for `governor run`.
    fn run_with(&self, trust: &str, id: &str, options: &[&str], script: &str) -> Output {
        // Every step ends by trying the test home's SSH key once.
        let secret = self.scene.home.join(".ssh/id_ed25519");
        let check = format!("if cat '{}' >/dev/null 2>&1; then echo 'SECRET WAS READ'; exit 99; fi", secret.display());
        let script = format!("set -e\n{script}\n{check}\n");
        let mut command = Command::new(governor_bin());
        // The machine's environment, not what cargo and rustup added to run this test
        // (RUSTUP_HOME and RUSTUP_TOOLCHAIN would send the agent's rustup to the machine's
        // own toolchain, CARGO_* and LD_LIBRARY_PATH describe this test crate).
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("CARGO") || ["RUSTUP_HOME", "RUSTUP_TOOLCHAIN", "LD_LIBRARY_PATH"].contains(&&*name) {
                command.env_remove(&*name);
            }
        }
        let mut child = command
            .arg("--audit-db")
            .arg(&self.store)
            .args(["run", "--standalone", "--trust", trust, "--agent-id", id, "--workspace"])
            .arg(&self.scene.workspace)
            .args(options)
            .args(["--", "bash", "-c", &script])
            .env("HOME", &self.scene.home)
            .env("PATH", &self.path)
            .env_remove("SUDO_UID")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("starting governor: {error}"));
        // Watch the agent's cgroup while it runs: a freeze is a failure even if it were
        // resumed or the rule's action changed.
        let events = cgroup2_root().join("governor").join(id).join("cgroup.events");
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut frozen = false;
        while must(child.try_wait(), "wait").is_none() {
            frozen |= fs::read_to_string(&events).is_ok_and(|text| text.contains("frozen 1"));
            if frozen || Instant::now() > deadline {
                let _ = Command::new(governor_bin()).args(["--audit-db"]).arg(&self.store).args(["kill", id]).output();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let output = must(child.wait_with_output(), "governor output");
        assert!(!frozen, "agent {id} was frozen:\n{}", stderr(&output));
        output
    }

    /// Asserts success, no suspension and no incident (stderr and the store), an unread secret.
    fn assert_clean(&self, id: &str, output: &Output) {
        let (out, err) = (stdout(output), stderr(output));
        assert_eq!(output.status.code(), Some(0), "{id} failed\nstdout:\n{out}\nstderr:\n{err}");
        assert!(!out.contains("SECRET WAS READ"), "{id} read the secret");
        assert!(!err.contains("suspended by rule") && !err.contains("\"kind\":\"incident\""), "{id}: {err}");
        let incidents = must(
            Command::new(governor_bin())
                .arg("--audit-db")
                .arg(&self.store)
                .args(["audit", "incidents", "--agent", id, "--format", "jsonl"])
                .output(),
            "audit incidents",
        );
        assert_eq!(incidents.status.code(), Some(0), "{}", stderr(&incidents));
        let rows: Vec<Value> = stdout(&incidents).lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
        assert!(rows.is_empty(), "{id} raised incidents: {rows:?}");
        // The store saw the secret refused (the check at the end of every step).
        let denied = must(
            Command::new(governor_bin())
                .arg("--audit-db")
                .arg(&self.store)
                .args(["audit", "query", "--agent", id, "--path", "**/.ssh/id_ed25519", "--format", "jsonl"])
                .output(),
            "audit query",
        );
        assert!(stdout(&denied).contains("EACCES"), "no refused read of the secret recorded for {id}");
    }

    fn step(&self, trust: &str, name: &str, script: &str) -> Output {
        let id = format!("wl-{trust}-{name}-{}", std::process::id());
        let output = self.run(trust, &id, script);
        self.assert_clean(&id, &output);
        output
    }
}

/// A rustup toolchain in `home` (`~/.rustup`, `~/.cargo/bin`), hard-linked from the machine's
/// active one: the programs and libraries only, so it costs a hundred links.
fn install_rust_toolchain(home: &Path) {
    let sysroot = Command::new("rustc").args(["--print", "sysroot"]).output();
    let sysroot = PathBuf::from(stdout(&must(sysroot, "rustc --print sysroot (is Rust installed?)")).trim());
    let name = sysroot.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let toolchain = home.join(".rustup/toolchains").join(&name);
    must(fs::create_dir_all(&toolchain), "mkdir toolchain");
    for part in ["bin", "lib", "libexec"] {
        if !sysroot.join(part).exists() {
            continue;
        }
        // Hard links where the test home shares the toolchain's filesystem, copies elsewhere.
        let linked = Command::new("cp").arg("-al").arg(sysroot.join(part)).arg(&toolchain).status();
        if !linked.is_ok_and(|status| status.success()) {
            let copied = must(Command::new("cp").arg("-a").arg(sysroot.join(part)).arg(&toolchain).status(), "cp");
            assert!(copied.success(), "copying {}", sysroot.join(part).display());
        }
    }
    must(
        fs::write(
            home.join(".rustup/settings.toml"),
            format!("version = \"12\"\ndefault_toolchain = \"{name}\"\nprofile = \"minimal\"\n"),
        ),
        "settings.toml",
    );
    let bin = home.join(".cargo/bin");
    must(fs::create_dir_all(&bin), "mkdir ~/.cargo/bin");
    let rustup = Command::new("sh").args(["-c", "command -v rustup"]).output();
    let rustup = PathBuf::from(stdout(&must(rustup, "rustup")).trim());
    assert!(rustup.is_file(), "no rustup on PATH");
    if fs::hard_link(&rustup, bin.join("rustup")).is_err() {
        must(fs::copy(&rustup, bin.join("rustup")), "copy rustup");
    }
    for proxy in ["cargo", "rustc"] {
        must(std::os::unix::fs::symlink("rustup", bin.join(proxy)), "proxy");
    }
}

/// A tiny pure-Python wheel, written with the standard library's zipfile.
fn make_wheel(dir: &Path) -> PathBuf {
    let wheel = dir.join("govtiny-0.1-py3-none-any.whl");
    let script = r#"
import sys, zipfile, hashlib, base64
files = {
    "govtiny/__init__.py": "VALUE = 42\n",
    "govtiny-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: govtiny\nVersion: 0.1\n",
    "govtiny-0.1.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: governor-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = []
with zipfile.ZipFile(sys.argv[1], "w") as wheel:
    for name, text in files.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
        wheel.writestr(name, data)
    record.append("govtiny-0.1.dist-info/RECORD,,")
    wheel.writestr("govtiny-0.1.dist-info/RECORD", "\n".join(record) + "\n")
"#;
    let status = must(Command::new("/usr/bin/python3").args(["-c", script]).arg(&wheel).status(), "python3");
    assert!(status.success(), "making the wheel");
    wheel
}

#[test]
fn medium_installs_from_the_python_registry_with_the_cache_on() {
    require!("medium_installs_from_the_python_registry_with_the_cache_on");
    let bench = Workbench::new();
    let out = bench.step(
        "medium",
        "pip",
        r#"python3 -m venv v
v/bin/pip install six
v/bin/python -c 'import six; print("six", six.__version__)'
# pip's cache is on, in the agent's own cache directory.
case "$(v/bin/pip cache dir)" in "$XDG_CACHE_HOME"/*) ;; *) echo "cache elsewhere: $(v/bin/pip cache dir)"; exit 3;; esac
# (This machine's registry answers are not cacheable, so pip stores nothing even unconfined;
# the cache must still be a place it may write.)
mkdir -p "$(v/bin/pip cache dir)" && touch "$(v/bin/pip cache dir)/written-by-the-agent"
v/bin/pip download -q -d dl six"#,
    );
    assert!(stdout(&out).contains("six 1."), "{}", stdout(&out));
}

#[test]
fn medium_runs_pytest() {
    require!("medium_runs_pytest");
    let bench = Workbench::new();
    fs::write(bench.scene.workspace.join("test_sum.py"), "def test_sum():\n    assert sum([1, 2]) == 3\n")
        .unwrap_or_else(|error| panic!("{error}"));
    let out = bench.step("medium", "pytest", "pytest -q -p no:cacheprovider test_sum.py\npytest -q test_sum.py");
    assert!(stdout(&out).contains("1 passed"), "{}", stdout(&out));
}

#[test]
fn medium_installs_from_the_npm_registry() {
    require!("medium_installs_from_the_npm_registry");
    let bench = Workbench::new();
    let out = bench.step(
        "medium",
        "npm",
        r#"npm init -y >/dev/null
npm install --no-audit --no-fund is-number
node -e 'console.log("is-number", require("is-number")(5))'"#,
    );
    assert!(stdout(&out).contains("is-number true"), "{}", stdout(&out));
}

#[test]
fn medium_builds_a_crate_with_a_registry_dependency() {
    require!("medium_builds_a_crate_with_a_registry_dependency");
    let bench = Workbench::new();
    let out = bench.step(
        "medium",
        "cargo",
        r#"case "$(command -v cargo)" in "$HOME"/.cargo/bin/cargo) ;; *) echo "cargo from $(command -v cargo)"; exit 3;; esac
cargo new -q --vcs none hello
cd hello
printf 'itoa = "1"\n' >> Cargo.toml
printf 'fn main() { println!("itoa {}", itoa::Buffer::new().format(42)); }\n' > src/main.rs
cargo build -q
./target/debug/hello"#,
    );
    assert!(stdout(&out).contains("itoa 42"), "{}", stdout(&out));
}

const GIT: &str = r#"git init -q repo
cd repo
echo hello > a.txt
git add a.txt
git -c user.name=agent -c user.email=agent@example.com commit -q -m first
git log --oneline | grep -q first && echo git-ok"#;

const BUILD: &str = r#"printf '#include <stdio.h>\nint main(void) { puts("built-ok"); return 0; }\n' > hello.c
printf 'hello: hello.c\n\tgcc -O2 -o hello hello.c\n' > Makefile
make -s
./hello"#;

#[test]
fn medium_runs_git_gcc_and_make() {
    require!("medium_runs_git_gcc_and_make");
    let bench = Workbench::new();
    assert!(stdout(&bench.step("medium", "git", GIT)).contains("git-ok"));
    assert!(stdout(&bench.step("medium", "make", BUILD)).contains("built-ok"));
}

#[test]
fn medium_finds_a_toolchain_under_home_through_path() {
    require!("medium_finds_a_toolchain_under_home_through_path");
    let bench = Workbench::new();
    let out = bench.step(
        "medium",
        "shim",
        r#"command -v python3
python3 -c 'import os; print("through the shim:", os.environ.get("GOVERNOR_TEST_SHIM"))'
rustc --version"#,
    );
    let text = stdout(&out);
    assert!(text.starts_with(&*bench.scene.home.join(".pyenv/shims/python3").to_string_lossy()), "{text}");
    assert!(text.contains("through the shim: 1") && text.contains("rustc 1."), "{text}");
}

#[test]
fn medium_lists_etc_and_home_but_not_the_secrets() {
    require!("medium_lists_etc_and_home_but_not_the_secrets");
    let bench = Workbench::new();
    let out = bench.step(
        "medium",
        "ls",
        r#"ls /etc | grep -qx passwd && echo etc-listed
ls -a ~ | grep -qx notes.txt && echo home-listed
cat ~/notes.txt
if ls ~/.ssh 2>/dev/null | grep -q id_ed25519; then echo 'SECRET NAMES LISTED'; fi"#,
    );
    let text = stdout(&out);
    assert!(text.contains("etc-listed") && text.contains("home-listed") && text.contains("hello from home"), "{text}");
    assert!(!text.contains("SECRET NAMES LISTED"), "{text}");
}

#[test]
fn low_installs_a_wheel_from_the_workspace_offline() {
    require!("low_installs_a_wheel_from_the_workspace_offline");
    let bench = Workbench::new();
    let wheel = make_wheel(&bench.scene.workspace);
    let script = format!(
        r#"python3 -m venv v
v/bin/pip install --no-index {wheel}
v/bin/python -c 'import govtiny; print("govtiny", govtiny.VALUE)'"#,
        wheel = wheel.display()
    );
    let out = bench.step("low", "pip", &script);
    assert!(stdout(&out).contains("govtiny 42"), "{}", stdout(&out));
}

#[test]
fn low_runs_git_gcc_and_make() {
    require!("low_runs_git_gcc_and_make");
    let bench = Workbench::new();
    assert!(stdout(&bench.step("low", "git", GIT)).contains("git-ok"));
    assert!(stdout(&bench.step("low", "make", BUILD)).contains("built-ok"));
}

#[test]
fn a_persistent_cache_outlives_the_run_for_the_same_agent_id_only() {
    require!("a_persistent_cache_outlives_the_run_for_the_same_agent_id_only");
    let bench = Workbench::new();
    let pid = std::process::id();
    let (id, other) = (format!("wl-persist-{pid}"), format!("wl-persist-other-{pid}"));
    let persist = ["--cache", "persist"];
    let first =
        bench.run_with("medium", &id, &persist, r#"echo kept > "$XDG_CACHE_HOME/marker"; echo "$XDG_CACHE_HOME""#);
    bench.assert_clean(&id, &first);
    // Beside the audit store, under the agent's id.
    let kept = bench.store.parent().map(|dir| dir.join("cache").join(&id).join("xdg")).unwrap_or_default();
    assert_eq!(stdout(&first).lines().next(), Some(kept.to_string_lossy().as_ref()), "{}", stdout(&first));
    assert_eq!(must(fs::read_to_string(kept.join("marker")), "the kept cache"), "kept\n");
    // The next run of the same id finds it ...
    let second = bench.run_with("medium", &id, &persist, r#"cat "$XDG_CACHE_HOME/marker""#);
    bench.assert_clean(&id, &second);
    assert_eq!(stdout(&second).lines().next(), Some("kept"), "{}", stdout(&second));
    // ... another id has a cache of its own and cannot read the first one's ...
    let script = format!(
        r#"test ! -e "$XDG_CACHE_HOME/marker" && echo fresh
if cat '{}/marker' 2>/dev/null; then echo 'READ ANOTHER CACHE'; fi"#,
        kept.display()
    );
    let third = bench.run_with("medium", &other, &persist, &script);
    bench.assert_clean(&other, &third);
    assert_eq!(stdout(&third).trim(), "fresh", "{}", stdout(&third));
    // ... and an ephemeral run of the same id starts empty, leaving the kept cache alone.
    let fourth = bench.run("medium", &id, r#"test ! -e "$XDG_CACHE_HOME/marker" && echo empty"#);
    bench.assert_clean(&id, &fourth);
    assert_eq!(stdout(&fourth).trim(), "empty", "{}", stdout(&fourth));
    assert!(kept.join("marker").exists(), "an ephemeral run removed the persistent cache");
}
