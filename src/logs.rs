//! Container logs.
//!
//! The containerd shim runs `soniclet log-shim SPEC` as each task's logging process (the
//! `binary://` log URI) and hands it the task's stdout and stderr as fds 3 and 4. The shim,
//! not the daemon, owns that process, so logs keep flowing while the daemon restarts. Each
//! line is stored as `<RFC 3339 time> <stdout|stderr> <text>` in `<dir>/<container>.log`,
//! rotated by size like SONiC's docker json-file options (2 MiB, 5 files). Where journald
//! runs, each line also goes to the journal under the service's unit (`journalctl -u swss`).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::systemd::journal::{Journal, JOURNAL_SOCKET, PRIORITY_ERR, PRIORITY_INFO};

/// Longest line stored as one record; longer output is split.
const MAX_LINE: usize = 16 * 1024;

/// The log-shim argument: `<max-bytes>:<max-files>:<journal 0|1>:<dir>` (one value, because
/// the shim passes URI query pairs in no fixed order).
pub fn shim_arg(max_bytes: u64, max_files: u32, journal: bool, dir: &Path) -> String {
    format!("{max_bytes}:{max_files}:{}:{}", u8::from(journal), dir.display())
}

/// A parsed log-shim argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimSpec {
    pub max_bytes: u64,
    pub max_files: u32,
    pub journal: bool,
    pub dir: PathBuf,
}

impl ShimSpec {
    pub fn parse(spec: &str) -> Result<Self, LogError> {
        let bad = || LogError::BadArgument(spec.to_owned());
        let mut parts = spec.splitn(4, ':');
        let (Some(max_bytes), Some(max_files), Some(journal), Some(dir)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let journal = match journal {
            "0" => false,
            "1" => true,
            _ => return Err(bad()),
        };
        Ok(Self {
            max_bytes: max_bytes.parse().map_err(|_| bad())?,
            max_files: max_files.parse().map_err(|_| bad())?,
            journal,
            dir: PathBuf::from(dir),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("bad log-shim argument {0:?}: expected <max-bytes>:<max-files>:<journal 0|1>:<dir>")]
    BadArgument(String),
    #[error("CONTAINER_ID is not set: log-shim runs under the containerd shim only")]
    NoContainer,
    #[error("log file {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub fn log_path(dir: &Path, container: &str) -> PathBuf {
    dir.join(format!("{container}.log"))
}

fn rotated_path(dir: &Path, container: &str, n: u32) -> PathBuf {
    dir.join(format!("{container}.log.{n}"))
}

/// Appends records to a container's log, rotating by size.
struct RotatingLog {
    dir: PathBuf,
    container: String,
    max_bytes: u64,
    max_files: u32,
    file: File,
    size: u64,
}

impl RotatingLog {
    fn open(dir: &Path, container: &str, max_bytes: u64, max_files: u32) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let file = OpenOptions::new().create(true).append(true).open(log_path(dir, container))?;
        let size = file.metadata()?.len();
        Ok(Self { dir: dir.to_owned(), container: container.to_owned(), max_bytes, max_files, file, size })
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        for n in (1..self.max_files).rev() {
            let from = rotated_path(&self.dir, &self.container, n);
            if from.exists() {
                std::fs::rename(&from, rotated_path(&self.dir, &self.container, n + 1))?;
            }
        }
        let current = log_path(&self.dir, &self.container);
        if self.max_files > 1 {
            std::fs::rename(&current, rotated_path(&self.dir, &self.container, 1))?;
        } else {
            std::fs::remove_file(&current)?;
        }
        self.file = OpenOptions::new().create(true).append(true).open(&current)?;
        self.size = 0;
        Ok(())
    }

    fn write_record(&mut self, stream: &str, text: &[u8]) -> std::io::Result<()> {
        let stamp = humantime::format_rfc3339_micros(SystemTime::now());
        let mut record = Vec::with_capacity(text.len() + 48);
        record.extend_from_slice(format!("{stamp} {stream} ").as_bytes());
        record.extend_from_slice(text);
        if !text.ends_with(b"\n") {
            record.push(b'\n');
        }
        if self.size + record.len() as u64 > self.max_bytes && self.size > 0 {
            self.rotate()?;
        }
        self.file.write_all(&record)?;
        self.size += record.len() as u64;
        Ok(())
    }
}

/// The journal side of the shim: the service's identity on every entry.
struct JournalSink {
    journal: Journal,
    identifier: String,
    unit: String,
}

impl JournalSink {
    fn send(&self, stream: &str, line: &[u8]) {
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let priority = if stream == "stderr" { PRIORITY_ERR } else { PRIORITY_INFO };
        let priority = priority.to_string();
        // journald down or full: the file log still has the line.
        let _ = self.journal.send(&[
            ("MESSAGE", text),
            ("PRIORITY", priority.as_bytes()),
            ("SYSLOG_IDENTIFIER", self.identifier.as_bytes()),
            ("OBJECT_SYSTEMD_UNIT", self.unit.as_bytes()),
            ("CONTAINER_NAME", self.identifier.as_bytes()),
        ]);
    }
}

fn pump(input: File, stream: &'static str, log: Arc<Mutex<RotatingLog>>, journal: Option<Arc<JournalSink>>) {
    let mut reader = BufReader::with_capacity(64 * 1024, input);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut reader).take(MAX_LINE as u64).read_until(b'\n', &mut line);
        match read {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                {
                    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                    // A full disk must not kill the container's output pipe: drop the record.
                    let _ = log.write_record(stream, &line);
                }
                if let Some(journal) = &journal {
                    journal.send(stream, &line);
                }
            }
        }
    }
}

