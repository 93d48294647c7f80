//! The ONIE tier: the installer `cargo xtask onie` built, run in the ONIE install environment
//! under qemu (`onie_env`), then the installed disk booted by its own GRUB. Root, qemu and
//! the built installer are needed: `cargo xtask ci` builds it and runs these with `--ignored`.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::onie::{self, INSTALLER};
use crate::onie_env::{self, Env, Firmware, Install, Machine, Partition};

struct Fixture {
    env: Env,
    installer: PathBuf,
    version: String,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let installer = onie::dir().join(INSTALLER);
        let version = std::fs::read_to_string(onie::dir().join(format!("{INSTALLER}.version")))
            .unwrap_or_else(|_| panic!("no built installer in {}: run `cargo xtask onie`", onie::dir().display()));
        let env = onie_env::build().expect("the ONIE environment builds");
        Fixture { env, installer, version: version.trim().to_owned() }
    })
}

fn scratch(name: &str) -> PathBuf {
    let dir = crate::util::project_root().join("target/onie-env/tests");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// SHA-256 of a partition's bytes.
fn digest(disk: &Path, partition: &Partition) -> anyhow::Result<String> {
    let mut file = std::fs::File::open(disk)?;
    file.seek(SeekFrom::Start(partition.start))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file.take(partition.size), &mut hasher)?;
    Ok(format!("{:x}", hasher.finalize()))
}

/// ONIE-BOOT's and the vendor partition's bytes, and the partition table.
fn untouchable(disk: &Path) -> Vec<(Partition, String)> {
    onie_env::partitions(disk)
        .unwrap()
        .into_iter()
        .filter(|p| p.name == "ONIE-BOOT" || p.name == "VENDOR-DIAG")
        .map(|p| {
            let digest = digest(disk, &p).unwrap();
            (p, digest)
        })
        .collect()
}

fn sonic_partitions(disk: &Path) -> Vec<Partition> {
    onie_env::partitions(disk).unwrap().into_iter().filter(|p| p.name == "SONiC-OS").collect()
}

/// Runs the installer (or a file in its place) in the ONIE environment over `disk`.
fn install(name: &str, firmware: Firmware, disk: &Path, installer: &Path, facts: &str) -> Install {
    let fixture = fixture();
    let usb = scratch(&format!("{name}.usb"));
    onie_env::usb_disk(&usb, installer, "onie-installer-x86_64").unwrap();
    let run = onie_env::install(&fixture.env, name, firmware, disk, &usb, facts).unwrap();
    let _ = std::fs::remove_file(&usb);
    run
}

fn installer_lines(run: &Install) -> String {
    run.console.lines().filter(|l| l.contains("soniclet-installer")).collect::<Vec<_>>().join("\n")
}

