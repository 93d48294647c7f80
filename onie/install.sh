#!/bin/sh
# soniclet's NOS installer, run by the self-extracting header from the unpacked payload
# (the current directory). Under ONIE it finds the disk by its ONIE-BOOT partition, replaces
# the old SONiC-OS partition (or makes one in the largest free block), puts the image there in
# SONiC's layout and installs GRUB for legacy BIOS or UEFI. It touches no other partition.
#
# It runs in ONIE's busybox: POSIX sh, no bash. Every failure is one line on stderr naming
# the cause, a non-zero exit, and no half-made partition left behind.
#
# Exit codes: 0 installed; 1 bad environment or input; 2 the platform is not supported;
# 3 no ONIE-BOOT; 4 too little room; 5 a partitioning, mkfs or copy step failed;
# 6 GRUB could not be installed.

set -u

version=$(cat installer/version)
image="image-$version"
say() { echo "soniclet-installer: $*"; }
fail() {
    code=$1
    shift
    echo "soniclet-installer: error: $*" >&2
    exit "$code"
}

# ---- ONIE's facts: the environment first, then machine.conf, then onie-sysinfo ----------
if [ -r /etc/machine.conf ]; then
    # ONIE's own file: only its onie_* assignments are taken, and none overrides the
    # environment ONIE exported.
    eval "$(grep -E '^onie_[a-z_]+=' /etc/machine.conf | sed -e 's/^\(onie_[a-z_]*\)=\(.*\)$/: ${\1:=\2}/')"
fi
sysinfo() { command -v onie-sysinfo >/dev/null 2>&1 && onie-sysinfo "$1" 2>/dev/null; }
: "${onie_platform:=$(sysinfo -p)}"
: "${onie_machine:=$(sysinfo -m)}"
: "${onie_arch:=$(sysinfo -a)}"
: "${onie_serial_num:=$(sysinfo -s)}"
: "${onie_eth_addr:=$(sysinfo -e)}"
[ -n "${onie_platform:-}" ] || fail 1 "ONIE gives no onie_platform (not in the environment, /etc/machine.conf or onie-sysinfo -p)"

if ! grep -qx "$onie_platform" installer/platforms; then
    if [ "${SONICLET_INSTALL_FORCE:-}" = "1" ]; then
        say "warning: platform $onie_platform is not one this image lists; installing anyway (SONICLET_INSTALL_FORCE=1)"
    else
        fail 2 "platform $onie_platform is not supported by this image (it supports: $(tr '\n' ' ' < installer/platforms)); set SONICLET_INSTALL_FORCE=1 to install anyway"
    fi
fi
say "installing SONiC-OS $version on $onie_platform"

# ---- The disk: the one with ONIE-BOOT -------------------------------------------------
onie_guid="7412F7D5-A156-4B13-81DC-867174929325"
disk=""
onie_part=""
for block in /sys/block/*; do
    name=${block##*/}
    case "$name" in loop* | ram* | sr* | fd* | zram*) continue ;; esac
    [ -b "/dev/$name" ] || continue
    for n in $(sgdisk -p "/dev/$name" 2>/dev/null | awk '$1 ~ /^[0-9]+$/ { print $1 }'); do
        info=$(sgdisk -i "$n" "/dev/$name" 2>/dev/null)
        if echo "$info" | grep -qi "GUID code: $onie_guid" || echo "$info" | grep -q "^Partition name: 'ONIE-BOOT'"; then
            disk="/dev/$name"
            onie_part=$n
            break 2
        fi
    done
done
[ -n "$disk" ] || fail 3 "no disk has an ONIE-BOOT partition (GPT type $onie_guid or name ONIE-BOOT): this is not an ONIE switch, or ONIE's partition is gone"
say "install disk $disk (ONIE-BOOT is partition $onie_part)"
part_dev() {
    case "$1" in *[0-9]) echo "${1}p$2" ;; *) echo "$1$2" ;; esac
}

