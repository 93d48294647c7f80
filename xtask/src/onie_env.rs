//! The ONIE install environment under qemu, for the ONIE tier and `bench onie`.
//!
//! No ONIE build can be had here (ONIE downloads its toolchain when it builds), so this plays
//! what a NOS installer sees of ONIE's install mode (`xtask/onie-env/init`): a kernel and a
//! busybox initramfs with ONIE's installer tools, `/etc/machine.conf`, `onie-sysinfo`,
//! `onie-nos-mode` and the `onie_*` facts, running the installer it finds on a second virtual
//! disk as ONIE's USB discovery would. The target disk carries ONIE's GPT: `GRUB-BOOT` (BIOS)
//! or an EFI system partition (UEFI), `ONIE-BOOT`, and a vendor partition of random bytes that
//! must come out unchanged.
//!
//! qemu runs under TCG here (no KVM): every boot costs seconds, so callers keep them few.

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::kernel::{self, Kernel};
use crate::util::{ensure_packages, output, project_root, run};

/// Host tools the environment and its disks need.
pub const TOOLS: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("sgdisk", "gdisk"),
    ("partprobe", "parted"),
    ("mkfs.vfat", "dosfstools"),
    ("mke2fs", "e2fsprogs"),
    ("grub-install", "grub2-common"),
    ("grub-editenv", "grub-common"),
    ("efibootmgr", "efibootmgr"),
    ("/usr/lib/grub/i386-pc/modinfo.sh", "grub-pc-bin"),
    ("/usr/lib/grub/x86_64-efi/modinfo.sh", "grub-efi-amd64-bin"),
    ("/usr/share/OVMF/OVMF_CODE.fd", "ovmf"),
    ("mdir", "mtools"),
];

/// ONIE's installer tools, copied from the host with the libraries they link.
const ONIE_TOOLS: &[&str] = &[
    "/usr/sbin/sgdisk",
    "/usr/sbin/mke2fs",
    "/usr/sbin/mkfs.ext4",
    "/usr/sbin/blkid",
    "/usr/sbin/partprobe",
    "/usr/bin/partx",
    "/usr/sbin/grub-install",
    "/usr/bin/grub-editenv",
    "/usr/bin/efibootmgr",
];

const MODULES: &str =
    "virtio_pci\nvirtio_blk\ncrc32c_generic\next4\nvfat\nnls_cp437\nnls_ascii\nnls_utf8\nefivarfs\nloop\nsquashfs\n";

const ONIE_GUID: &str = "7412F7D5-A156-4B13-81DC-867174929325";

/// The firmware a machine boots with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    Bios,
    Uefi,
}

/// The environment: a kernel and its initramfs.
pub struct Env {
    pub kernel: Kernel,
    pub initrd: PathBuf,
}

fn dir() -> PathBuf {
    project_root().join("target/onie-env")
}

/// Builds the environment's initramfs (cached) around Debian's kernel.
pub fn build() -> Result<Env> {
    ensure_packages(TOOLS)?;
    let kernel = kernel::fetch()?;
    let src = project_root().join("xtask/onie-env");
    let read = |name: &str| std::fs::read(src.join(name)).with_context(|| format!("cannot read xtask/onie-env/{name}"));
    let files: Vec<kernel::InitramfsFile> = vec![
        ("init", read("init")?, 0o755),
        ("bin/onie-sysinfo", read("onie-sysinfo")?, 0o755),
        ("bin/onie-nos-mode", read("onie-nos-mode")?, 0o755),
        ("etc/onie-env-modules", MODULES.as_bytes().to_vec(), 0o644),
        ("etc/lsb-release", b"DISTRIB_ID=onie\nDISTRIB_RELEASE=2024.05\n".to_vec(), 0o644),
        ("etc/mke2fs.conf", std::fs::read("/etc/mke2fs.conf")?, 0o644),
    ];
    let mut trees: Vec<(&str, PathBuf)> = vec![
        ("usr/lib/grub/i386-pc", PathBuf::from("/usr/lib/grub/i386-pc")),
        ("usr/lib/grub/x86_64-efi", PathBuf::from("/usr/lib/grub/x86_64-efi")),
    ];
    let mut libraries = std::collections::BTreeSet::new();
    for tool in ONIE_TOOLS {
        trees.push((&tool[1..], PathBuf::from(tool)));
        let linked = output(Command::new("ldd").arg(tool))?;
        libraries.extend(linked.lines().filter_map(|l| {
            let path = l.split_whitespace().find(|w| w.starts_with('/'))?;
            Some(path.to_owned())
        }));
    }
    let libraries: Vec<String> = libraries.into_iter().collect();
    for library in &libraries {
        trees.push((&library[1..], PathBuf::from(library)));
    }
    let initrd = dir().join("initrd.img");
    std::fs::create_dir_all(dir())?;
    kernel::initramfs(&kernel, &initrd, &files, &trees, MODULES)?;
    Ok(Env { kernel, initrd })
}

