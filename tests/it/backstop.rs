//! The trial's backstop script (`systemd/soniclet-trial-backstop`), run by the real `sh`
//! over a host tree, with `systemctl` in its PATH replaced by one that records what it was
//! asked: it reboots an image on trial that soniclet did not decide in time, recording why,
//! and leaves every other boot alone.

use std::path::{Path, PathBuf};
use std::process::Command;

struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new(grubenv: &str, booted: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("host/grub")).unwrap();
        std::fs::create_dir_all(root.join("host/image-2")).unwrap();
        std::fs::write(root.join("host/grub/grubenv"), grubenv).unwrap();
        std::fs::write(root.join("cmdline"), format!("root=UUID=1 rw loop={booted}/fs.squashfs panic=10\n")).unwrap();
        std::fs::create_dir_all(root.join("bin")).unwrap();
        let systemctl = root.join("bin/systemctl");
        std::fs::write(
            &systemctl,
            format!(
                "#!/bin/sh\necho \"$@\" >> {}\n[ \"$1\" = is-active ] && echo failed\nexit 0\n",
                root.join("asked").display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&systemctl, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn run(&self) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/soniclet-trial-backstop");
        let out = Command::new("sh")
            .arg(script)
            .env("SONICLET_HOST", self.path("host"))
            .env("SONICLET_CMDLINE", self.path("cmdline"))
            .env("SONICLET_TRIAL_GRACE", "0")
            .env("PATH", format!("{}:/usr/bin:/bin", self.path("bin").display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn asked(&self) -> String {
        std::fs::read_to_string(self.path("asked")).unwrap_or_default()
    }
}

#[test]
#[ignore = "needs the integration tier (`sh`, coreutils): `cargo xtask ci` runs it"]
fn an_image_on_trial_that_soniclet_did_not_decide_is_rebooted_with_the_reason_recorded() {
    let host = Host::new("# GRUB Environment Block\nsoniclet_trial=image-2\nsoniclet_trial_deadline=0\n", "image-2");
    let said = host.run();
    assert!(said.contains("watching the trial of image-2"), "{said}");
    assert!(host.asked().lines().any(|l| l == "reboot"), "asked: {}", host.asked());
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(host.path("host/image-2/trial.json")).unwrap()).unwrap();
    assert_eq!(record["result"], "failed");
    let reason = record["reason"].as_str().unwrap();
    assert!(
        reason.contains("neither committed nor failed") && reason.contains("soniclet.service was failed"),
        "{reason}"
    );
    assert!(record["at"].as_u64().unwrap() > 0);
}

#[test]
#[ignore = "needs the integration tier (`sh`, coreutils): `cargo xtask ci` runs it"]
fn soniclets_own_failure_record_is_kept_when_the_backstop_reboots() {
    let host = Host::new("soniclet_trial=image-2\nsoniclet_trial_deadline=0\n", "image-2");
    let own = r#"{"result": "failed", "reason": "not healthy within its trial's deadline", "at": 1}"#;
    std::fs::write(host.path("host/image-2/trial.json"), own).unwrap();
    host.run();
    assert!(host.asked().lines().any(|l| l == "reboot"));
    assert_eq!(std::fs::read_to_string(host.path("host/image-2/trial.json")).unwrap(), own);
}

#[test]
#[ignore = "needs the integration tier (`sh`, coreutils): `cargo xtask ci` runs it"]
fn a_settled_boot_or_another_image_than_the_one_on_trial_is_left_alone() {
    for (grubenv, booted) in [
        ("saved_entry=image-1\n", "image-1"),
        // Installed, not booted yet; or the switch fell back already.
        ("saved_entry=image-1\nsoniclet_trial=image-2\nsoniclet_trial_deadline=0\n", "image-1"),
    ] {
        let host = Host::new(grubenv, booted);
        assert_eq!(host.run(), "", "{grubenv:?} booted {booted}");
        assert_eq!(host.asked(), "", "{grubenv:?} booted {booted}");
        assert!(!host.path("host/image-2/trial.json").exists());
    }
}
