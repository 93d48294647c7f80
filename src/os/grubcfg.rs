//! `/host/grub/grub.cfg`, rendered from the templates the installer uses too
//! (`onie/grub/`): the header that spends the one-shot `next_entry`, an entry per image, then
//! ONIE's entries, kept as ONIE gave them (everything after [`ONIE_MARKER`]).

/// The installer writes this line before ONIE's entries; a rewrite keeps what follows it.
pub const ONIE_MARKER: &str = "# ONIE's entries, as ONIE gives them:";
const HEADER: &str = include_str!("../../onie/grub/header.cfg");
const ENTRY: &str = include_str!("../../onie/grub/entry.cfg");
/// ONIE's chainload entry, for a menu that has lost its own.
const ONIE_FALLBACK: &str =
    "menuentry ONIE {\n    search --no-floppy --label --set=root ONIE-BOOT\n    echo 'Loading ONIE ...'\n    chainloader +1\n}\n";

/// How each image's kernel starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootArgs {
    /// The SONiC-OS partition's filesystem UUID.
    pub uuid: String,
    /// Everything else on the command line (console, panic=, ...).
    pub args: String,
}

impl BootArgs {
    /// From the running kernel's command line, minus what GRUB and each entry set.
    pub fn from_cmdline(cmdline: &str) -> Option<Self> {
        let mut uuid = None;
        let mut rest = Vec::new();
        for arg in cmdline.split_whitespace() {
            match arg.split_once('=').map_or(arg, |(name, _)| name) {
                "root" => uuid = arg.strip_prefix("root=UUID=").map(str::to_owned),
                "BOOT_IMAGE" | "loop" | "loopfstype" | "rw" | "ro" | "initrd" => {}
                _ => rest.push(arg),
            }
        }
        Some(Self { uuid: uuid?, args: rest.join(" ") })
    }
}

/// ONIE's part of an existing menu.
pub fn onie_part(existing: &str) -> &str {
    existing.split_once(ONIE_MARKER).map_or(ONIE_FALLBACK, |(_, onie)| onie.trim_start_matches('\n'))
}

/// The whole menu: `images` are `(image-<version>, version)`, in menu order.
pub fn render(images: &[(String, String)], boot: &BootArgs, onie: &str) -> String {
    let mut cfg = String::from(HEADER);
    for (image, version) in images {
        cfg.push_str(
            &ENTRY
                .replace("@VERSION@", version)
                .replace("@IMAGE@", image)
                .replace("@UUID@", &boot.uuid)
                .replace("@ARGS@", &boot.args),
        );
    }
    cfg.push_str(ONIE_MARKER);
    cfg.push('\n');
    cfg.push_str(onie);
    if !cfg.ends_with('\n') {
        cfg.push('\n');
    }
    cfg
}

#[cfg(test)]
mod tests {
    use super::*;

    const CMDLINE: &str = "BOOT_IMAGE=/image-1/boot/vmlinuz root=UUID=0b1c rw loop=image-1/fs.squashfs \
        loopfstype=squashfs console=tty0 console=ttyS0,115200n8 panic=10 net.ifnames=0";

    #[test]
    fn the_menu_has_an_entry_per_image_with_the_running_kernels_arguments_and_keeps_onies_entries() {
        let boot = BootArgs::from_cmdline(CMDLINE).unwrap();
        assert_eq!(boot.uuid, "0b1c");
        assert_eq!(boot.args, "console=tty0 console=ttyS0,115200n8 panic=10 net.ifnames=0");
        let onie = "menuentry ONIE {\n    chainloader +1\n}\nfunction onie_menu { true }\n";
        let old = render(&[("image-1".into(), "1".into())], &boot, onie);
        let cfg = render(&[("image-2".into(), "2".into()), ("image-1".into(), "1".into())], &boot, onie_part(&old));
        assert!(cfg.starts_with(HEADER));
        for image in ["image-1", "image-2"] {
            let line = format!(
                "linux /{image}/boot/vmlinuz root=UUID=0b1c rw loop={image}/fs.squashfs loopfstype=squashfs console=tty0"
            );
            assert!(cfg.contains(&line), "{cfg}");
            assert!(cfg.contains(&format!("--id '{image}'")), "{cfg}");
        }
        assert!(cfg.find("image-2").unwrap() < cfg.find("--id 'image-1'").unwrap());
        assert!(cfg.ends_with(&format!("{ONIE_MARKER}\n{onie}")), "{cfg}");
        assert!(!cfg.contains('@'), "a placeholder is left: {cfg}");
    }

    #[test]
    fn a_menu_without_the_marker_gets_onies_chainload_entry_and_a_cmdline_without_a_uuid_is_refused() {
        assert_eq!(onie_part("menuentry x {}\n"), ONIE_FALLBACK);
        assert_eq!(BootArgs::from_cmdline("root=/dev/sda1 quiet"), None);
    }
}