/// A GPT partition of a disk image, in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub number: u32,
    pub name: String,
    pub start: u64,
    pub size: u64,
}

/// The partitions `sgdisk -p` lists.
pub fn partitions(disk: &Path) -> Result<Vec<Partition>> {
    let text = output(Command::new("sgdisk").arg("-p").arg(disk))?;
    let mut found = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(number) = fields.first().and_then(|f| f.parse::<u32>().ok()) else { continue };
        let (Some(start), Some(end)) = (fields.get(1), fields.get(2)) else { continue };
        let (start, end): (u64, u64) = (start.parse()?, end.parse()?);
        // Number, start, end, size, unit, code, name...
        let name = fields.get(6..).map(|n| n.join(" ")).unwrap_or_default();
        found.push(Partition { number, name, start: start * 512, size: (end - start + 1) * 512 });
    }
    Ok(found)
}

/// Copies a filesystem image into a disk image at `offset`.
fn write_at(disk: &Path, offset: u64, image: &Path) -> Result<()> {
    let mut out = std::fs::OpenOptions::new().write(true).open(disk)?;
    out.seek(SeekFrom::Start(offset))?;
    std::io::copy(&mut std::fs::File::open(image)?, &mut out)?;
    out.sync_all()?;
    Ok(())
}

/// A switch's disk as ONIE leaves it: ONIE's partitions, a vendor partition, free space.
/// Without `onie_boot`, the same disk with no ONIE-BOOT (a disk ONIE never installed).
pub fn target_disk(path: &Path, firmware: Firmware, size_mib: u64, onie_boot: bool) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("vars"));
    std::fs::File::create(path)?.set_len(size_mib << 20)?;
    let mut sgdisk = Command::new("sgdisk");
    sgdisk.arg("-o");
    match firmware {
        Firmware::Bios => sgdisk.args(["-n", "1:2048:+1M", "-t", "1:EF02", "-c", "1:GRUB-BOOT"]),
        Firmware::Uefi => sgdisk.args(["-n", "1:2048:+64M", "-t", "1:EF00", "-c", "1:EFI System"]),
    };
    if onie_boot {
        sgdisk.args(["-n", "2:0:+128M", "-t", &format!("2:{ONIE_GUID}"), "-c", "2:ONIE-BOOT"]);
    }
    sgdisk.args(["-n", "3:0:+16M", "-t", "3:8300", "-c", "3:VENDOR-DIAG"]).arg(path);
    run(sgdisk.stdout(Stdio::null()))?;
    let parts = partitions(path)?;
    let scratch = path.with_extension("fs");
    for part in &parts {
        let _ = std::fs::remove_file(&scratch);
        match part.name.as_str() {
            "EFI System" => {
                std::fs::File::create(&scratch)?.set_len(part.size)?;
                run(Command::new("mkfs.vfat").args(["-F", "32", "-n", "EFI"]).arg(&scratch).stdout(Stdio::null()))?;
                write_at(path, part.start, &scratch)?;
            }
            "ONIE-BOOT" => {
                // ONIE's files, as far as a NOS installer reads them: its GRUB chainload helper.
                let tree = path.with_extension("onie-boot");
                let _ = std::fs::remove_dir_all(&tree);
                std::fs::create_dir_all(tree.join("onie/grub.d"))?;
                std::fs::create_dir_all(tree.join("grub"))?;
                std::fs::write(tree.join("onie/grub.d/50_onie_grub"), ONIE_GRUB)?;
                std::fs::write(tree.join("onie/version"), "2024.05-onie-env\n")?;
                std::fs::File::create(&scratch)?.set_len(part.size)?;
                run(Command::new("mke2fs")
                    .args(["-q", "-F", "-t", "ext4", "-L", "ONIE-BOOT", "-d"])
                    .arg(&tree)
                    .arg(&scratch))?;
                write_at(path, part.start, &scratch)?;
                std::fs::remove_dir_all(&tree)?;
            }
            "VENDOR-DIAG" => {
                let mut seed = Sha256::digest(path.display().to_string().as_bytes()).to_vec();
                let mut out = std::fs::OpenOptions::new().write(true).open(path)?;
                out.seek(SeekFrom::Start(part.start))?;
                let mut written = 0;
                while written < part.size {
                    seed = Sha256::digest(&seed).to_vec();
                    out.write_all(&seed)?;
                    written += seed.len() as u64;
                }
            }
            _ => {}
        }
    }
    let _ = std::fs::remove_file(&scratch);
    Ok(())
}

