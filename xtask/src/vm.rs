//! `cargo xtask vm-test`: runs test binaries on a second kernel, Debian 12's 6.1 cloud kernel
//! (BPF LSM built in), under QEMU with software emulation. This machine's own kernel cannot
//! load BPF LSM programs, so this is where the LSM backend is tested for real.
//!
//! The kernel package is downloaded and unpacked into `target/vm/` (never installed: that
//! would run the host's initramfs and boot-loader hooks). The initramfs is written here:
//! busybox, the binaries under test and the shared libraries they load, and an `/init` that
//! mounts what governor needs, runs the command and powers off.

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead as _, BufReader, Read as _},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// Printed by `/init` with the command's exit status.
const EXIT_MARKER: &str = "GOVERNOR-VM-EXIT";

/// The Debian packages the VM needs on the host.
const PACKAGES: [(&str, &str); 2] = [("qemu-system-x86_64", "qemu-system-x86"), ("/bin/busybox", "busybox-static")];

/// Installs QEMU and busybox, and fetches the kernel; returns the kernel image.
pub fn prerequisites(root: &Path) -> Result<PathBuf> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(tool, _)| {
            if tool.starts_with('/') {
                !Path::new(tool).exists()
            } else {
                !Command::new("sh")
                    .args(["-c", &format!("command -v {tool}")])
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            }
        })
        .map(|(_, package)| *package)
        .collect();
    if !missing.is_empty() {
        crate::setup::apt_install(&missing)?;
    }
    kernel(root)
}

/// `target/vm/kernel/boot/vmlinuz-*-cloud-amd64`, downloading and unpacking the package that
/// `linux-image-cloud-amd64` depends on when there is none yet.
fn kernel(root: &Path) -> Result<PathBuf> {
    let dir = root.join("target/vm/kernel");
    if let Some(found) = find_vmlinuz(&dir) {
        return Ok(found);
    }
    let depends = output("apt-cache", &["depends", "linux-image-cloud-amd64"])?;
    let mut package = depends.lines().find_map(|line| line.trim().strip_prefix("Depends: ")).map(str::to_owned);
    if package.is_none() {
        crate::setup::apt_update()?;
        let depends = output("apt-cache", &["depends", "linux-image-cloud-amd64"])?;
        package = depends.lines().find_map(|line| line.trim().strip_prefix("Depends: ")).map(str::to_owned);
    }
    let package = package.context("apt-cache knows no linux-image-cloud-amd64 (Debian's cloud kernel)")?;
    let download = root.join("target/vm/download");
    fs::create_dir_all(&download).with_context(|| format!("creating {}", download.display()))?;
    // apt's sandbox user cannot write into the build tree; the download is still checked
    // against the archive's signatures.
    let status = Command::new("apt-get")
        .current_dir(&download)
        .args(["download", "-q", "-o", "APT::Sandbox::User=root", &package])
        .status()
        .context("running apt-get download")?;
    if !status.success() {
        bail!("apt-get download {package} failed ({status})");
    }
    let deb = fs::read_dir(&download)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .with_context(|| format!("no .deb in {}", download.display()))?;
    let status = Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir).status().context("running dpkg-deb")?;
    if !status.success() {
        bail!("dpkg-deb -x {} failed", deb.display());
    }
    let _ = fs::remove_file(&deb);
    find_vmlinuz(&dir).with_context(|| format!("{} has no boot/vmlinuz-*", dir.display()))
}

fn find_vmlinuz(dir: &Path) -> Option<PathBuf> {
    fs::read_dir(dir.join("boot"))
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("vmlinuz-")))
}

fn output(program: &str, args: &[&str]) -> Result<String> {
    let output = Command::new(program).args(args).output().with_context(|| format!("running {program}"))?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A newc cpio archive, built in memory.
#[derive(Default)]
pub struct Cpio {
    entries: BTreeMap<String, (u32, Vec<u8>)>,
}

impl Cpio {
    /// Adds `path` (absolute inside the archive) with `mode` (type and permission bits), and
    /// every parent directory.
    pub fn add(&mut self, path: &str, mode: u32, data: Vec<u8>) {
        let path = path.trim_start_matches('/').to_owned();
        let mut parent = Path::new(&path).parent();
        while let Some(dir) = parent.filter(|dir| !dir.as_os_str().is_empty()) {
            self.entries.entry(dir.to_string_lossy().into_owned()).or_insert((0o040_755, Vec::new()));
            parent = dir.parent();
        }
        self.entries.insert(path, (mode, data));
    }

    /// Adds a host file at the same path (symlinks followed), or at `dest`.
    pub fn add_file(&mut self, host: &Path, dest: &str) -> Result<()> {
        let data = fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        let mode = fs::metadata(host)?.permissions().mode() & 0o7777;
        self.add(dest, 0o100_000 | mode, data);
        Ok(())
    }

    /// The archive, parents first (BTreeMap order), ending with the trailer.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (name, (mode, data))) in self.entries.iter().enumerate() {
            header(&mut out, name, ino as u32 + 1, *mode, data.len());
            out.extend_from_slice(data);
            pad(&mut out);
        }
        header(&mut out, "TRAILER!!!", 0, 0, 0);
        out
    }
}

