//! A virtual switch: the rootfs booted by systemd-nspawn with systemd as PID 1, containerd and
//! soniclet inside, in its own network namespace. The project checkout is bound at the same
//! path inside, so files can be handed to the CLI.
//!
//! Each switch has a name (`vs` for `cargo xtask vs`, others for tests and benchmarks) and a
//! machine directory, `/var/lib/soniclet-vs/<name>/`: `root/` (a copy of the rootfs, kept across
//! boots and reinstalled when the rootfs changes), `nspawn.pid`, `leader.pid` (the switch's
//! PID 1, for `nsenter`), `nspawn.log`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::rootfs::Rootfs;
use crate::util::{project_root, run, shell_quote};

/// The nspawn flags that let containerd and runc run containers inside (DEVELOPERS.md).
pub const NSPAWN_FLAGS: &[&str] = &[
    "--boot",
    "--register=no",
    "--keep-unit",
    "--console=passive",
    "--capability=all",
    "--system-call-filter=@mount @keyring bpf",
];

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// A unit of the machine's disk (not of the rootfs): nspawn mounts the cgroup controllers
/// read-only; runc needs them writable. Within the machine's cgroup namespace they show only
/// the machine's own cgroup, so this stays inside it.
const CGROUPS_RW_UNIT: &str = "\
[Unit]
Description=Make the cgroup controllers writable for runc (virtual switch only)
DefaultDependencies=no
Before=sysinit.target containerd.service

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'for d in /sys/fs/cgroup/*/; do mount -o remount,bind,rw \"$d\"; done'
# systemd found the controllers read-only when it started, and left them alone: re-executed,
# it manages them (the NOS slice's CPU weight becomes cpu.shares), as on a real switch.
ExecStartPost=/bin/systemctl daemon-reexec

[Install]
WantedBy=sysinit.target
";

/// What ONIE would have left in `/host/machine.conf` on a SONiC-VS switch.
const VS_MACHINE_CONF: &str = "onie_platform=x86_64-kvm_x86_64-r0\nonie_arch=x86_64\nonie_machine=kvm_x86_64\nonie_machine_rev=0\nonie_eth_addr=52:54:00:12:34:56\n";

/// Where the machines live.
pub const MACHINES_DIR: &str = "/var/lib/soniclet-vs";

const PATH_INSIDE: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Clone)]
pub struct Switch {
    pub name: String,
    pub dir: PathBuf,
}

/// Whether `pid` runs: a zombie does not (nspawn stays one until the xtask that spawned it,
/// which never waits for it, exits).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .is_ok_and(|status| !status.lines().any(|l| l.starts_with("State:") && l.contains("zombie")))
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn parent(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("PPid:")).and_then(|v| v.trim().parse().ok())
}

/// The process that is PID 1 of a PID namespace below `ancestor`: the switch's systemd.
fn namespace_init_below(ancestor: u32) -> Option<u32> {
    let nspid_of = |pid: u32| -> Option<Vec<String>> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let nspid = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
        Some(nspid.split_whitespace().map(str::to_owned).collect())
    };
    // Exactly one namespace below nspawn's: the containers inside the switch are PID 1 of
    // namespaces deeper down, and after a PID wrap-around they come first in /proc.
    let depth = nspid_of(ancestor)?.len() + 1;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Some(ids) = nspid_of(pid) else { continue };
        if ids.len() != depth || ids.last().map(String::as_str) != Some("1") {
            continue;
        }
        let mut cursor = parent(pid);
        for _ in 0..8 {
            match cursor {
                Some(p) if p == ancestor => return Some(pid),
                Some(p) if p > 1 => cursor = parent(p),
                _ => break,
            }
        }
    }
    None
}

impl Switch {
    pub fn new(name: &str) -> Self {
        // Outside the checkout: the checkout is bound into the switch, and a machine inside it
        // would see its own mounts (and fail to unmount them at power-off).
        Self { name: name.to_owned(), dir: PathBuf::from(MACHINES_DIR).join(name) }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    pub fn netns(&self) -> String {
        format!("soniclet-{}", self.name)
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("nspawn.log")
    }

    fn installed_id(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join("rootfs.id")).ok()
    }

    /// Whether the machine was installed from this rootfs.
    pub fn is_current(&self, rootfs: &Rootfs) -> bool {
        self.installed_id().as_deref() == Some(rootfs.id.as_str()) && self.root().is_dir()
    }