/// What ONIE's `50_onie_grub` prints: the menu entry that chainloads ONIE.
const ONIE_GRUB: &str = "#!/bin/sh
# ONIE's GRUB helper for a NOS: prints the entry that chainloads ONIE.
cat <<'EOF'
menuentry ONIE {
    search --no-floppy --label --set=root ONIE-BOOT
    echo 'Loading ONIE ...'
    chainloader +1
}
EOF
";

/// The installer on a disk of its own, under `name`, as a USB stick would hold it.
pub fn usb_disk(path: &Path, installer: &Path, name: &str) -> Result<()> {
    usb_disk_files(path, &[(installer, name)])
}

/// Files on a disk of their own, each under its name.
pub fn usb_disk_files(path: &Path, files: &[(&Path, &str)]) -> Result<()> {
    let tree = path.with_extension("tree");
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::create_dir_all(&tree)?;
    let mut size = 64 << 20;
    for (file, name) in files {
        std::fs::copy(file, tree.join(name)).with_context(|| format!("cannot copy {}", file.display()))?;
        size += std::fs::metadata(file)?.len();
    }
    let _ = std::fs::remove_file(path);
    std::fs::File::create(path)?.set_len(size)?;
    run(Command::new("mke2fs").args(["-q", "-F", "-t", "ext4", "-L", "USB", "-d"]).arg(&tree).arg(path))?;
    std::fs::remove_dir_all(&tree)?;
    Ok(())
}

/// A qemu machine writing its serial console, and its second serial port (the tests'
/// probe), to files.
pub struct Machine {
    child: Child,
    pub console: PathBuf,
    pub probe: PathBuf,
    started: Instant,
}

fn firmware_args(cmd: &mut Command, firmware: Firmware, vars: &Path) -> Result<()> {
    if firmware == Firmware::Uefi {
        if !vars.exists() {
            std::fs::copy("/usr/share/OVMF/OVMF_VARS.fd", vars)?;
        }
        cmd.args(["-drive", "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE.fd"])
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,file={}", vars.display()));
    }
    Ok(())
}

