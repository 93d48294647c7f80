//! journald's native protocol: one datagram per entry to `/run/systemd/journal/socket`.
//!
//! The log shim writes each line of a container's output here with the service's
//! `SYSLOG_IDENTIFIER` and `OBJECT_SYSTEMD_UNIT`, which `journalctl -u <svc>` matches for
//! entries sent by root: the output shows up under the service's unit although the shim runs
//! in containerd's cgroup. See systemd's `journal-native-protocol` documentation.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// syslog priorities the shim uses.
pub const PRIORITY_ERR: u8 = 3;
pub const PRIORITY_INFO: u8 = 6;

/// Encodes one entry. A value with a newline uses the binary form (name, newline, 64-bit
/// little-endian length, value); others `NAME=value`.
pub fn encode(fields: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::with_capacity(fields.iter().map(|(k, v)| k.len() + v.len() + 10).sum());
    for (name, value) in fields {
        out.extend_from_slice(name.as_bytes());
        if value.contains(&b'\n') {
            out.push(b'\n');
            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        } else {
            out.push(b'=');
        }
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

/// A connection to journald, when it runs.
#[derive(Debug)]
pub struct Journal {
    socket: UnixDatagram,
}

impl Journal {
    /// Connects to journald's socket; `None` when there is no journald (a developer box).
    pub fn connect(path: &Path) -> Option<Self> {
        let socket = UnixDatagram::unbound().ok()?;
        socket.connect(path).ok()?;
        Some(Self { socket })
    }

    pub fn send(&self, fields: &[(&str, &[u8])]) -> io::Result<()> {
        self.socket.send(&encode(fields)).map(|_| ())
    }
}

/// The daemon's own logs in the journal: `MESSAGE` reads as the terminal output does
/// (`starting service=swss generation=3`), and every field is also a journal field
/// (`journalctl -u soniclet SERVICE=swss`).
#[derive(Debug)]
pub struct JournalLayer {
    journal: Journal,
    identifier: String,
}

impl JournalLayer {
    /// `None` without journald.
    pub fn new(identifier: &str) -> Option<Self> {
        Some(Self { journal: Journal::connect(Path::new(JOURNAL_SOCKET))?, identifier: identifier.to_owned() })
    }
}

/// Fields this layer sets itself, which an event's fields must not replace.
const OWN_FIELDS: &[&str] =
    &["MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "CODE_FILE", "CODE_LINE", "TARGET", "MONOTONIC_USEC"];

/// A journal field name from a tracing field name: upper case, `[A-Z0-9_]`, not starting
/// with `_` (trusted fields) or a digit.
fn journal_field_name(name: &str) -> Option<String> {
    let upper: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).take(64).collect();
    let valid = upper.chars().next().is_some_and(|c| c.is_ascii_uppercase()) && !OWN_FIELDS.contains(&upper.as_str());
    valid.then_some(upper)
}

#[derive(Default)]
struct EventFields {
    message: String,
    fields: Vec<(&'static str, String)>,
}

impl tracing::field::Visit for EventFields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.fields.push((field.name(), value.to_owned()));
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.fields.push((field.name(), format!("{value:?}")));
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for JournalLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut visited = EventFields::default();
        event.record(&mut visited);
        let metadata = event.metadata();
        let priority = match *metadata.level() {
            tracing::Level::ERROR => "3",
            tracing::Level::WARN => "4",
            tracing::Level::INFO => "6",
            _ => "7",
        };
        let mut text = visited.message;
        for (name, value) in &visited.fields {
            text.push_str(&format!(" {name}={value}"));
        }
        let line = metadata.line().map(|l| l.to_string()).unwrap_or_default();
        // When the event happened, on the clock systemd's unit timestamps use: journald stamps
        // entries when it reads them, which may be after systemd acted on what followed.
        let monotonic = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| (t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000).to_string())
            .unwrap_or_default();
        let mut entry: Vec<(String, Vec<u8>)> = vec![
            ("MESSAGE".into(), text.into_bytes()),
            ("PRIORITY".into(), priority.into()),
            ("SYSLOG_IDENTIFIER".into(), self.identifier.clone().into_bytes()),
            ("TARGET".into(), metadata.target().into()),
            ("CODE_FILE".into(), metadata.file().unwrap_or_default().into()),
            ("CODE_LINE".into(), line.into_bytes()),
            ("MONOTONIC_USEC".into(), monotonic.into_bytes()),
        ];
        for (name, value) in visited.fields {
            if let Some(name) = journal_field_name(name) {
                entry.push((name, value.into_bytes()));
            }
        }
        let borrowed: Vec<(&str, &[u8])> = entry.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
        let _ = self.journal.send(&borrowed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names() {
        assert_eq!(journal_field_name("service").as_deref(), Some("SERVICE"));
        assert_eq!(journal_field_name("image.digest").as_deref(), Some("IMAGE_DIGEST"));
        assert_eq!(journal_field_name("_pid"), None);
        assert_eq!(journal_field_name("2x"), None);
        assert_eq!(journal_field_name("priority"), None, "own fields are not replaced");
    }

    #[test]
    fn events_carry_their_fields() {
        use tracing_subscriber::layer::SubscriberExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let server = UnixDatagram::bind(&path).unwrap();
        let layer = JournalLayer { journal: Journal::connect(&path).unwrap(), identifier: "soniclet".into() };
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(service = "swss", generation = 3, "starting");
        });
        let mut buf = vec![0u8; 4096];
        let n = server.recv(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.contains("MESSAGE=starting service=swss generation=3\n"), "{text}");
        assert!(text.contains("PRIORITY=4\n") && text.contains("SYSLOG_IDENTIFIER=soniclet\n"), "{text}");
        assert!(text.contains("SERVICE=swss\n") && text.contains("GENERATION=3\n"), "{text}");
    }

    #[test]
    fn plain_and_binary_fields() {
        let entry = encode(&[("MESSAGE", b"hello"), ("SYSLOG_IDENTIFIER", b"swss")]);
        assert_eq!(entry, b"MESSAGE=hello\nSYSLOG_IDENTIFIER=swss\n");
        let entry = encode(&[("MESSAGE", b"a\nb")]);
        let mut expected = b"MESSAGE\n".to_vec();
        expected.extend_from_slice(&3u64.to_le_bytes());
        expected.extend_from_slice(b"a\nb\n");
        assert_eq!(entry, expected);
    }

    #[test]
    fn datagrams_reach_a_listening_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let server = UnixDatagram::bind(&path).unwrap();
        let journal = Journal::connect(&path).unwrap();
        journal.send(&[("MESSAGE", b"line"), ("PRIORITY", b"6")]).unwrap();
        let mut buf = [0u8; 128];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"MESSAGE=line\nPRIORITY=6\n");
        assert!(Journal::connect(&dir.path().join("absent")).is_none());
    }
}