# ---- The old NOS partition goes (never one in use), then ours is made ------------------
for n in $(sgdisk -p "$disk" | awk '$1 ~ /^[0-9]+$/ { print $1 }'); do
    label=$(sgdisk -i "$n" "$disk" | sed -n "s/^Partition name: '\(.*\)'$/\1/p")
    case "$label" in SONiC-OS | ACS-OS) ;; *) continue ;; esac
    if grep -q "^$(part_dev "$disk" "$n") " /proc/mounts; then
        fail 1 "partition $n ($label) of $disk is mounted: it is in use, and is never replaced"
    fi
    say "removing the old NOS partition $n ($label)"
    sgdisk -d "$n" "$disk" >/dev/null || fail 5 "cannot delete partition $n of $disk"
done

image_bytes=$(($(wc -c < image/fs.squashfs) + $(wc -c < boot/vmlinuz) + $(wc -c < boot/initrd.img)))
# Two images side by side, and room for their overlays and containerd's stores.
need_mib=$((2 * image_bytes / 1048576 + 1536))
first=$(sgdisk -F "$disk")
last=$(sgdisk -E "$disk")
free_mib=0
if [ -n "$first" ] && [ -n "$last" ] && [ "$last" -gt "$first" ]; then
    free_mib=$(((last - first + 1) / 2048))
fi
[ "$free_mib" -ge "$need_mib" ] || fail 4 "the largest free block of $disk is $free_mib MiB, and the image needs $need_mib MiB: free some room or use a larger disk; nothing was changed"