/// Entry point of `soniclet log-shim SPEC`, run by the containerd shim.
pub fn run_shim(spec: &str) -> Result<(), LogError> {
    let ShimSpec { max_bytes, max_files, journal, dir } = ShimSpec::parse(spec)?;
    let container = std::env::var("CONTAINER_ID").map_err(|_| LogError::NoContainer)?;
    let log = RotatingLog::open(&dir, &container, max_bytes, max_files)
        .map_err(|source| LogError::Io { path: log_path(&dir, &container), source })?;
    let log = Arc::new(Mutex::new(log));
    // soniclet names containers after their services.
    let journal = journal.then(|| Journal::connect(Path::new(JOURNAL_SOCKET))).flatten().map(|journal| {
        Arc::new(JournalSink {
            journal,
            unit: crate::systemd::units::unit_name(&container),
            identifier: container.clone(),
        })
    });

    // fds 3 and 4 are the task's stdout and stderr; fd 5 tells the shim we are ready.
    let open_fd = |fd: i32| File::open(format!("/proc/self/fd/{fd}"));
    let stdout = open_fd(3).map_err(|source| LogError::Io { path: "/proc/self/fd/3".into(), source })?;
    let stderr = open_fd(4).map_err(|source| LogError::Io { path: "/proc/self/fd/4".into(), source })?;
    if let Ok(mut ready) = OpenOptions::new().write(true).open("/proc/self/fd/5") {
        let _ = ready.write_all(b"R");
    }
    for fd in [3, 4, 5] {
        let _ = nix::unistd::close(fd);
    }
    let err_log = Arc::clone(&log);
    let err_journal = journal.clone();
    let err_thread = std::thread::spawn(move || pump(stderr, "stderr", err_log, err_journal));
    pump(stdout, "stdout", log, journal);
    let _ = err_thread.join();
    Ok(())
}

/// Splits a stored record into (timestamp, stream, text).
pub fn parse_record(record: &str) -> (&str, &str, &str) {
    let mut parts = record.splitn(3, ' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(ts), Some(stream @ ("stdout" | "stderr")), Some(text)) => (ts, stream, text),
        _ => ("", "", record),
    }
}

