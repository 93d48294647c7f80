//! Detached ed25519 signatures of OS images, the only importer of `ed25519_dalek`. What is
//! signed is the payload's SHA-256 in a fixed sentence, so a signature is checked after the
//! digest without reading the image twice. Keys are the PEM files `openssl genpkey
//! -algorithm ed25519` writes (private) and `openssl pkey -pubout` derives (public), and the
//! signature is the 64 raw bytes `openssl pkeyutl -sign -rawin` writes.

use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use ed25519_dalek::{Signer, Verifier};

#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not an ed25519 {what} key in PEM: {reason}")]
    Key { path: PathBuf, what: &'static str, reason: String },
    #[error("the image is not signed: {path} is missing, and a signature is required")]
    Unsigned { path: PathBuf },
    #[error("{path} is not a signature (it is {len} bytes, not 64)")]
    Malformed { path: PathBuf, len: usize },
    #[error("the signature {path} does not match the image and the key: it was not signed by that key, or it was changed; nothing was changed")]
    Mismatch { path: PathBuf },
}

/// A key that verifies images.
#[derive(Debug, Clone)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

/// What is signed: the payload's digest, in words.
pub fn message(payload_sha256: &str) -> Vec<u8> {
    format!("soniclet OS image, payload sha256 {payload_sha256}\n").into_bytes()
}

fn read(path: &Path) -> Result<String, SignatureError> {
    std::fs::read_to_string(path).map_err(|source| SignatureError::Read { path: path.to_owned(), source })
}

impl PublicKey {
    pub fn load(path: &Path) -> Result<Self, SignatureError> {
        ed25519_dalek::VerifyingKey::from_public_key_pem(&read(path)?).map(Self).map_err(|e| SignatureError::Key {
            path: path.to_owned(),
            what: "public",
            reason: e.to_string(),
        })
    }
}

/// Checks `signature_file` against the payload digest.
pub fn verify(key: &PublicKey, payload_sha256: &str, signature_file: &Path) -> Result<(), SignatureError> {
    let bytes = match std::fs::read(signature_file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SignatureError::Unsigned { path: signature_file.to_owned() })
        }
        Err(source) => return Err(SignatureError::Read { path: signature_file.to_owned(), source }),
    };
    let raw: [u8; 64] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| SignatureError::Malformed { path: signature_file.to_owned(), len: bytes.len() })?;
    key.0
        .verify(&message(payload_sha256), &ed25519_dalek::Signature::from_bytes(&raw))
        .map_err(|_| SignatureError::Mismatch { path: signature_file.to_owned() })
}

/// Signs a payload digest with the private key at `key_path` (for `cargo xtask onie --sign`).
pub fn sign(key_path: &Path, payload_sha256: &str) -> Result<[u8; 64], SignatureError> {
    let key = ed25519_dalek::SigningKey::from_pkcs8_pem(&read(key_path)?).map_err(|e| SignatureError::Key {
        path: key_path.to_owned(),
        what: "private",
        reason: e.to_string(),
    })?;
    Ok(key.sign(&message(payload_sha256)).to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// openssl's own keys: the PEM forms operators make and keep.
    fn keys(dir: &Path) -> (PathBuf, PathBuf) {
        let (private, public) = (dir.join("key.pem"), dir.join("key.pub"));
        let run = |args: &[&str]| {
            let status = std::process::Command::new("openssl").args(args).status().expect("openssl runs");
            assert!(status.success(), "openssl {args:?}");
        };
        run(&["genpkey", "-algorithm", "ed25519", "-out", private.to_str().unwrap()]);
        run(&["pkey", "-in", private.to_str().unwrap(), "-pubout", "-out", public.to_str().unwrap()]);
        (private, public)
    }

    #[test]
    fn a_signature_verifies_with_its_key_and_not_with_another_or_another_digest() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = keys(dir.path());
        let digest = "ab".repeat(32);
        let sig = dir.path().join("image.sig");
        std::fs::write(&sig, sign(&private, &digest).unwrap()).unwrap();
        let key = PublicKey::load(&public).unwrap();
        verify(&key, &digest, &sig).unwrap();
        let e = verify(&key, &"cd".repeat(32), &sig).unwrap_err();
        assert!(matches!(e, SignatureError::Mismatch { .. }), "{e}");
        let other = tempfile::tempdir().unwrap();
        let (_, other_public) = keys(other.path());
        let e = verify(&PublicKey::load(&other_public).unwrap(), &digest, &sig).unwrap_err();
        assert!(matches!(e, SignatureError::Mismatch { .. }), "{e}");
    }

    #[test]
    fn openssl_signs_what_soniclet_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = keys(dir.path());
        let digest = "01".repeat(32);
        let message_file = dir.path().join("message");
        std::fs::write(&message_file, message(&digest)).unwrap();
        let sig = dir.path().join("image.sig");
        let status = std::process::Command::new("openssl")
            .args(["pkeyutl", "-sign", "-rawin", "-inkey"])
            .arg(&private)
            .arg("-in")
            .arg(&message_file)
            .arg("-out")
            .arg(&sig)
            .status()
            .unwrap();
        assert!(status.success());
        verify(&PublicKey::load(&public).unwrap(), &digest, &sig).unwrap();
    }

    #[test]
    fn a_missing_short_or_keyless_signature_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (_, public) = keys(dir.path());
        let key = PublicKey::load(&public).unwrap();
        let sig = dir.path().join("image.sig");
        assert!(matches!(verify(&key, "00", &sig).unwrap_err(), SignatureError::Unsigned { .. }));
        std::fs::write(&sig, [0u8; 10]).unwrap();
        let e = verify(&key, "00", &sig).unwrap_err();
        assert!(e.to_string().contains("10 bytes, not 64"), "{e}");
        std::fs::write(dir.path().join("bad.pub"), "not a key").unwrap();
        let e = PublicKey::load(&dir.path().join("bad.pub")).unwrap_err();
        assert!(e.to_string().contains("bad.pub is not an ed25519 public key"), "{e}");
    }
}
