//! The fentry backend, on a kernel that runs BPF trampolines: `cargo xtask vm-test` runs this
//! file on Debian's 6.1 and 6.12 kernels, where the events come from fexit programs on the
//! syscall functions instead of the raw syscall tracepoints. Where fentry does not load (this
//! repository's CI host: BPF trampolines are refused) the test says so and skips.
//!
//! 6.1 has Landlock ABI 2, so the ring runs with `--best-effort`: what is tested here is
//! what the probes report, not what Landlock enforces on top of ABI 2.

use std::{
    fs,
    net::TcpListener,
    process::{Command, Stdio},
};

use governor_tests::{scene, stderr, stdout};
use serde_json::Value;

fn events(stderr: &str) -> Vec<Value> {
    stderr.lines().filter(|line| line.starts_with('{')).filter_map(|line| serde_json::from_str(line).ok()).collect()
}

#[test]
fn fentry_reports_an_agent_s_opens_refusals_and_connect_and_nothing_of_other_processes() {
    let name = "fentry_reports_an_agent_s_opens_refusals_and_connect_and_nothing_of_other_processes";
    if !governor_tests::privileged(name) {
        return;
    }
    let scene = scene!();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|error| panic!("{error}"));
    let port = listener.local_addr().map(|addr| addr.port()).unwrap_or(0);
    let file = scene.workspace.join("notes.md");
    fs::write(&file, "hello").unwrap_or_else(|error| panic!("{error}"));
    let secret = scene.home.join(".ssh/id_ed25519");
    let made = scene.outside.join("made");
    // A process outside the agent, opening a file of its own all the while.
    let marker = scene.outside.join("outsider.txt");
    fs::write(&marker, "not an agent").unwrap_or_else(|error| panic!("{error}"));
    let mut outsider = Command::new("sh")
        .args(["-c", &format!("while :; do cat {} >/dev/null; done", marker.display())])
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("{error}"));
    let deep = governor_tests::relative_dir(&scene);
    let script = format!(
        "cd {deep} && cat relative.md >/dev/null; cd /; \
         cat {file} >/dev/null; cat {secret} 2>/dev/null; {attempt} mkdir {made}; {attempt} chmod {file} 4755; \
         exec {attempt} tcp-connect {port}",
        deep = deep.display(),
        file = file.display(),
        secret = secret.display(),
        made = made.display(),
        attempt = scene.attempt.display(),
    );
    let output =
        scene.governor("high", &["--probes", "fentry", "--best-effort", "--verbose", "--trace"], ["sh", "-c", &script]);
    let _ = outsider.kill();
    let _ = outsider.wait();
    let err = stderr(&output);
    if output.status.code() == Some(2) && err.contains("--probes fentry:") {
        println!("skipping {name}: {}", err.trim().trim_start_matches("governor: "));
        return;
    }
    // The backend, as --verbose reports it (with BPF LSM on the VMs' kernels).
    assert!(
        err.contains("governor: probes: lsm+fentry backend") || err.contains("governor: probes: fentry backend"),
        "{err}"
    );
    // mkdir outside the workspace (Landlock), chmod to a set-id mode (seccomp, before the
    // syscall's function runs), then the connect.
    assert_eq!(stdout(&output).lines().collect::<Vec<_>>(), ["EACCES", "EPERM", "ok"], "{err}");
    let events = events(&err);
    let find = |kind: &str, path: &str| {
        events.iter().find(|event| event["kind"] == kind && event["path"].as_str() == Some(path))
    };
    let result = |event: Option<&Value>| event.map(|event| (event["result"].clone(), event["source"].clone()));
    let fentry = Value::from("fentry");
    assert_eq!(result(find("open", &file.to_string_lossy())), Some(("ok".into(), fentry.clone())), "{err}");
    // Refused by Landlock inside openat: the fexit program sees the errno the agent saw.
    assert_eq!(result(find("open", &secret.to_string_lossy())), Some(("EACCES".into(), fentry.clone())), "{err}");
    assert_eq!(result(find("mkdir", &made.to_string_lossy())), Some(("EACCES".into(), fentry.clone())), "{err}");
    // Refused by seccomp: the syscall's function never ran; `__secure_computing`'s fexit saw it.
    assert_eq!(result(find("chmod", &file.to_string_lossy())), Some(("EPERM".into(), fentry.clone())), "{err}");
    governor_tests::assert_walked(&events, &deep, &err);
    let connect =
        events.iter().find(|event| event["kind"] == "connect" && event["port"].as_u64() == Some(u64::from(port)));
    assert_eq!(result(connect), Some(("ok".into(), fentry)), "{err}");
    // Nothing of the outsider: not its opens, not its pid.
    let marker = marker.to_string_lossy();
    assert!(!events.iter().any(|event| event["path"].as_str() == Some(&*marker)), "{err}");
    let outsider = u64::from(outsider.id());
    assert!(events.iter().all(|event| event["pid"].as_u64() != Some(outsider)), "{err}");
    let cgroup = connect.and_then(|event| event["cgroup_id"].as_u64());
    assert!(events.iter().all(|event| event["cgroup_id"].as_u64() == cgroup), "{err}");
}
