//! Rules about programs match the program the kernel ran, however it was named: a path the
//! syscall probe could not read, the dynamic loader running it, a symlink, a renamed copy.

use std::{
    fs,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use governor_tests::{Scene, governor_bin, require, scene, stderr, wait_frozen};
use serde_json::Value;

fn start(scene: &Scene, id: &str, extra: &[&str], script: &str) -> Child {
    Command::new(governor_bin())
        .args(["run", "--standalone", "--trust", "medium", "--agent-id", id, "--workspace"])
        .arg(&scene.workspace)
        .args(extra)
        .args(["--", "sh", "-c", script])
        .env("HOME", &scene.home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("{error}"))
}

/// Waits until the agent's cgroup is frozen; kills it either way (so no test leaves an agent
/// behind) and returns whether it was frozen and governor's stderr.
fn frozen_then_killed(id: &str, child: Child) -> (bool, String) {
    let frozen = wait_frozen(id, Duration::from_secs(20));
    let _ = Command::new(governor_bin()).args(["kill", id]).output();
    let output = child.wait_with_output().unwrap_or_else(|error| panic!("{error}"));
    (frozen, stderr(&output))
}

fn incidents(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter(|line| line.starts_with('{'))
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|value| value["kind"] == "incident")
        .collect()
}

/// The shipped exfiltration rule: a secret tried, then `run` (which starts curl some way).
fn assert_exfiltration_caught(scene: &Scene, id: &str, run: &str) {
    let script =
        format!("cat {} 2>/dev/null; {run} >/dev/null 2>&1; sleep 30", scene.home.join(".ssh/id_ed25519").display());
    let child = start(scene, id, &[], &script);
    let (frozen, err) = frozen_then_killed(id, child);
    assert!(frozen, "`{run}` after a secret did not suspend the agent: {err}");
    let incidents = incidents(&err);
    assert!(
        incidents.iter().any(|incident| incident["rule"] == "network-tool-after-secret"),
        "no exfiltration incident for `{run}`: {err}"
    );
}