    /// The switch's PID 1 while it runs.
    pub fn leader(&self) -> Option<u32> {
        let nspawn = read_pid(&self.dir.join("nspawn.pid")).filter(|p| alive(*p))?;
        read_pid(&self.dir.join("leader.pid")).filter(|p| alive(*p) && namespace_init_below(nspawn) == Some(*p))
    }

    /// Copies the rootfs into the machine unless it was installed from the same one. The
    /// machine's data (imported images, soniclet's state, the journal) starts over.
    pub fn install(&self, rootfs: &Rootfs) -> Result<()> {
        if self.is_current(rootfs) {
            return Ok(());
        }
        if self.leader().is_some() {
            bail!("the switch {} runs; stop it first", self.name);
        }
        eprintln!("vs: installing {} into {}", &rootfs.id[..12], self.root().display());
        std::fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join("root.tmp");
        for stale in [&tmp, &self.root()] {
            if stale.exists() {
                std::fs::remove_dir_all(stale).with_context(|| format!("cannot remove {}", stale.display()))?;
            }
        }
        run(Command::new("cp").args(["-a", "--reflink=auto"]).arg(&rootfs.dir).arg(&tmp))?;
        let unit = "etc/systemd/system/soniclet-vs-cgroups.service";
        std::fs::write(tmp.join(unit), CGROUPS_RW_UNIT)?;
        std::fs::create_dir_all(tmp.join("etc/systemd/system/sysinit.target.wants"))?;
        std::os::unix::fs::symlink(
            format!("/{unit}"),
            tmp.join("etc/systemd/system/sysinit.target.wants/soniclet-vs-cgroups.service"),
        )?;
        // The switch plays one ONIE installed: the installer's facts, for the factory config.
        std::fs::create_dir_all(tmp.join("host"))?;
        std::fs::write(tmp.join("host/machine.conf"), VS_MACHINE_CONF)?;
        std::fs::rename(&tmp, self.root())?;
        std::fs::write(self.dir.join("rootfs.id"), &rootfs.id)?;
        Ok(())
    }

    /// Removes the machine's disk (it must not run).
    pub fn uninstall(&self) -> Result<()> {
        if self.leader().is_some() {
            bail!("the switch {} runs; stop it first", self.name);
        }
        for path in [self.root(), self.dir.join("root.tmp")] {
            if path.exists() {
                std::fs::remove_dir_all(&path).with_context(|| format!("cannot remove {}", path.display()))?;
            }
        }
        let _ = std::fs::remove_file(self.dir.join("rootfs.id"));
        Ok(())
    }

