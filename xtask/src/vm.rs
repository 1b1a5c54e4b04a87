//! `cargo xtask vm-test`: runs test binaries on Debian's cloud kernels under QEMU with
//! software emulation. 6.1 (Debian 12) has BPF LSM but Landlock ABI 2; 6.12 (bookworm-backports)
//! has BPF LSM and Landlock ABI 6, so every layer is enforced on one kernel there. This
//! machine's own kernel cannot load BPF LSM programs.
//!
//! Each kernel package is downloaded through a private apt configuration under `target/vm/`
//! (the system's sources are read, never changed) and unpacked there, never installed: that
//! would run the host's initramfs and boot-loader hooks. The initramfs is written here:
//! busybox, the binaries under test, the host tools the tests run and the shared libraries
//! they load, and an `/init` that mounts what governor needs, runs the command and powers off.

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

/// The Debian release whose archive entry in the system's sources serves both kernels.
const RELEASE: &str = "bookworm";

/// A kernel the VM boots: Debian's `linux-image-cloud-amd64` from one suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kernel {
    /// Debian 12's own: BPF LSM, Landlock ABI 2 (filesystem only).
    #[value(name = "6.1")]
    V6_1,
    /// bookworm-backports: BPF LSM, Landlock ABI 6 (TCP rules, scopes), cgroup AF_UNIX hooks.
    #[value(name = "6.12")]
    V6_12,
}

impl Kernel {
    pub fn name(self) -> &'static str {
        match self {
            Kernel::V6_1 => "6.1",
            Kernel::V6_12 => "6.12",
        }
    }

    /// The suite of Debian's archive whose `linux-image-cloud-amd64` is this kernel.
    fn suite(self) -> &'static str {
        match self {
            Kernel::V6_1 => RELEASE,
            Kernel::V6_12 => "bookworm-backports",
        }
    }
}

/// Installs QEMU and busybox, and fetches the kernel; returns the kernel image.
pub fn prerequisites(root: &Path, kernel: Kernel) -> Result<PathBuf> {
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
    fetch_kernel(root, kernel)
}

/// An entry of the system's apt sources: where Debian's archive is and the key it is
/// signed with.
#[derive(Debug, PartialEq, Eq)]
pub struct Archive {
    pub uri: String,
    pub signed_by: Option<String>,
}

/// The archive entry that serves `release` (its `main` component) in apt sources text:
/// one-line `.list` format or deb822 `.sources` stanzas.
pub fn archive_in(text: &str, deb822: bool, release: &str) -> Option<Archive> {
    if deb822 {
        // Stanzas are separated by blank lines; a line starting with blanks continues a field.
        let mut stanzas: Vec<BTreeMap<String, String>> = vec![BTreeMap::new()];
        for line in text.lines().filter(|line| !line.trim_start().starts_with('#')) {
            if line.trim().is_empty() {
                stanzas.push(BTreeMap::new());
            } else if let Some((key, value)) = line.split_once(':')
                && !key.starts_with(char::is_whitespace)
                && let Some(fields) = stanzas.last_mut()
            {
                fields.insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
            }
        }
        for fields in stanzas {
            let has = |key: &str, word: &str| fields.get(key).is_some_and(|v| v.split_whitespace().any(|w| w == word));
            if has("types", "deb")
                && has("suites", release)
                && has("components", "main")
                && fields.get("enabled").is_none_or(|v| v != "no")
                && let Some(uri) = fields.get("uris").and_then(|uris| uris.split_whitespace().next())
            {
                return Some(Archive { uri: uri.to_owned(), signed_by: fields.get("signed-by").cloned() });
            }
        }
        return None;
    }
    text.lines().find_map(|line| {
        let line = line.split('#').next()?.trim();
        let rest = line.strip_prefix("deb ")?.trim_start();
        let (options, rest) = match rest.strip_prefix('[') {
            Some(options) => options.split_once(']')?,
            None => ("", rest),
        };
        let mut words = rest.split_whitespace();
        let (uri, suite) = (words.next()?, words.next()?);
        if suite != release || !words.any(|component| component == "main") {
            return None;
        }
        let signed_by =
            options.split_whitespace().find_map(|option| option.strip_prefix("signed-by=")).map(str::to_owned);
        Some(Archive { uri: uri.to_owned(), signed_by })
    })
}