#[test]
fn a_program_named_by_an_unread_literal_is_still_matched() {
    require!("a_program_named_by_an_unread_literal_is_still_matched");
    let scene = scene!();
    // fork, then execl with the path as a string literal: in the fresh child the literal's
    // page is not mapped yet, so the syscall-entry probe cannot read the filename.
    let source = scene.root.join("fork-exec.c");
    fs::write(
        &source,
        "#include <unistd.h>\n#include <sys/wait.h>\nint main(void) {\n  pid_t pid = fork();\n  if (pid == 0) {\n    execl(\"/usr/bin/curl\", \"curl\", \"--version\", (char *)0);\n    _exit(127);\n  }\n  int status;\n  waitpid(pid, &status, 0);\n  sleep(30);\n  return 0;\n}\n",
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let program = scene.workspace.join("fork-exec");
    let built = Command::new("cc").arg("-O2").arg("-o").arg(&program).arg(&source).status();
    assert!(built.is_ok_and(|status| status.success()), "cc failed");
    let policy = scene.root.join("no-curl.toml");
    fs::write(
        &policy,
        "[[rule]]\nid = \"no-curl\"\nkind = \"exec\"\nbinary = [\"**/curl\"]\naction = \"kill\"\nseverity = \"high\"\nreason = \"no downloads\"\n",
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let id = format!("literal-{}", std::process::id());
    let child = start(&scene, &id, &["--policy", &policy.to_string_lossy()], &program.to_string_lossy());
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut child = child;
    let code = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = Command::new(governor_bin()).args(["kill", &id]).output();
            let _ = child.wait();
            panic!("the agent ran on: curl was not recognised");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = child.wait_with_output().unwrap_or_else(|error| panic!("{error}"));
    let err = stderr(&output);
    assert_eq!(code, Some(128 + 9), "the rule's kill should end the agent: {err}");
    let incidents = incidents(&err);
    assert_eq!(incidents.len(), 1, "{err}");
    assert_eq!(incidents[0]["rule"], "no-curl");
    assert_eq!(incidents[0]["event"]["kind"], "execed", "decided on the kernel's exec event: {err}");
    assert_eq!(incidents[0]["event"]["path"], "/usr/bin/curl");
}

#[test]
fn the_dynamic_loader_running_curl_after_a_secret_is_caught() {
    require!("the_dynamic_loader_running_curl_after_a_secret_is_caught");
    let scene = scene!();
    let Some(loader) = ["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"]
        .into_iter()
        .find(|loader| std::path::Path::new(loader).exists())
    else {
        println!("skipping the_dynamic_loader_running_curl_after_a_secret_is_caught: no glibc dynamic loader here");
        return;
    };
    assert_exfiltration_caught(
        &scene,
        &format!("loader-{}", std::process::id()),
        &format!("{loader} /usr/bin/curl --version"),
    );
}

#[test]
fn a_symlink_to_curl_after_a_secret_is_caught() {
    require!("a_symlink_to_curl_after_a_secret_is_caught");
    let scene = scene!();
    let link = scene.workspace.join("fetch");
    std::os::unix::fs::symlink("/usr/bin/curl", &link).unwrap_or_else(|error| panic!("{error}"));
    assert_exfiltration_caught(
        &scene,
        &format!("symlink-{}", std::process::id()),
        &format!("{} --version", link.display()),
    );
}

#[test]
fn a_renamed_copy_of_curl_after_a_secret_is_caught() {
    require!("a_renamed_copy_of_curl_after_a_secret_is_caught");
    let scene = scene!();
    let copy = scene.workspace.join("innocent-tool");
    fs::copy("/usr/bin/curl", &copy).unwrap_or_else(|error| panic!("{error}"));
    assert_exfiltration_caught(
        &scene,
        &format!("copy-{}", std::process::id()),
        &format!("{} --version", copy.display()),
    );
}

#[test]
fn an_ordinary_program_after_a_secret_is_not_an_exfiltration() {
    require!("an_ordinary_program_after_a_secret_is_not_an_exfiltration");
    let scene = scene!();
    // The same shape with a program no rule names: the agent runs to its end.
    let copy = scene.workspace.join("lister");
    fs::copy("/usr/bin/ls", &copy).unwrap_or_else(|error| panic!("{error}"));
    let script = format!(
        "cat {} 2>/dev/null; {} --version >/dev/null",
        scene.home.join(".ssh/id_ed25519").display(),
        copy.display()
    );
    let output = start(&scene, &format!("benign-{}", std::process::id()), &[], &script)
        .wait_with_output()
        .unwrap_or_else(|error| panic!("{error}"));
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{err}");
    assert!(incidents(&err).is_empty(), "{err}");
}

#[test]
fn a_secret_opened_by_a_relative_path_after_cd_is_still_a_secret() {
    require!("a_secret_opened_by_a_relative_path_after_cd_is_still_a_secret");
    let scene = scene!();
    // A secret directory made after launch (one that exists at launch is masked: cd into
    // it is refused). cat opens "config" (refused) and exits at once: the working directory
    // comes from the kernel, reported with the open, not from procfs afterwards.
    let kube = scene.home.join(".kube");
    let script = format!(
        "while [ ! -e go ]; do sleep 0.05; done; cd {} && cat config 2>/dev/null; cd /; curl --version >/dev/null 2>&1; sleep 30",
        kube.display()
    );
    let id = format!("relative-{}", std::process::id());
    let child = start(&scene, &id, &[], &script);
    let procs = governor_tests::cgroup2_root().join("governor").join(&id).join("cgroup.procs");
    let deadline = Instant::now() + Duration::from_secs(10);
    while fs::read_to_string(&procs).unwrap_or_default().trim().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    fs::create_dir_all(&kube).unwrap_or_else(|error| panic!("{error}"));
    fs::write(kube.join("config"), "token: x\n").unwrap_or_else(|error| panic!("{error}"));
    fs::write(scene.workspace.join("go"), "").unwrap_or_else(|error| panic!("{error}"));
    let (frozen, err) = frozen_then_killed(&id, child);
    assert!(frozen, "curl after a relative open of a secret did not suspend the agent: {err}");
    assert!(
        incidents(&err).iter().any(|incident| incident["rule"] == "network-tool-after-secret"),
        "no exfiltration incident: {err}"
    );
}

/// Builds `source` (C) into the workspace as `name`.
fn build(scene: &Scene, name: &str, source: &str) -> std::path::PathBuf {
    let file = scene.root.join(format!("{name}.c"));
    fs::write(&file, source).unwrap_or_else(|error| panic!("{error}"));
    let program = scene.workspace.join(name);
    let built = Command::new("cc").arg("-O2").arg("-o").arg(&program).arg(&file).status();
    assert!(built.is_ok_and(|status| status.success()), "cc {name} failed");
    program
}

#[test]
fn curl_run_from_a_memfd_after_a_secret_is_caught() {
    require!("curl_run_from_a_memfd_after_a_secret_is_caught");
    let scene = scene!();
    // The program's copy has no path at all: /proc/PID/exe says "/memfd:x (deleted)".
    let memexec = build(
        &scene,
        "memexec",
        r#"#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
int main(int argc, char **argv) {
  int in = open(argv[1], O_RDONLY), out = memfd_create("x", 0);
  char buffer[65536];
  ssize_t n;
  if (in < 0 || out < 0) return 2;
  while ((n = read(in, buffer, sizeof buffer)) > 0)
    if (write(out, buffer, n) != n) return 3;
  char *args[] = {"x", "--version", 0};
  char *env[] = {0};
  fexecve(out, args, env);
  return 127;
}
"#,
    );
    assert_exfiltration_caught(
        &scene,
        &format!("memfd-{}", std::process::id()),
        &format!("{} /usr/bin/curl", memexec.display()),
    );
}

#[test]
fn a_lease_on_a_file_governor_reads_does_not_stall_supervision() {
    require!("a_lease_on_a_file_governor_reads_does_not_stall_supervision");
    let scene = scene!();
    // A file the size of curl under a write lease, named as the program of a dynamic loader
    // that stays alive: reading it to learn what it is would wait for the lease to break
    // (lease-break-time, 45 s by default) while the agent goes on.
    let lease = build(
        &scene,
        "lease",
        r#"#define _GNU_SOURCE
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
int main(int argc, char **argv) {
  struct stat like;
  int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0755), pipes[2];
  char buffer[4096];
  if (stat(argv[2], &like) || fd < 0 || ftruncate(fd, like.st_size)) return 2;
  if (fcntl(fd, F_SETLEASE, F_WRLCK)) return 3;
  if (pipe(pipes)) return 4;
  fcntl(pipes[1], F_SETFL, O_NONBLOCK);
  memset(buffer, 'x', sizeof buffer);
  while (write(pipes[1], buffer, sizeof buffer) > 0) {}
  fcntl(pipes[1], F_SETFL, 0);
  if (fork() == 0) {
    dup2(pipes[1], 1);
    execl("/lib64/ld-linux-x86-64.so.2", "ld.so", "--version", argv[1], (char *)0);
    _exit(127);
  }
  sleep(60);
  return 0;
}
"#,
    );
    let id = format!("lease-{}", std::process::id());
    let script = format!(
        "{} {} /usr/bin/curl & sleep 2; cat {} 2>/dev/null; curl --version >/dev/null 2>&1; sleep 30",
        lease.display(),
        scene.workspace.join("held").display(),
        scene.home.join(".ssh/id_ed25519").display()
    );
    let child = start(&scene, &id, &[], &script);
    let (frozen, err) = frozen_then_killed(&id, child);
    assert!(frozen, "curl after a secret was not suspended while a lease was held: {err}");
    assert!(
        incidents(&err).iter().any(|incident| incident["rule"] == "network-tool-after-secret"),
        "no exfiltration incident: {err}"
    );
}

#[test]
fn a_network_applet_of_busybox_after_a_secret_is_caught() {
    require!("a_network_applet_of_busybox_after_a_secret_is_caught");
    let scene = scene!();
    // One file that is wget, nc and cat alike: the applet named by its first argument is
    // the program.
    let busybox = ["/usr/bin/busybox", "/bin/busybox"].into_iter().find(|path| std::path::Path::new(path).exists());
    let busybox = busybox.unwrap_or_else(|| panic!("no busybox: `cargo xtask setup` installs busybox-static"));
    assert_exfiltration_caught(&scene, &format!("busybox-{}", std::process::id()), &format!("{busybox} wget --help"));
}