impl Machine {
    /// Boots qemu. `kernel` boots a kernel directly (the ONIE environment, which ends qemu
    /// when it powers off or reboots); without it the firmware boots the first disk.
    pub fn start(
        name: &str,
        firmware: Firmware,
        disks: &[(&Path, bool)],
        kernel: Option<(&Env, &str)>,
    ) -> Result<Machine> {
        let console = dir().join(format!("{name}.console"));
        let probe = dir().join(format!("{name}.probe"));
        let _ = std::fs::remove_file(&console);
        let _ = std::fs::remove_file(&probe);
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args([
            "-machine", "q35", "-m", "2048", "-smp", "1", "-display", "none", "-monitor", "none", "-nic", "none",
        ])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-serial")
        .arg(format!("file:{}", probe.display()));
        // The firmware's NVRAM belongs to the machine, that is to its disk: the boot entry the
        // installer made is there when the disk boots.
        let vars = disks.first().map(|(d, _)| d.with_extension("vars")).unwrap_or_else(|| dir().join("vars"));
        firmware_args(&mut cmd, firmware, &vars)?;
        for (index, (disk, readonly)) in disks.iter().enumerate() {
            let ro = if *readonly { ",readonly=on" } else { "" };
            // The first disk is the one the firmware boots; OVMF keeps the boot entries that
            // lie on the devices qemu names in its boot order.
            // (A kernel qemu loads itself boots first, so then no disk has a boot index.)
            let boot = if kernel.is_none() { format!(",bootindex={index}") } else { String::new() };
            cmd.arg("-drive")
                .arg(format!("file={},if=none,id=disk{index},format=raw{ro}", disk.display()))
                .arg("-device")
                .arg(format!("virtio-blk-pci,drive=disk{index}{boot}"));
        }
        if let Some((env, append)) = kernel {
            cmd.arg("-kernel")
                .arg(env.kernel.vmlinuz())
                .arg("-initrd")
                .arg(&env.initrd)
                .arg("-append")
                .arg(format!("console=ttyS0,115200 panic=-1 {append}"))
                .arg("-no-reboot");
        }
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::inherit()).spawn()?;
        Ok(Machine { child, console, probe, started: Instant::now() })
    }

    /// The console, then what the probe said.
    pub fn console_text(&self) -> String {
        let read = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
        format!("{}\n{}", read(&self.console), read(&self.probe))
    }

    /// Waits until the console shows `marker` (answering the seconds since the start), the
    /// machine ends, or the timeout passes.
    pub fn wait_for(&mut self, marker: &str, timeout: Duration) -> Result<f64> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.console_text().contains(marker) {
                return Ok(self.started.elapsed().as_secs_f64());
            }
            if let Some(status) = self.child.try_wait()? {
                if self.console_text().contains(marker) {
                    return Ok(self.started.elapsed().as_secs_f64());
                }
                bail!("qemu ended ({status}) before {marker:?}; console: {}", self.console.display());
            }
            if Instant::now() >= deadline {
                bail!("no {marker:?} within {timeout:?}; console: {}", self.console.display());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for qemu to end by itself.
    pub fn wait_end(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.child.try_wait()?.is_none() {
            if Instant::now() >= deadline {
                bail!("qemu did not end within {timeout:?}; console: {}", self.console.display());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One run of the ONIE environment: the installer's exit status (None when none was found)
/// and the console.
#[derive(Debug)]
pub struct Install {
    pub exit: Option<i32>,
    pub console: String,
    pub secs: f64,
}

/// Boots the ONIE environment over `target` with the installer on `usb`, and waits for it to
/// power off.
pub fn install(env: &Env, name: &str, firmware: Firmware, target: &Path, usb: &Path, facts: &str) -> Result<Install> {
    let mut machine = Machine::start(name, firmware, &[(target, false), (usb, true)], Some((env, facts)))?;
    machine.wait_end(Duration::from_secs(600))?;
    let console = machine.console_text();
    let exit = console.lines().find_map(|l| l.trim().strip_prefix("ONIE-ENV: installer-exit ")).with_context(|| {
        format!("the ONIE environment printed no installer status; console: {}", machine.console.display())
    })?;
    let exit = exit.trim().parse::<i32>().ok();
    Ok(Install { exit, console, secs: machine.elapsed() })
}

/// Adds the test's probe to an installed image's overlay (it is the image's rw upper
/// directory, so the image itself is untouched): once systemd finished booting and soniclet
/// has every enabled service ready, it prints `soniclet status`, `systemctl` and the hostname
/// on the console, between markers.
pub fn add_probe(disk: &Path, version: &str) -> Result<()> {
    add_probe_script(disk, version, PROBE_SCRIPT)
}

/// The A/B probe: on each boot it acts for the operator by what image runs. On the first
/// image it `os install`s `good` from the USB disk and reboots; on `good`, once soniclet has
/// committed it, it installs `bad` and reboots; on `bad` it only says so (soniclet reboots
/// by itself at the trial's deadline); back on `good` it prints `os list` and is done. Each
/// new image gets the probe in its overlay (the images themselves are untouched).
pub fn add_ab_probe(disk: &Path, version: &str, good: &str, bad: &str) -> Result<()> {
    let script = AB_PROBE_SCRIPT.replace("@GOOD@", good).replace("@BAD@", bad);
    add_probe_script(disk, version, &script)
}

fn add_probe_script(disk: &Path, version: &str, script_text: &str) -> Result<()> {
    let part =
        partitions(disk)?.into_iter().find(|p| p.name == "SONiC-OS").context("the disk has no SONiC-OS partition")?;
    let mnt = dir().join("mnt");
    std::fs::create_dir_all(&mnt)?;
    let loop_dev = output(
        Command::new("losetup")
            .args(["--find", "--show", "--offset", &part.start.to_string(), "--sizelimit", &part.size.to_string()])
            .arg(disk),
    )?;
    let loop_dev = loop_dev.trim().to_owned();
    let result = (|| -> Result<()> {
        run(Command::new("mount").arg(&loop_dev).arg(&mnt))?;
        let rw = mnt.join(format!("image-{version}/rw"));
        let unit_dir = rw.join("etc/systemd/system");
        std::fs::create_dir_all(unit_dir.join("multi-user.target.wants"))?;
        std::fs::write(unit_dir.join("onie-env-probe.service"), PROBE_UNIT)?;
        let script = rw.join("usr/local/bin/onie-env-probe");
        std::fs::create_dir_all(script.parent().context("a directory")?)?;
        std::fs::write(&script, script_text)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
        let link = unit_dir.join("multi-user.target.wants/onie-env-probe.service");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/etc/systemd/system/onie-env-probe.service", link)?;
        Ok(())
    })();
    let _ = Command::new("umount").arg(&mnt).status();
    let _ = Command::new("losetup").args(["-d", &loop_dev]).status();
    result
}

const PROBE_UNIT: &str = "[Unit]
Description=The ONIE tier's probe: reports on the console once every service is ready
DefaultDependencies=no
After=basic.target

[Service]
Type=oneshot
ExecStart=/usr/local/bin/onie-env-probe
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
";

/// Says on the console how the boot goes while it waits (jobs, soniclet's last words), so a
/// boot that stalls tells why; then the report.
const PROBE_SCRIPT: &str = r#"#!/bin/sh
# The second serial port: the first one is the console, whose getty hangs up whoever else
# has it open.
exec >/dev/ttyS1 2>&1
up() { cut -d' ' -f1 /proc/uptime; }
while ! soniclet wait --timeout 30 >/dev/null 2>&1; do
    echo "PROBE: waiting $(up)"
    systemctl list-jobs --no-pager 2>&1 | head -8
    systemctl --failed --no-pager --plain 2>&1 | head -5
    journalctl -b --no-pager -n 6 -u soniclet -u containerd 2>&1
    [ "$(up | cut -d. -f1)" -lt 1200 ] || { echo "PROBE: not-ready"; break; }
done
soniclet wait --timeout 1 >/dev/null 2>&1 && echo "PROBE: ready $(up)"
echo PROBE: status-begin; soniclet status; echo PROBE: status-end
echo "PROBE: system $(systemctl is-system-running)"
echo "PROBE: swss $(systemctl is-active swss)"
echo PROBE: os-begin; soniclet os list --json; echo PROBE: os-end
echo "PROBE: hostname $(hostname)"
echo "PROBE: factory $(tr -d ' \n' < /etc/sonic/config_db.json | grep -o '"hwsku":"[^"]*"')"
echo "PROBE: watchdog $(cat /sys/class/watchdog/watchdog0/state 2>&1) $(systemctl show -p RuntimeWatchdogUSec --value)"
echo "PROBE: cmdline $(cat /proc/cmdline)"
cg=/sys/fs/cgroup
echo "PROBE: memory-min $(stat -fc %T $cg) $(cat $cg/sonic.slice/memory.min 2>&1) $(cat $cg/sonic.slice/sonic-swss.scope/memory.min 2>&1)"
echo PROBE: done
"#;

const AB_PROBE_SCRIPT: &str = r#"#!/bin/sh
exec >/dev/ttyS1 2>&1
up() { cut -d' ' -f1 /proc/uptime; }
good=image-@GOOD@
bad=image-@BAD@
booted=$(sed -n 's|.*loop=\(image-[^/]*\)/.*|\1|p' /proc/cmdline)
echo "PROBE: booted $booted $(up)"
if [ "$booted" = "$bad" ]; then
    echo "PROBE: on-trial $bad"
    sleep 60
    journalctl -b --no-pager -n 8 -u soniclet
    exit 0
fi
until soniclet wait --timeout 30 >/dev/null 2>&1; do
    echo "PROBE: waiting $(up)"
    [ "$(up | cut -d. -f1)" -lt 1200 ] || { echo "PROBE: not-ready"; exit 1; }
done
echo "PROBE: ready $booted $(up)"
carry_probe() {
    rw=/host/$1/rw
    mkdir -p "$rw/etc/systemd/system/multi-user.target.wants" "$rw/usr/local/bin"
    cp /etc/systemd/system/onie-env-probe.service "$rw/etc/systemd/system/"
    ln -sf /etc/systemd/system/onie-env-probe.service "$rw/etc/systemd/system/multi-user.target.wants/"
    cp /usr/local/bin/onie-env-probe "$rw/usr/local/bin/"
}
mkdir -p /mnt/usb
mount -o ro LABEL=USB /mnt/usb 2>/dev/null || mount -o ro /dev/vdb /mnt/usb
stage=$(cat /host/ab-stage 2>/dev/null)
case "$stage" in
"")
    soniclet os install /mnt/usb/installer-good --trial-deadline 600 && echo "PROBE: installed $good" || echo "PROBE: install-failed"
    soniclet os list
    carry_probe "$good"
    echo good > /host/ab-stage
    sync
    systemctl reboot
    ;;
good)
    i=0
    until soniclet os list --json | grep -q "\"default\": \"$good\""; do
        i=$((i + 1))
        [ $i -lt 120 ] || { echo "PROBE: not-committed"; soniclet os list; exit 1; }
        sleep 1
    done
    echo "PROBE: committed $good $(up)"
    soniclet os install /mnt/usb/installer-bad --trial-deadline 90 && echo "PROBE: installed $bad" || echo "PROBE: install-failed"
    carry_probe "$bad"
    echo bad > /host/ab-stage
    sync
    echo "PROBE: rebooting-into $bad $(up)"
    systemctl reboot
    ;;
bad)
    echo "PROBE: back $booted $(up)"
    echo PROBE: os-begin; soniclet os list --json; echo PROBE: os-end
    soniclet os list
    journalctl -b --no-pager -u soniclet | grep -i trial | tail -3
    echo PROBE: done
    ;;
esac
"#;

/// A second build and a broken one, each in a directory of its own.
fn ab_installers() -> Result<(crate::onie::Installer, crate::onie::Installer)> {
    use crate::onie::{build_with, dir, Variant};
    let root = dir().join("ab");
    let good = build_with(Some("ab-good"), Variant::Rootfs, None, &root.join("good")).context("the second build")?;
    let bad =
        build_with(Some("ab-bad"), Variant::NeverReady, None, &root.join("bad")).context("the never-ready build")?;
    Ok((good, bad))
}

/// What one A/B run saw: the consoles, and seconds since the disk's qemu started at the bad
/// image's boot and back on the good image ready.
pub struct AbRun {
    #[cfg_attr(not(test), expect(dead_code, reason = "the tier's test reads it; the benchmark only times"))]
    pub console: String,
    pub bad_booted: f64,
    pub back: f64,
}

/// Installs `installer` from ONIE on a fresh disk at `scratch`, then lets the A/B probe
/// drive the switch: a second build installed, rebooted and committed; a broken one
/// installed and rebooted, and the switch back on the good one by itself.
pub fn ab(env: &Env, installer: &Path, version: &str, name: &str, scratch: &Path) -> Result<AbRun> {
    let (good, bad) = ab_installers()?;
    let disk = scratch.with_extension("disk");
    let onie_usb = scratch.with_extension("onie-usb");
    target_disk(&disk, Firmware::Bios, 6144, true)?;
    usb_disk(&onie_usb, installer, "onie-installer-x86_64")?;
    let run = install(env, name, Firmware::Bios, &disk, &onie_usb, "")?;
    let _ = std::fs::remove_file(&onie_usb);
    if run.exit != Some(0) {
        bail!("the ONIE install exited {:?}; console: {}", run.exit, dir().join(format!("{name}.console")).display());
    }
    add_ab_probe(&disk, version, "ab-good", "ab-bad")?;
    let usb = scratch.with_extension("usb");
    usb_disk_files(&usb, &[(&good.path, "installer-good"), (&bad.path, "installer-bad")])?;
    let mut machine = Machine::start(&format!("{name}-boot"), Firmware::Bios, &[(&disk, false), (&usb, true)], None)?;
    let mut step = |marker: &str| machine.wait_for(marker, Duration::from_secs(900));
    step("PROBE: installed image-ab-good")?;
    step("PROBE: committed image-ab-good")?;
    step("PROBE: installed image-ab-bad")?;
    let bad_booted = step("PROBE: booted image-ab-bad")?;
    let back = step("PROBE: back image-ab-good")?;
    step("PROBE: done")?;
    let console = machine.console_text();
    drop(machine);
    let _ = std::fs::remove_file(&usb);
    let _ = std::fs::remove_file(&disk);
    Ok(AbRun { console, bad_booted, back })
}