    /// The machine's cgroup in every hierarchy: the switch's cgroup namespace root, so that
    /// switches beside each other never share a cgroup.
    fn cgroups(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(CGROUP_ROOT) else { return Vec::new() };
        let mut dirs: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join("cgroup.procs").exists())
            .map(|h| h.join("soniclet-vs").join(&self.name))
            .collect();
        dirs.sort();
        dirs
    }

    fn ensure_cgroups(&self) -> Result<()> {
        for dir in self.cgroups() {
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create cgroup {}", dir.display()))?;
            // A cpuset cgroup takes no process until it has CPUs and memory nodes.
            let parent = dir.parent().context("cgroup parent")?;
            let hierarchy = parent.parent().context("cgroup hierarchy")?;
            if hierarchy.join("cpuset.cpus").exists() {
                for level in [parent, dir.as_path()] {
                    for file in ["cpuset.cpus", "cpuset.mems"] {
                        std::fs::write(level.join(file), std::fs::read(hierarchy.join(file))?)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes the machine's cgroups once nothing runs in them (deepest first).
    fn remove_cgroups(&self) {
        fn remove(dir: &Path) {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        remove(&entry.path());
                    }
                }
            }
            let _ = std::fs::remove_dir(dir);
        }
        for dir in self.cgroups() {
            remove(&dir);
        }
    }

    pub fn ensure_netns(&self) -> Result<()> {
        let netns = self.netns();
        if !Path::new("/run/netns").join(&netns).exists() {
            run(Command::new("ip").args(["netns", "add", &netns]))?;
        }
        run(Command::new("ip").args(["-n", &netns, "link", "set", "lo", "up"]))
    }

    /// The default topology's hosts: network namespaces cabled to Ethernet0 and Ethernet4.
    /// The default switch's are `h1` and `h2`; another switch's are `<name>-h1`, `<name>-h2`.
    pub fn hosts(&self) -> Vec<(String, &'static str)> {
        let prefix = if self.name == "vs" { String::new() } else { format!("{}-", self.name) };
        vec![(format!("{prefix}h1"), "Ethernet0"), (format!("{prefix}h2"), "Ethernet4")]
    }

    fn has_port(&self, port: &str) -> bool {
        Command::new("ip")
            .args(["-n", &self.netns(), "link", "show", port])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Cables the hosts in: `eth1` in each host (no address; users and tests pick theirs),
    /// the other end in the switch under the port's name. Done before the switch boots, so
    /// syncd finds the ports' netdevs.
    fn ensure_topology(&self) -> Result<()> {
        for (i, (host, port)) in self.hosts().into_iter().enumerate() {
            if !Path::new("/run/netns").join(&host).exists() {
                run(Command::new("ip").args(["netns", "add", &host]))?;
            }
            run(Command::new("ip").args(["-n", &host, "link", "set", "lo", "up"]))?;
            if self.has_port(port) {
                continue;
            }
            let (outside, inside) =
                (format!("sv{}-{i}a", std::process::id()), format!("sv{}-{i}b", std::process::id()));
            run(Command::new("ip").args(["link", "add", &outside, "type", "veth", "peer", "name", &inside]))?;
            run(Command::new("ip").args(["link", "set", &inside, "netns", &self.netns(), "name", port]))?;
            run(Command::new("ip").args(["link", "set", &outside, "netns", &host, "name", "eth1"]))?;
            run(Command::new("ip").args(["-n", &host, "link", "set", "eth1", "up"]))?;
        }
        Ok(())
    }

    /// Cables `port` of this switch to `other_port` of `other`, port to port. A port the other
    /// switch's syncd stood in for (nothing was cabled to it) is replaced, and the other
    /// switch's ASIC restarted so that it finds the cable.
    pub fn link(&self, port: &str, other: &Switch, other_port: &str) -> Result<()> {
        self.ensure_netns()?;
        other.ensure_netns()?;
        if self.has_port(port) {
            bail!("{port} of switch {} is already cabled; stop the switch (--down) to recable it", self.name);
        }
        let mut restart_other = false;
        if other.has_port(other_port) {
            let peer = format!("{other_port}-nc");
            if !other.has_port(&peer) {
                bail!("{other_port} of switch {} is already cabled", other.name);
            }
            run(Command::new("ip").args(["-n", &other.netns(), "link", "del", other_port]))?;
            restart_other = other.leader().is_some();
        }
        let (a, b) = (format!("sl{}a", std::process::id()), format!("sl{}b", std::process::id()));
        run(Command::new("ip").args(["link", "add", &a, "type", "veth", "peer", "name", &b]))?;
        run(Command::new("ip").args(["link", "set", &a, "netns", &self.netns(), "name", port]))?;
        run(Command::new("ip").args(["link", "set", &b, "netns", &other.netns(), "name", other_port]))?;
        if restart_other {
            eprintln!("vs: {} restarts its ASIC (syncd) to find the cable on {other_port}", other.name);
            other.sh("soniclet restart syncd >/dev/null")?;
        }
        Ok(())
    }

    /// Boots the machine; returns its PID 1 once it exists (systemd then boots on its own).
    pub fn boot(&self) -> Result<u32> {
        if let Some(leader) = self.leader() {
            return Ok(leader);
        }
        self.ensure_netns()?;
        self.ensure_topology()?;
        self.ensure_cgroups()?;
        let log = std::fs::File::create(self.log())?;
        // nspawn starts in the machine's cgroup (`--keep-unit`), which becomes the root of the
        // switch's cgroup namespace.
        let join: String =
            self.cgroups().iter().map(|d| format!("echo $$ > '{}/cgroup.procs' && ", d.display())).collect();
        let child = Command::new("setsid")
            .args(["sh", "-c", &format!("{join}exec systemd-nspawn \"$@\""), "sh"])
            .arg("--quiet")
            .arg(format!("--directory={}", self.root().display()))
            .arg(format!("--machine=soniclet-{}", self.name))
            .arg("--hostname=sonic")
            .args(NSPAWN_FLAGS)
            .arg(format!("--network-namespace-path=/run/netns/{}", self.netns()))
            .arg(format!("--bind={}", project_root().display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start systemd-nspawn")?;
        let nspawn = child.id();
        std::fs::write(self.dir.join("nspawn.pid"), nspawn.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(leader) = namespace_init_below(nspawn) {
                std::fs::write(self.dir.join("leader.pid"), leader.to_string())?;
                return Ok(leader);
            }
            if !alive(nspawn) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        bail!("the switch did not start; see {}", self.log().display())
    }

    /// `bash -c SCRIPT` inside the switch, from the caller's directory (the checkout is bound
    /// at the same path), with a clean environment.
    pub fn command(&self, script: &str) -> Result<Command> {
        let leader = self
            .leader()
            .with_context(|| format!("the switch {} is not running: start it with `cargo xtask vs`", self.name))?;
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let term = std::env::var("TERM").unwrap_or_else(|_| "dumb".to_owned());
        let mut cmd = Command::new("nsenter");
        cmd.arg("--target")
            .arg(leader.to_string())
            .arg("--all")
            .args(["--", "/usr/bin/env", "-i"])
            .arg(format!("PATH={PATH_INSIDE}"))
            .args(["HOME=/root", "LANG=C.UTF-8", "SYSTEMD_PAGER=cat", "PAGER=cat"])
            .arg(format!("TERM={term}"))
            .args(["/bin/bash", "-c"])
            .arg(format!("cd {} 2>/dev/null || cd /; {script}", shell_quote(&cwd.display().to_string())));
        Ok(cmd)
    }

    /// Runs SCRIPT inside; fails with its output when it fails.
    pub fn sh(&self, script: &str) -> Result<String> {
        let out = self.command(script)?.stderr(Stdio::piped()).output()?;
        if !out.status.success() {
            bail!("in the switch, `{script}` failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Waits until systemd finished booting, then until soniclet has every enabled service ready.
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        // Right after the spawn systemd does not answer yet ("offline"), and it re-executes
        // once its cgroup controllers are writable, which a waiting systemctl does not survive:
        // ask again, a few seconds at a time.
        loop {
            let left = deadline.saturating_duration_since(Instant::now()).as_secs().clamp(1, 5);
            let state = self.sh(&format!("timeout {left} systemctl is-system-running --wait 2>/dev/null || true"))?;
            match state.trim() {
                "running" | "degraded" => break,
                state if Instant::now() >= deadline => {
                    bail!("the switch did not finish booting (systemd says {state:?}); see {}", self.log().display())
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        let left = deadline.saturating_duration_since(Instant::now()).as_secs().max(1);
        self.sh(&format!("soniclet wait --timeout {left} >/dev/null"))?;
        Ok(())
    }

    /// Powers the switch off (its units stop every service), then removes its namespace.
    pub fn down(&self) -> Result<()> {
        let nspawn = read_pid(&self.dir.join("nspawn.pid")).filter(|p| alive(*p));
        if let Some(nspawn) = nspawn {
            if self.leader().is_some() {
                let _ = self.command("systemctl poweroff --no-block").map(|mut c| c.status());
            }
            let deadline = Instant::now() + Duration::from_secs(120);
            while alive(nspawn) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if alive(nspawn) {
                eprintln!("vs: the switch did not power off in time; killing it");
                // Killing its PID 1 ends every process of its PID namespace.
                if let Some(leader) = read_pid(&self.dir.join("leader.pid")).filter(|p| alive(*p)) {
                    let _ = Command::new("kill").args(["-KILL", &leader.to_string()]).status();
                }
                let _ = Command::new("kill").args(["-KILL", &nspawn.to_string()]).status();
                let deadline = Instant::now() + Duration::from_secs(10);
                while alive(nspawn) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        self.remove_cgroups();
        for file in ["nspawn.pid", "leader.pid"] {
            let _ = std::fs::remove_file(self.dir.join(file));
        }
        let _ = Command::new("ip").args(["netns", "del", &self.netns()]).stderr(Stdio::null()).status();
        for (host, _) in self.hosts() {
            let _ = Command::new("ip").args(["netns", "del", &host]).stderr(Stdio::null()).status();
        }
        Ok(())
    }
}
