//! Every syscall that opens or changes the filesystem reports its refusals: the audit trail
//! and the repeated-refusals rule see a refused mkdir, unlink or rename as they see a
//! refused open, whichever syscall (old or `*at`) the agent chose.

use std::{
    fs,
    process::{Command, Stdio},
    time::Duration,
};

use governor_tests::{governor_bin, require, scene, stderr, wait_frozen};
use serde_json::Value;

/// Operations, the syscall `attempt sys` makes, and the name the event carries.
const OPS: [(&str, &str); 17] = [
    ("open", "open"),
    ("creat", "open"),
    ("mkdir", "mkdir"),
    ("mkdirat", "mkdir"),
    ("rmdir", "rmdir"),
    ("unlink", "unlink"),
    ("unlinkat", "unlink"),
    ("rename", "rename"),
    ("renameat2", "rename"),
    ("link", "link"),
    ("linkat", "link"),
    ("symlink", "symlink"),
    ("symlinkat", "symlink"),
    ("truncate", "truncate"),
    ("mknod", "mknod"),
    ("chmod", "chmod"),
    ("chown", "chown"),
];

#[test]
fn refused_changes_of_the_filesystem_are_events() {
    require!("refused_changes_of_the_filesystem_are_events");
    let scene = scene!();
    // Targets outside the workspace, which ring high may read but not change; chmod (a
    // set-uid mode) and chown (no CAP_CHOWN) are refused on a file of the workspace.
    let outside = scene.outside.join("file");
    let mine = scene.workspace.join("mine");
    fs::write(&mine, "x").unwrap_or_else(|error| panic!("{error}"));
    let attempt = scene.attempt.display().to_string();
    let mut script = String::new();
    for (syscall, _) in OPS {
        let (first, second) = match syscall {
            "chmod" | "chown" => (mine.display().to_string(), String::new()),
            "rmdir" => (scene.outside.display().to_string(), String::new()),
            // An existing file: a missing one is ENOENT before any permission check.
            "unlink" | "unlinkat" | "truncate" => (outside.display().to_string(), String::new()),
            "link" | "linkat" | "rename" | "renameat2" => {
                (outside.display().to_string(), scene.outside.join("new").display().to_string())
            }
            "symlink" | "symlinkat" => ("target".to_owned(), scene.outside.join("new").display().to_string()),
            _ => (scene.outside.join(format!("{syscall}-x")).display().to_string(), String::new()),
        };
        script.push_str(&format!("{attempt} sys {syscall} {first} {second}; "));
    }
    let output = Command::new(governor_bin())
        .args(["run", "--standalone", "--trust", "high", "--trace", "--workspace"])
        .arg(&scene.workspace)
        .args(["--", "sh", "-c", &script])
        .env("HOME", &scene.home)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    let said = String::from_utf8_lossy(&output.stdout).into_owned();
    let words: Vec<&str> = said.lines().collect();
    assert_eq!(words.len(), OPS.len(), "{said}\n{}", stderr(&output));
    let trace: Vec<Value> = stderr(&output)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["result"] == "EACCES" || event["result"] == "EPERM")
        .collect();
    for ((syscall, name), word) in OPS.iter().zip(&words) {
        assert!(*word == "EACCES" || *word == "EPERM", "{syscall} was not refused: {word}");
        assert!(
            trace.iter().any(|event| event["kind"] == *name && event["result"] == *word),
            "no refused {name} event for {syscall} ({word}):\n{}",
            stderr(&output)
        );
    }
    // The new name of a refused rename is in the event.
    let new = scene.outside.join("new").display().to_string();
    assert!(trace.iter().any(|event| event["kind"] == "rename" && event["path2"] == new.as_str()), "{trace:?}");
}

#[test]
fn refused_mkdirs_count_as_probing() {
    require!("refused_mkdirs_count_as_probing");
    let scene = scene!();
    let id = format!("mkdirs-{}", std::process::id());
    let attempt = scene.attempt.display().to_string();
    let outside = scene.outside.display();
    // Six refused mkdirs outside the sandbox, through the old syscall, then a long sleep.
    let script = format!("for i in 1 2 3 4 5 6; do {attempt} sys mkdir {outside}/d$i; done; sleep 30");
    let child = Command::new(governor_bin())
        .args(["run", "--standalone", "--trust", "low", "--agent-id", &id, "--workspace"])
        .arg(&scene.workspace)
        .args(["--", "sh", "-c", &script])
        .env("HOME", &scene.home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("{error}"));
    let frozen = wait_frozen(&id, Duration::from_secs(20));
    let _ = Command::new(governor_bin()).args(["kill", &id]).output();
    let output = child.wait_with_output().unwrap_or_else(|error| panic!("{error}"));
    let err = stderr(&output);
    assert!(frozen, "five refused mkdirs did not suspend the agent: {err}");
    assert!(err.contains("\"rule\":\"repeated-kernel-denials\""), "{err}");
}
