//! Watching processes by pidfd: an exit wakes the watcher, no polling.
//!
//! The kernel makes a pidfd readable when its process exits (Linux 5.3+).

use std::os::fd::{FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A process to wait for.
#[derive(Debug)]
pub struct PidFd {
    fd: AsyncFd<OwnedFd>,
    pid: u32,
}

impl PidFd {
    /// Opens a pidfd for `pid`; fails if the process is gone.
    pub fn open(pid: u32) -> std::io::Result<Self> {
        let pid = libc::pid_t::try_from(pid).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new file descriptor or -1;
        // it reads and writes no memory of ours.
        #[allow(unsafe_code)]
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = i32::try_from(fd).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
        // SAFETY: `fd` was just returned by pidfd_open and is owned by nobody else.
        #[allow(unsafe_code)]
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: the AsyncFd owns `owned` from here on; an OwnedFd's descriptor stays open and
        // the same until it is dropped, which is what registration requires.
        #[allow(unsafe_code)]
        let registered = unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE) };
        let fd = registered.map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Self { fd, pid: pid as u32 })
    }

    /// Resolves when the process has exited.
    pub async fn exited(&self) {
        // Readable means exited; an error (the fd is broken) is as good as an exit here.
        let _ = self.fd.readable().await;
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wakes_when_the_process_exits() {
        let mut child = std::process::Command::new("sleep").arg("0.2").spawn().unwrap();
        let pidfd = PidFd::open(child.id()).unwrap();
        let started = std::time::Instant::now();
        tokio::time::timeout(std::time::Duration::from_secs(5), pidfd.exited()).await.unwrap();
        assert!(started.elapsed() >= std::time::Duration::from_millis(150));
        child.wait().unwrap();
        assert!(PidFd::open(u32::MAX).is_err());
    }
}