/// The archive that serves [`RELEASE`], read from `/etc/apt/sources.list` and
/// `/etc/apt/sources.list.d/`.
fn system_archive() -> Result<Archive> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(entries) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = entries.filter_map(Result::ok).map(|entry| entry.path()).collect();
        more.sort();
        files.extend(more);
    }
    for file in &files {
        let name = file.to_string_lossy();
        let deb822 = name.ends_with(".sources");
        if !deb822 && !name.ends_with(".list") {
            continue;
        }
        let Ok(text) = fs::read_to_string(file) else { continue };
        if let Some(archive) = archive_in(&text, deb822, RELEASE) {
            return Ok(archive);
        }
    }
    bail!(
        "no apt source serves Debian's {RELEASE} (main) in /etc/apt/sources.list or /etc/apt/sources.list.d/: \
         the VM kernels come from that archive; add it (e.g. `deb http://MIRROR/debian {RELEASE} main`)"
    )
}

/// apt-get and apt-cache with a configuration of their own under `dir`: one sources file
/// naming `suite` of `archive`, and package lists and cache that are not the system's.
struct PrivateApt {
    dir: PathBuf,
}

impl PrivateApt {
    fn new(dir: PathBuf, archive: &Archive, suite: &str) -> Result<PrivateApt> {
        for sub in ["lists/partial", "cache/archives/partial"] {
            fs::create_dir_all(dir.join(sub)).with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        let options = archive.signed_by.as_ref().map(|key| format!("[signed-by={key}] ")).unwrap_or_default();
        let list = format!("deb {options}{} {suite} main\n", archive.uri);
        fs::write(dir.join("sources.list"), list).with_context(|| format!("writing {}", dir.display()))?;
        Ok(PrivateApt { dir })
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        let at = |sub: &str| self.dir.join(sub).to_string_lossy().into_owned();
        command.args([
            "-o",
            &format!("Dir::Etc::sourcelist={}", at("sources.list")),
            "-o",
            "Dir::Etc::sourceparts=-",
            "-o",
            &format!("Dir::State::Lists={}", at("lists")),
            "-o",
            &format!("Dir::Cache={}", at("cache")),
            // apt's sandbox user cannot write into the build tree; downloads are still
            // checked against the archive's signatures.
            "-o",
            "APT::Sandbox::User=root",
        ]);
        command
    }

    fn run(&self, program: &str, args: &[&str], cwd: &Path) -> Result<String> {
        let output = self
            .command(program)
            .args(args)
            .current_dir(cwd)
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("running {program}"))?;
        if !output.status.success() {
            bail!("{program} {} failed ({}) with the sources in {}", args.join(" "), output.status, self.dir.display());
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// `target/vm/kernel-<name>/boot/vmlinuz-*`: when it is not there yet, the package that
/// `linux-image-cloud-amd64` of the kernel's suite depends on is downloaded and unpacked.
fn fetch_kernel(root: &Path, kernel: Kernel) -> Result<PathBuf> {
    let dir = root.join(format!("target/vm/kernel-{}", kernel.name()));
    if let Some(found) = find_vmlinuz(&dir) {
        return Ok(found);
    }
    let apt =
        PrivateApt::new(root.join(format!("target/vm/apt-{}", kernel.name())), &system_archive()?, kernel.suite())?;
    eprintln!("xtask: fetching Debian's {} cloud kernel ({})", kernel.name(), kernel.suite());
    apt.run("apt-get", &["update", "-q"], root)?;
    let depends = apt.run("apt-cache", &["depends", "linux-image-cloud-amd64"], root)?;
    let package = depends
        .lines()
        .find_map(|line| line.trim().strip_prefix("Depends: "))
        .with_context(|| format!("{} has no linux-image-cloud-amd64 (Debian's cloud kernel)", kernel.suite()))?
        .to_owned();
    if !package.starts_with(&format!("linux-image-{}.", kernel.name())) {
        bail!("linux-image-cloud-amd64 in {} is {package}, not a {} kernel", kernel.suite(), kernel.name());
    }
    let download = root.join(format!("target/vm/download-{}", kernel.name()));
    fs::create_dir_all(&download).with_context(|| format!("creating {}", download.display()))?;
    apt.run("apt-get", &["download", "-q", &package], &download)?;
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

/// Where [`Guest::tool`] looks for a host tool (not `PATH`: it may hold shims such as
/// pyenv's, which are no use in the VM).
const TOOL_DIRS: [&str; 4] = ["/usr/bin", "/usr/sbin", "/bin", "/sbin"];

/// Asks the host's Python which files the tests' scripts load (`import os, socket, sys`
/// after the usual start-up), with their compiled caches.
const PYTHON_FILES: &str = "import os, socket, sys, importlib.util
files = set()
for module in list(sys.modules.values()):
    path = getattr(module, '__file__', None)
    if path:
        files.add(path)
        if path.endswith('.py'):
            cached = importlib.util.cache_from_source(path)
            if os.path.exists(cached):
                files.add(cached)
print('\\n'.join(sorted(files)))
";

/// The VM's root filesystem besides busybox and `/init`: binaries under test, host tools
/// and the shared libraries they load.
#[derive(Default)]
pub struct Guest {
    cpio: Cpio,
    libraries: Vec<PathBuf>,
}

impl Guest {
    /// A host executable at `dest` in the VM, with the libraries it loads.
    pub fn binary(&mut self, host: &Path, dest: &str) -> Result<()> {
        self.cpio.add_file(host, dest)?;
        self.libraries.extend(libraries(host)?);
        Ok(())
    }

    /// An empty directory (and its parents).
    pub fn directory(&mut self, path: &Path) {
        self.cpio.add(&path.to_string_lossy(), 0o040_755, Vec::new());
    }

    /// A host file or directory tree, at the same path in the VM.
    pub fn tree(&mut self, host: &Path) -> Result<()> {
        let meta = fs::metadata(host).with_context(|| format!("reading {}", host.display()))?;
        let dest = host.to_string_lossy();
        if !meta.is_dir() {
            return self.cpio.add_file(host, &dest);
        }
        self.cpio.add(&dest, 0o040_755, Vec::new());
        let mut entries: Vec<PathBuf> = fs::read_dir(host)?.filter_map(Result::ok).map(|entry| entry.path()).collect();
        entries.sort();
        for entry in entries {
            self.tree(&entry)?;
        }
        Ok(())
    }

    /// A host tool (`git`, `setpriv`, ...) at its own path in the VM, so that the real one
    /// is run rather than busybox's.
    pub fn tool(&mut self, name: &str) -> Result<()> {
        let host = TOOL_DIRS
            .iter()
            .map(|dir| Path::new(dir).join(name))
            .find(|path| path.exists())
            .with_context(|| format!("{name} is not installed on this machine (the VM's tests run it)"))?;
        let dest = host.to_string_lossy().into_owned();
        self.binary(&host, &dest)
    }

    /// `/usr/bin/python3` and the part of its standard library the tests' scripts load.
    pub fn python(&mut self) -> Result<()> {
        let python = Path::new("/usr/bin/python3");
        let out = Command::new(python)
            .args(["-c", PYTHON_FILES])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .output()
            .context("running /usr/bin/python3")?;
        if !out.status.success() {
            bail!("/usr/bin/python3 could not list its modules: {}", String::from_utf8_lossy(&out.stderr));
        }
        self.binary(python, "/usr/bin/python3")?;
        let files = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lib_dynload = None;
        for file in files.lines().map(Path::new).filter(|path| path.is_absolute()) {
            self.cpio.add_file(file, &file.to_string_lossy())?;
            if file.extension().is_some_and(|ext| ext == "so") {
                self.libraries.extend(libraries(file)?);
            }
            if file.file_name().is_some_and(|name| name == "os.py") {
                lib_dynload = file.parent().map(|dir| dir.join("lib-dynload"));
            }
        }
        // getpath's landmark for exec_prefix; without it Python warns on every start.
        let lib_dynload = lib_dynload.context("Python did not load os.py")?;
        self.cpio.add(&lib_dynload.to_string_lossy(), 0o040_755, Vec::new());
        Ok(())
    }
}

/// The `/init` script: mounts, the files and environment the tests expect of a machine, the
/// command, its exit status, power off.
pub fn init_script(command: &str) -> String {
    format!(
        "#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /etc /root /run /usr/bin /usr/sbin /sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t securityfs securityfs /sys/kernel/security
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
for module in /lib/modules/*.ko; do [ -e \"$module\" ] && insmod \"$module\"; done
ip link set lo up
echo governor-vm > /etc/hostname
hostname governor-vm
echo 'root:x:0:0:root:/root:/bin/sh' > /etc/passwd
echo 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >> /etc/passwd
printf 'root:x:0:\\nnogroup:x:65534:\\n' > /etc/group
echo 'root:*:19000:0:99999:7:::' > /etc/shadow
printf 'root:*::\\nnogroup:*::\\n' > /etc/gshadow
chmod 640 /etc/shadow /etc/gshadow
echo 'nameserver 127.0.0.53' > /etc/resolv.conf
export HOME=/root USER=root PATH=/usr/bin:/usr/sbin:/bin:/sbin
export GOVERNOR_BIN=/bin/governor GOVERNOR_ATTEMPT_BIN=/bin/attempt GOVERNOR_AUDIT_DB=/tmp/audit.db RUST_BACKTRACE=1
# A million opens take minutes under software emulation; a tenth still fills the ring buffer.
export GOVERNOR_FLOOD_OPENS=100000
cd /tmp
# A line of its own: the firmware's screen-clearing escapes end up on this one.
echo
echo \"kernel $(uname -r), LSMs $(cat /sys/kernel/security/lsm), $(nproc) CPUs\"
{command}
echo \"{EXIT_MARKER} $?\"
poweroff -f
"
    )
}

/// The kernel package's virtio block driver, decompressed, where it is a module (6.12's
/// cloud kernel); `None` where it is built in or absent.
fn virtio_blk(vmlinuz: &Path) -> Result<Option<Vec<u8>>> {
    let Some(modules) = vmlinuz.parent().and_then(Path::parent).map(|dir| dir.join("lib/modules")) else {
        return Ok(None);
    };
    let Ok(versions) = fs::read_dir(&modules) else { return Ok(None) };
    for version in versions.filter_map(Result::ok) {
        let dir = version.path().join("kernel/drivers/block");
        if let Ok(plain) = fs::read(dir.join("virtio_blk.ko")) {
            return Ok(Some(plain));
        }
        let packed = dir.join("virtio_blk.ko.xz");
        if packed.exists() {
            let out = Command::new("xz").arg("-dc").arg(&packed).output().context("running xz")?;
            if !out.status.success() {
                bail!("xz -dc {} failed", packed.display());
            }
            return Ok(Some(out.stdout));
        }
    }
    Ok(None)
}

/// How the VM is booted.
pub struct Boot {
    pub kernel: Kernel,
    /// Virtual CPUs. One in CI: with two, 6.12 under QEMU 7.2's multi-threaded TCG hit an
    /// int3 Oops in kernel text that had just been patched (the static keys BPF LSM flips).
    pub cpus: u32,
    pub timeout: Duration,
}

/// Boots `boot.kernel` with `guest` and runs `command` (a shell command line) as root.
/// Streams the console to `on_line` and returns the command's exit status.
pub fn run_in_vm(root: &Path, boot: &Boot, guest: Guest, command: &str, mut on_line: impl FnMut(&str)) -> Result<i32> {
    let kernel = prerequisites(root, boot.kernel)?;
    let Guest { mut cpio, mut libraries } = guest;
    cpio.add_file(Path::new("/bin/busybox"), "/bin/busybox")?;
    libraries.sort();
    libraries.dedup();
    for lib in libraries {
        cpio.add_file(&lib, &lib.to_string_lossy())?;
    }
    if let Some(module) = virtio_blk(&kernel)? {
        cpio.add("/lib/modules/virtio_blk.ko", 0o100_644, module);
    }
    cpio.add("/init", 0o100_755, init_script(command).into_bytes());
    // A blank disk, so that the tests of raw disk access have a /dev/vda to try.
    let disk = root.join("target/vm/disk.img");
    if !disk.exists() {
        fs::write(&disk, vec![0_u8; 1 << 20]).with_context(|| format!("writing {}", disk.display()))?;
    }
    let initramfs = root.join(format!("target/vm/initramfs-{}.cpio", boot.kernel.name()));
    let bytes = cpio.bytes();
    fs::write(&initramfs, &bytes).with_context(|| format!("writing {}", initramfs.display()))?;
    on_line(&format!(
        "xtask: booting {} ({} MiB initramfs, {} CPUs, TCG)",
        kernel.display(),
        bytes.len() >> 20,
        boot.cpus
    ));

    let started = Instant::now();
    // TCG: with -enable-kvm this nested machine hangs at boot. cx16=off: QEMU 7.2's TCG
    // leaves garbage in EFLAGS after the per-CPU cmpxchg16b of 6.12's SLUB fast path, which
    // ends in a double fault within seconds; without CX16 SLUB takes its locked path.
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max,cx16=off", "-m", "2048", "-nographic", "-no-reboot", "-nic", "none"])
        .args(["-smp", &boot.cpus.to_string()])
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(&initramfs)
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", disk.display()))
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
    let timeout = boot.timeout;
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
    fn the_archive_is_read_from_either_sources_format() {
        let deb822 = "Types: deb\n# a comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n\
                      Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
                      Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\
                      Components: main\n";
        let archive = archive_in(deb822, true, "bookworm");
        assert_eq!(
            archive,
            Some(Archive {
                uri: "http://mirror.example/debian".to_owned(),
                signed_by: Some("/usr/share/keyrings/debian-archive-keyring.gpg".to_owned()),
            })
        );
        assert_eq!(archive_in(deb822, true, "trixie"), None);
        let list = "deb http://other.example/debian-security bookworm-security main\n\
                    deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main contrib # x\n";
        let archive = archive_in(list, false, "bookworm");
        assert_eq!(
            archive,
            Some(Archive { uri: "http://mirror.example/debian".to_owned(), signed_by: Some("/k.gpg".to_owned()) })
        );
        // Disabled or without main: not this archive.
        assert_eq!(
            archive_in("Enabled: no\nTypes: deb\nURIs: u\nSuites: bookworm\nComponents: main\n", true, "bookworm"),
            None
        );
        assert_eq!(archive_in("deb http://x/debian bookworm contrib\n", false, "bookworm"), None);
    }

    #[test]
    fn the_init_script_reports_the_exit_status() {
        let script = init_script("run-tests");
        assert!(script.contains("mount -t cgroup2 cgroup2 /sys/fs/cgroup"));
        assert!(script.contains("run-tests\necho \"GOVERNOR-VM-EXIT $?\"\npoweroff -f"));
    }
}