/// The last `n` records of a container's log, oldest first, across rotated files.
pub fn tail(dir: &Path, container: &str, n: usize) -> std::io::Result<Vec<String>> {
    let mut files: Vec<PathBuf> = (1..=64).map(|i| rotated_path(dir, container, i)).filter(|p| p.exists()).collect();
    files.reverse();
    files.push(log_path(dir, container));
    let mut last: VecDeque<String> = VecDeque::with_capacity(n.min(100_000));
    for path in files {
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for line in BufReader::new(file).split(b'\n') {
            let line = String::from_utf8_lossy(&line?).into_owned();
            if n == 0 {
                continue;
            }
            if last.len() == n {
                last.pop_front();
            }
            last.push_back(line);
        }
    }
    Ok(last.into())
}

/// Follows a container's log from its current end, across rotations.
#[derive(Debug)]
pub struct Follower {
    dir: PathBuf,
    container: String,
    inode: u64,
    offset: u64,
    partial: Vec<u8>,
}

impl Follower {
    pub fn from_end(dir: &Path, container: &str) -> Self {
        let (inode, offset) = std::fs::metadata(log_path(dir, container)).map(|m| (m.ino(), m.len())).unwrap_or((0, 0));
        Self { dir: dir.to_owned(), container: container.to_owned(), inode, offset, partial: Vec::new() }
    }

    fn read_from(&mut self, path: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        self.offset += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        while let Some(pos) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=pos).collect();
            out.push(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
        }
        Ok(())
    }

    /// New complete records since the last call.
    pub fn poll(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        let current = log_path(&self.dir, &self.container);
        let Ok(meta) = std::fs::metadata(&current) else { return out };
        if meta.ino() != self.inode {
            // Rotated: finish the old file (now `.1`) if it is the one we were reading.
            let old = rotated_path(&self.dir, &self.container, 1);
            if self.inode != 0 && std::fs::metadata(&old).map(|m| m.ino()).ok() == Some(self.inode) {
                let _ = self.read_from(&old, &mut out);
            }
            self.inode = meta.ino();
            self.offset = 0;
            self.partial.clear();
        } else if meta.len() < self.offset {
            self.offset = 0;
        }
        let _ = self.read_from(&current, &mut out);
        out
    }

    pub const INTERVAL: Duration = Duration::from_millis(200);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shim_spec_round_trip_and_errors() {
        let arg = shim_arg(2048, 5, true, Path::new("/var/log/soniclet"));
        let spec = ShimSpec::parse(&arg).unwrap();
        assert_eq!(spec, ShimSpec { max_bytes: 2048, max_files: 5, journal: true, dir: "/var/log/soniclet".into() });
        for bad in ["2048:5:/var/log", "x:5:0:/d", "1:2:yes:/d"] {
            assert!(ShimSpec::parse(bad).unwrap_err().to_string().contains(bad));
        }
    }

    #[test]
    fn rotation_keeps_the_newest_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RotatingLog::open(dir.path(), "swss", 4096, 3).unwrap();
        for i in 0..500 {
            log.write_record("stdout", format!("line {i}\n").as_bytes()).unwrap();
        }
        assert!(rotated_path(dir.path(), "swss", 1).exists());
        assert!(rotated_path(dir.path(), "swss", 3).exists());
        assert!(!rotated_path(dir.path(), "swss", 4).exists());
        let last = tail(dir.path(), "swss", 3).unwrap();
        let texts: Vec<&str> = last.iter().map(|r| parse_record(r).2).collect();
        assert_eq!(texts, ["line 497", "line 498", "line 499"]);
        assert!(std::fs::metadata(log_path(dir.path(), "swss")).unwrap().len() <= 4096);
    }

    #[test]
    fn follower_sees_new_lines_across_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RotatingLog::open(dir.path(), "bgp", 200, 2).unwrap();
        log.write_record("stdout", b"before").unwrap();
        let mut follower = Follower::from_end(dir.path(), "bgp");
        let mut seen = Vec::new();
        for i in 0..20 {
            log.write_record("stderr", format!("n{i}").as_bytes()).unwrap();
            seen.extend(follower.poll());
        }
        let texts: Vec<String> = seen.iter().map(|r| parse_record(r).2.to_owned()).collect();
        assert_eq!(texts, (0..20).map(|i| format!("n{i}")).collect::<Vec<_>>());
    }
}
