//! GRUB's environment block (`/host/grub/grubenv`): what `grub-editenv` writes and GRUB's
//! `load_env`/`save_env` read and rewrite in place. It is exactly 1024 bytes: a header line,
//! `name=value` lines (a backslash escapes a backslash or a newline in a value), then `#`
//! padding. soniclet reads it natively, so `os` needs no GRUB tools on the switch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The block's size; GRUB rewrites it in place, so it never grows.
pub const SIZE: usize = 1024;
const HEADER: &str = "# GRUB Environment Block\n";

#[derive(Debug, thiserror::Error)]
pub enum GrubEnvError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a GRUB environment block: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// The variables of a block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrubEnv {
    vars: BTreeMap<String, String>,
}

impl GrubEnv {
    pub fn load(path: &Path) -> Result<Self, GrubEnvError> {
        let bytes = std::fs::read(path).map_err(|source| GrubEnvError::Read { path: path.to_owned(), source })?;
        Self::parse(&bytes).map_err(|reason| GrubEnvError::Invalid { path: path.to_owned(), reason })
    }

    /// Parses a block; the reason names what is wrong.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() != SIZE {
            return Err(format!("it is {} bytes, not {SIZE}", bytes.len()));
        }
        let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8 at byte {}", e.valid_up_to()))?;
        let body = text.strip_prefix(HEADER).ok_or("the header line is missing")?;
        let mut vars = BTreeMap::new();
        let mut line = String::new();
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(escaped) => line.push(escaped),
                    None => return Err("it ends inside an escape".into()),
                },
                '\n' => {
                    if let Some((name, value)) = line.split_once('=') {
                        vars.insert(name.to_owned(), value.to_owned());
                    }
                    line.clear();
                }
                // Padding, or a comment line.
                '#' if line.is_empty() => {
                    for c in chars.by_ref() {
                        if c == '\n' {
                            break;
                        }
                    }
                }
                c => line.push(c),
            }
        }
        Ok(Self { vars })
    }

    /// The block's bytes; the reason says the variables do not fit.
    pub fn render(&self) -> Result<Vec<u8>, String> {
        let mut text = String::from(HEADER);
        for (name, value) in &self.vars {
            text.push_str(name);
            text.push('=');
            for c in value.chars() {
                if c == '\\' || c == '\n' {
                    text.push('\\');
                }
                text.push(c);
            }
            text.push('\n');
        }
        if text.len() > SIZE {
            return Err(format!("the variables need {} bytes, more than GRUB's {SIZE}", text.len()));
        }
        let mut bytes = text.into_bytes();
        bytes.resize(SIZE, b'#');
        Ok(bytes)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    pub fn set(&mut self, name: &str, value: &str) {
        self.vars.insert(name.to_owned(), value.to_owned());
    }

    pub fn remove(&mut self, name: &str) {
        self.vars.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `grub-editenv grubenv create; grub-editenv grubenv set saved_entry=image-1`
    /// writes.
    fn editenv_block() -> Vec<u8> {
        let mut block = b"# GRUB Environment Block\nsaved_entry=image-1\n".to_vec();
        block.resize(SIZE, b'#');
        block
    }

    #[test]
    fn reads_what_grub_editenv_writes_and_writes_it_back_byte_for_byte() {
        let env = GrubEnv::parse(&editenv_block()).unwrap();
        assert_eq!(env.get("saved_entry"), Some("image-1"));
        assert_eq!(env.get("next_entry"), None);
        assert_eq!(env.render().unwrap(), editenv_block());
    }

    #[test]
    fn escapes_round_trip_and_empty_values_read_as_unset() {
        let mut env = GrubEnv::default();
        env.set("reason", "a\\b\nc");
        env.set("next_entry", "");
        let again = GrubEnv::parse(&env.render().unwrap()).unwrap();
        assert_eq!(again.get("reason"), Some("a\\b\nc"));
        assert_eq!(again.get("next_entry"), None);
    }

    #[test]
    fn refuses_what_is_not_a_block_and_what_does_not_fit() {
        assert!(GrubEnv::parse(b"saved_entry=x\n").unwrap_err().contains("bytes"));
        let mut wrong = vec![b'#'; SIZE];
        wrong[0] = b'x';
        assert!(GrubEnv::parse(&wrong).unwrap_err().contains("header"));
        let mut big = GrubEnv::default();
        big.set("x", &"y".repeat(SIZE));
        assert!(big.render().unwrap_err().contains("more than"));
    }
}