/// Install, then boot the disk by its own firmware and GRUB to every service ready (under
/// UEFI, by the boot entry the installer made in the machine's NVRAM).
fn install_and_boot(firmware: Firmware, name: &str) {
    let fixture = fixture();
    let disk = scratch(&format!("{name}.disk"));
    onie_env::target_disk(&disk, firmware, 6144, true).unwrap();
    let before = untouchable(&disk);
    let run = install(name, firmware, &disk, &fixture.installer, "");
    assert_eq!(run.exit, Some(0), "the install failed:\n{}", installer_lines(&run));
    assert!(run.console.contains("ONIE-ENV: nos-mode set"), "the installer did not call onie-nos-mode -s");
    assert_eq!(untouchable(&disk), before, "ONIE-BOOT or the vendor partition changed");
    assert_eq!(sonic_partitions(&disk).len(), 1, "{:?}", onie_env::partitions(&disk).unwrap());
    if firmware == Firmware::Uefi {
        assert_grub_on_the_esp(&disk);
    }
    onie_env::add_probe(&disk, &fixture.version).unwrap();
    let mut machine = Machine::start(&format!("{name}-boot"), firmware, &[(&disk, false)], None).unwrap();
    machine.wait_for("PROBE: done", Duration::from_secs(900)).unwrap();
    let console = machine.console_text();
    let line = |key: &str| {
        console
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("PROBE: {key} ")).map(str::to_owned))
            .unwrap_or_else(|| panic!("no PROBE: {key} on the console ({})", machine.console.display()))
    };
    assert!(console.contains("PROBE: ready"), "not every service became ready:\n{console}");
    assert_eq!(line("swss"), "active", "systemctl says swss is not active");
    assert!(line("cmdline").contains(&format!("loop=image-{}/fs.squashfs", fixture.version)));
    // The first boot's factory config, for the platform's HWSKU and ONIE's DHCP hostname.
    assert_eq!(line("hostname"), "leaf1", "the hostname is not the one ONIE's DHCP answer gave");
    assert_eq!(line("factory"), r#""hwsku":"Force10-S6000""#, "no factory config_db.json for the platform's HWSKU");
    // On cgroup v2 (a switch's systemd), the NOS's memory floors are the kernel's: the slice
    // holds every service's floor, swss's scope its own (64 MiB, the default).
    let floors: Vec<String> = line("memory-min").split_whitespace().map(str::to_owned).collect();
    assert_eq!(floors.first().map(String::as_str), Some("cgroup2fs"), "not cgroup v2: {floors:?}");
    let bytes = |i: usize| floors.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    assert_eq!(bytes(2), 64 << 20, "sonic-swss.scope's memory.min: {floors:?}");
    assert!(bytes(1) >= 12 * (64 << 20), "sonic.slice's memory.min holds every floor: {floors:?}");
    // The initramfs armed the watchdog and systemd feeds it: a hang reboots the switch.
    assert_eq!(line("watchdog"), "active 2min", "the watchdog is not armed and fed");
    let status: String = console
        .split("PROBE: status-begin")
        .nth(1)
        .and_then(|s| s.split("PROBE: status-end").next())
        .unwrap_or_default()
        .to_owned();
    for service in ["database", "swss", "syncd", "bgp"] {
        assert!(status.contains(service), "`soniclet status` does not list {service}:\n{status}");
    }
    // `soniclet os list` reads the grubenv the installer wrote, and the running kernel.
    let os = console.split("PROBE: os-begin").nth(1).and_then(|s| s.split("PROBE: os-end").next()).unwrap_or_default();
    let os: serde_json::Value =
        serde_json::from_str(os.trim()).unwrap_or_else(|e| panic!("`soniclet os list --json`: {e}:\n{os}"));
    let image = format!("image-{}", fixture.version);
    for key in ["current", "default", "next"] {
        assert_eq!(os[key], image.as_str(), "os list {key}: {os}");
    }
    let _ = std::fs::remove_file(&disk);
}

#[test]
#[ignore = "needs root, qemu and the built installer: `cargo xtask ci` runs it"]
fn an_onie_install_on_legacy_bios_boots_to_every_service_ready() {
    install_and_boot(Firmware::Bios, "bios");
}

#[test]
#[ignore = "needs root, qemu and the built installer: `cargo xtask ci` runs it"]
fn an_onie_install_on_uefi_boots_to_every_service_ready() {
    install_and_boot(Firmware::Uefi, "uefi");
}

/// GRUB's EFI image in `EFI/SONiC-OS/` on the EFI system partition.
fn assert_grub_on_the_esp(disk: &Path) {
    let esp = onie_env::partitions(disk).unwrap().into_iter().find(|p| p.name == "EFI System").unwrap();
    let listing = std::process::Command::new("mdir")
        .arg("-i")
        .arg(format!("{}@@{}", disk.display(), esp.start))
        .arg("::/EFI/SONiC-OS")
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).to_lowercase();
    assert!(listing.contains("grubx64"), "no GRUB in EFI/SONiC-OS on the ESP:\n{listing}");
}