/// One newc header (`070701`, thirteen 8-digit hex fields) and the NUL-terminated name,
/// padded to 4 bytes.
fn header(out: &mut Vec<u8>, name: &str, ino: u32, mode: u32, size: usize) {
    let nlink = if mode & 0o170_000 == 0o040_000 { 2 } else { 1 };
    let fields = [ino, mode, 0, 0, nlink, 0, size as u32, 0, 0, 0, 0, name.len() as u32 + 1, 0];
    out.extend_from_slice(b"070701");
    for field in fields {
        out.extend_from_slice(format!("{field:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad(out);
}

fn pad(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// The shared libraries (and the dynamic loader) that `binary` loads, from ldd.
fn libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let text = output("ldd", &[&binary.to_string_lossy()])?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// The `/init` script: mounts, environment, the command, its exit status, power off.
pub fn init_script(command: &str) -> String {
    format!(
        "#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /etc /root /usr/bin /usr/sbin /sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t securityfs securityfs /sys/kernel/security
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf
mount -t tmpfs tmpfs /tmp
echo governor-vm > /etc/hostname
echo 'root:x:0:0:root:/root:/bin/sh' > /etc/passwd
echo 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >> /etc/passwd
export HOME=/root USER=root PATH=/bin:/sbin:/usr/bin:/usr/sbin
export GOVERNOR_BIN=/bin/governor GOVERNOR_ATTEMPT_BIN=/bin/attempt GOVERNOR_AUDIT_DB=/tmp/audit.db RUST_BACKTRACE=1
cd /tmp
echo \"kernel $(uname -r), LSMs $(cat /sys/kernel/security/lsm)\"
{command}
echo \"{EXIT_MARKER} $?\"
poweroff -f
"
    )
}

/// Boots the VM with `bins` in `/bin` and runs `command` (a shell command line) as root.
/// Streams the console to `on_line` and returns the command's exit status.
pub fn run_in_vm(
    root: &Path,
    bins: &[PathBuf],
    command: &str,
    timeout: Duration,
    mut on_line: impl FnMut(&str),
) -> Result<i32> {
    let kernel = prerequisites(root)?;
    let mut cpio = Cpio::default();
    cpio.add_file(Path::new("/bin/busybox"), "/bin/busybox")?;
    let mut libs = Vec::new();
    for bin in bins {
        let name = bin.file_name().with_context(|| format!("{} has no file name", bin.display()))?;
        cpio.add_file(bin, &format!("/bin/{}", name.to_string_lossy()))?;
        libs.extend(libraries(bin)?);
    }
    libs.sort();
    libs.dedup();
    for lib in libs {
        cpio.add_file(&lib, &lib.to_string_lossy())?;
    }
    cpio.add("/init", 0o100_755, init_script(command).into_bytes());
    let initramfs = root.join("target/vm/initramfs.cpio");
    fs::write(&initramfs, cpio.bytes()).with_context(|| format!("writing {}", initramfs.display()))?;

    let started = Instant::now();
    // TCG: with -enable-kvm this nested machine hangs at boot.
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max", "-m", "2048", "-smp", "1", "-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(&initramfs)
        .args(["-append", "console=ttyS0 quiet lsm=landlock,bpf panic=-1 rdinit=/init"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let stdout = child.stdout.take().context("qemu stdout")?;
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut status = None;
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        match received.recv_timeout(left.min(Duration::from_secs(1))) {
            Ok(line) => {
                let line = line.trim_end_matches('\r');
                on_line(line);
                if let Some(code) = line.strip_prefix(EXIT_MARKER) {
                    status = code.trim().parse::<i32>().ok();
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) if started.elapsed() < timeout => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the VM did not finish within {timeout:?}");
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let exit = child.wait().context("waiting for qemu")?;
    let mut errors = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut errors);
    }
    on_line(&format!("xtask: VM ran {:.1} s", started.elapsed().as_secs_f64()));
    match status {
        Some(code) => Ok(code),
        None => {
            bail!("the VM ended ({exit}) without reporting the command's exit status; qemu said: {}", errors.trim())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_entries_are_newc_with_parents_and_a_trailer() {
        let mut cpio = Cpio::default();
        cpio.add("/bin/tool", 0o100_755, b"abc".to_vec());
        let bytes = cpio.bytes();
        let text = String::from_utf8_lossy(&bytes);
        // Parent first, then the file, then the trailer; every header starts with the magic.
        let bin = text.find("bin\0").unwrap_or(usize::MAX);
        let tool = text.find("bin/tool\0").unwrap_or(usize::MAX);
        let trailer = text.find("TRAILER!!!\0").unwrap_or(usize::MAX);
        assert!(bin < tool && tool < trailer, "{text}");
        assert_eq!(text.matches("070701").count(), 3);
        assert_eq!(bytes.len() % 4, 0);
        // The file's header says mode 100755 and size 3.
        let header = &text[tool - 110..tool];
        assert_eq!(&header[14..22], "000081ed");
        assert_eq!(&header[54..62], "00000003");
    }

    #[test]
    fn the_init_script_reports_the_exit_status() {
        let script = init_script("run-tests");
        assert!(script.contains("mount -t cgroup2 cgroup2 /sys/fs/cgroup"));
        assert!(script.contains("run-tests\necho \"GOVERNOR-VM-EXIT $?\"\npoweroff -f"));
    }
}