used=$(sgdisk -p "$disk" | awk '$1 ~ /^[0-9]+$/ { print $1 }')
num=1
while echo "$used" | grep -qx "$num"; do num=$((num + 1)); done
sgdisk -n "$num:$first:$last" -t "$num:8300" -c "$num:SONiC-OS" "$disk" >/dev/null || fail 5 "cannot create the SONiC-OS partition on $disk"
made=$num
target=/mnt/soniclet-install
cleanup() {
    rc=$?
    if [ -n "${made:-}" ]; then
        umount "$target/boot/efi" 2>/dev/null
        umount "$target" 2>/dev/null
        sgdisk -d "$made" "$disk" >/dev/null 2>&1
        partx -d -n "$made" "$disk" 2>/dev/null || partprobe "$disk" 2>/dev/null
        echo "soniclet-installer: removed the half-made partition $made of $disk" >&2
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# ONIE-BOOT is mounted, so the kernel cannot re-read the whole table: the new partition is
# added alone (partx), where partprobe or a re-read is refused as busy.
reread=$(partx -a -n "$num" "$disk" 2>&1) || reread=$(partprobe "$disk" 2>&1) \
    || reread="$reread; $(blockdev --rereadpt "$disk" 2>&1)"
dev=$(part_dev "$disk" "$num")
i=0
while [ ! -b "$dev" ]; do
    i=$((i + 1))
    [ $i -le 50 ] || fail 5 "the kernel does not show $dev after partitioning $disk (${reread:-partprobe said nothing})"
    sleep 0.1
done
say "formatting $dev (SONiC-OS, $free_mib MiB)"
mkfs.ext4 -F -q -L SONiC-OS "$dev" >/dev/null 2>&1 || fail 5 "mkfs.ext4 failed on $dev"
mkdir -p "$target"
mount -t ext4 "$dev" "$target" || fail 5 "cannot mount $dev"
uuid=$(blkid -s UUID -o value "$dev" 2>/dev/null || blkid "$dev" | sed -n 's/.*UUID="\([^"]*\)".*/\1/p')
[ -n "$uuid" ] || fail 5 "cannot read the UUID of $dev"

# ---- SONiC's layout ---------------------------------------------------------------------
say "writing $image"
mkdir -p "$target/$image/boot" "$target/$image/rw" "$target/$image/work" "$target/$image/containerd" "$target/grub" \
    || fail 5 "cannot make $target/$image"
cp image/fs.squashfs "$target/$image/fs.squashfs" || fail 5 "cannot write $image/fs.squashfs (no space left on $dev?)"
cp boot/vmlinuz boot/initrd.img "$target/$image/boot/" || fail 5 "cannot write $image/boot (no space left on $dev?)"
set | grep '^onie_' | sed "s/='\(.*\)'$/=\1/" > "$target/machine.conf" || fail 5 "cannot write machine.conf"
touch "$target/$image/firstboot"

# ---- GRUB ---------------------------------------------------------------------------------
if [ -d /sys/firmware/efi/efivars ] || [ -d /sys/firmware/efi ]; then
    firmware=uefi
else
    firmware=bios
fi
onie_mnt=/mnt/onie-boot
# soniclet keeps what follows this line when it rewrites the menu.
onie_marker="# ONIE's entries, as ONIE gives them:"
onie_entry=""
if [ -r "$onie_mnt/onie/grub.d/50_onie_grub" ]; then
    onie_entry=$(sh "$onie_mnt/onie/grub.d/50_onie_grub" 2>/dev/null)
fi
if [ -z "$onie_entry" ]; then
    onie_entry="menuentry ONIE {
    search --no-floppy --label --set=root ONIE-BOOT
    echo 'Loading ONIE ...'
    chainloader +1
}"
fi
# The menu from the same templates `soniclet os` renders it from (installer/grub/).
args="console=tty0 console=ttyS0,115200n8 panic=10 net.ifnames=0"
{
    cat installer/grub/header.cfg
    sed -e "s|@VERSION@|$version|g" -e "s|@IMAGE@|$image|g" -e "s|@UUID@|$uuid|g" -e "s|@ARGS@|$args|g" \
        installer/grub/entry.cfg
    echo "$onie_marker"
    echo "$onie_entry"
} > "$target/grub/grub.cfg" || fail 5 "cannot write grub.cfg"
grub-editenv "$target/grub/grubenv" create || fail 6 "grub-editenv failed"
grub-editenv "$target/grub/grubenv" set "saved_entry=$image" || fail 6 "grub-editenv failed"
if [ "$firmware" = uefi ]; then
    esp=""
    for n in $(sgdisk -p "$disk" | awk '$1 ~ /^[0-9]+$/ { print $1 }'); do
        if sgdisk -i "$n" "$disk" | grep -qi "GUID code: C12A7328-F81F-11D2-BA4B-00A0C93EC93B"; then
            esp=$(part_dev "$disk" "$n")
            break
        fi
    done
    [ -n "$esp" ] || fail 6 "UEFI firmware, but $disk has no EFI system partition"
    mkdir -p "$target/boot/efi"
    mount "$esp" "$target/boot/efi" || fail 6 "cannot mount the EFI system partition $esp"
    grep -q efivarfs /proc/mounts || mount -t efivarfs efivarfs /sys/firmware/efi/efivars 2>/dev/null
    for old in $(efibootmgr 2>/dev/null | sed -n 's/^Boot\([0-9A-F]\{4\}\)\*\{0,1\} SONiC-OS.*/\1/p'); do
        efibootmgr -q -b "$old" -B >/dev/null 2>&1
    done
    grub-install --target=x86_64-efi --efi-directory="$target/boot/efi" --bootloader-id=SONiC-OS \
        --boot-directory="$target" --recheck >/dev/null 2>&1 || fail 6 "grub-install (x86_64-efi) failed"
    umount "$target/boot/efi"
else
    grub-install --target=i386-pc --boot-directory="$target" --recheck "$disk" >/dev/null 2>&1 \
        || fail 6 "grub-install (i386-pc) failed on $disk"
fi
# grub-install looks for the menu in <boot-directory>/grub: it is there already.

sync
umount "$target" || fail 5 "cannot unmount $dev"
sync
made=""
command -v onie-nos-mode >/dev/null 2>&1 && onie-nos-mode -s
say "SONiC-OS $version installed on $dev ($firmware)"
exit 0
