#!/bin/sh
# soniclet's NOS installer: this POSIX sh header, then a tar payload from byte
# @PAYLOAD_OFFSET@ on. ONIE runs it as it is; `soniclet os install` checks the same digest
# before it reads the payload. Nothing touches a disk before the payload's SHA-256 matches.
# Exit codes are install.sh's; 1 here means the file itself is bad or cannot be unpacked.
payload_offset=@PAYLOAD_OFFSET@
payload_sha256=@PAYLOAD_SHA256@
self=$0
fail() {
    echo "soniclet-installer: error: $*" >&2
    exit 1
}
command -v sha256sum >/dev/null 2>&1 || fail "sha256sum is missing from this environment"
echo "soniclet-installer: verifying the payload"
actual=$(tail -c +"$payload_offset" "$self" | sha256sum | cut -d' ' -f1)
[ "$actual" = "$payload_sha256" ] || fail "$self is damaged or truncated: its payload's SHA-256 is $actual, not $payload_sha256; nothing was changed"
work=${TMPDIR:-/tmp}/soniclet-installer.$$
rm -rf "$work" && mkdir -p "$work" || fail "cannot make $work"
tail -c +"$payload_offset" "$self" | tar -x -C "$work" || { rm -rf "$work"; fail "cannot unpack the payload into $work (is there room in memory?)"; }
(cd "$work" && sh installer/install.sh "$@")
status=$?
rm -rf "$work"
exit $status