/// A bad installer or a disk it cannot use: a non-zero exit, one line naming the cause, no
/// SONiC-OS partition left, ONIE-BOOT and the vendor partition byte for byte as they were.
#[test]
#[ignore = "needs root, qemu and the built installer: `cargo xtask ci` runs it"]
fn bad_installers_and_unusable_disks_change_nothing() {
    let fixture = fixture();
    let original = std::fs::read(&fixture.installer).unwrap();
    let truncated = scratch("truncated-installer");
    std::fs::write(&truncated, &original[..original.len() - 4096]).unwrap();
    let flipped = scratch("flipped-installer");
    let mut bytes = original.clone();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&flipped, &bytes).unwrap();
    drop((original, bytes));
    // (row, installer, facts, disk MiB, ONIE-BOOT present, exit, what the error names)
    let rows: [(&str, &Path, &str, u64, bool, i32, &str); 5] = [
        ("truncated", &truncated, "", 6144, true, 1, "damaged or truncated"),
        ("flipped", &flipped, "", 6144, true, 1, "damaged or truncated"),
        (
            "platform",
            &fixture.installer,
            "onie_env.platform=x86_64-acme_x9000-r0",
            6144,
            true,
            2,
            "x86_64-acme_x9000-r0",
        ),
        ("small", &fixture.installer, "", 1024, true, 4, "MiB"),
        ("no-onie-boot", &fixture.installer, "", 6144, false, 3, "ONIE-BOOT"),
    ];
    for (row, installer, facts, size, onie_boot, exit, names) in rows {
        let disk = scratch(&format!("{row}.disk"));
        onie_env::target_disk(&disk, Firmware::Bios, size, onie_boot).unwrap();
        let before = untouchable(&disk);
        let table = onie_env::partitions(&disk).unwrap();
        let run = install(row, Firmware::Bios, &disk, installer, facts);
        let said = installer_lines(&run);
        assert_eq!(run.exit, Some(exit), "{row}: exit status:\n{said}");
        let error: Vec<&str> = said.lines().filter(|l| l.contains("soniclet-installer: error:")).collect();
        assert_eq!(error.len(), 1, "{row}: one error line:\n{said}");
        assert!(error[0].contains(names), "{row}: the error names {names:?}: {}", error[0]);
        assert_eq!(onie_env::partitions(&disk).unwrap(), table, "{row}: the partition table changed");
        assert_eq!(untouchable(&disk), before, "{row}: ONIE-BOOT or the vendor partition changed");
        let _ = std::fs::remove_file(&disk);
    }
    // Forced, an unlisted platform installs.
    let disk = scratch("forced.disk");
    onie_env::target_disk(&disk, Firmware::Bios, 6144, true).unwrap();
    let run = install(
        "forced",
        Firmware::Bios,
        &disk,
        &fixture.installer,
        "onie_env.platform=x86_64-acme_x9000-r0 onie_env.force=1",
    );
    assert_eq!(run.exit, Some(0), "forced:\n{}", installer_lines(&run));
    let _ = std::fs::remove_file(&disk);
    let _ = std::fs::remove_file(&truncated);
    let _ = std::fs::remove_file(&flipped);
}

/// Installing over an installed NOS replaces its partition and nothing else.
#[test]
#[ignore = "needs root, qemu and the built installer: `cargo xtask ci` runs it"]
fn a_reinstall_replaces_the_old_nos_partition_only() {
    let fixture = fixture();
    let disk = scratch("reinstall.disk");
    onie_env::target_disk(&disk, Firmware::Bios, 6144, true).unwrap();
    let before = untouchable(&disk);
    let first = install("reinstall-1", Firmware::Bios, &disk, &fixture.installer, "");
    assert_eq!(first.exit, Some(0), "{}", installer_lines(&first));
    let old = sonic_partitions(&disk);
    let second = install("reinstall-2", Firmware::Bios, &disk, &fixture.installer, "");
    assert_eq!(second.exit, Some(0), "{}", installer_lines(&second));
    assert!(second.console.contains("removing the old NOS partition"), "{}", installer_lines(&second));
    let new = sonic_partitions(&disk);
    assert_eq!(new.len(), 1, "one SONiC-OS partition: {new:?}");
    assert_eq!(new[0].start, old[0].start, "it took the old partition's place");
    assert_eq!(untouchable(&disk), before, "ONIE-BOOT or the vendor partition changed");
    let _ = std::fs::remove_file(&disk);
}

fn ab_run(name: &str) -> onie_env::AbRun {
    let fixture = fixture();
    onie_env::ab(&fixture.env, &fixture.installer, &fixture.version, name, &scratch(name))
        .unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
#[ignore = "needs root, qemu and the built installer: `cargo xtask ci` runs it"]
fn a_second_build_is_committed_once_healthy_and_a_broken_one_falls_back_by_itself() {
    let run = ab_run("ab");
    let os =
        run.console.split("PROBE: os-begin").nth(1).and_then(|s| s.split("PROBE: os-end").next()).unwrap_or_default();
    let os: serde_json::Value =
        serde_json::from_str(os.trim()).unwrap_or_else(|e| panic!("`soniclet os list --json`: {e}:\n{os}"));
    assert_eq!(os["current"], "image-ab-good", "{os}");
    assert_eq!(os["default"], "image-ab-good", "the good build is committed: {os}");
    let images = os["images"].as_array().unwrap();
    assert_eq!(images.len(), 2, "two images at most: {os}");
    let bad = images.iter().find(|i| i["name"] == "image-ab-bad").unwrap_or_else(|| panic!("{os}"));
    assert_eq!(bad["trial"]["result"], "failed", "{os}");
    let reason = bad["trial"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("not healthy within its trial's deadline") && reason.contains("swss"), "{reason}");
    assert_eq!(bad["on_trial"], false, "{os}");
    let good = images.iter().find(|i| i["name"] == "image-ab-good").unwrap();
    assert_eq!(good["trial"]["result"], "committed", "{os}");
    assert!(run.back > run.bad_booted);
}
