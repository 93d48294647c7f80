//! `os install URL`: the installer fetched over HTTP or HTTPS onto `/host`, as
//! sonic-installer downloads to `/host/downloaded-sonic-image`, then installed like a file.
//! A detached signature is fetched from `URL.sig` when the server has one. The only importer
//! of `ureq`; HTTPS trusts the switch's own CA store. Credentials in a URL never reach a
//! message or a log.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the download goes, on the SONiC-OS partition beside the images.
pub const DOWNLOAD: &str = "downloaded-image";

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: {message}")]
    Request { url: String, message: String },
    #[error("{url}: the server answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: the download broke off after {got} bytes: {source}")]
    Body { url: String, got: u64, source: std::io::Error },
    #[error("{url} is {needed} MiB and {dir} has {free} MiB free: `soniclet os cleanup` first")]
    NoRoom { url: String, dir: PathBuf, needed: u64, free: u64 },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// An installer named by URL rather than by path.
pub fn is_url(text: &str) -> bool {
    text.starts_with("http://") || text.starts_with("https://")
}

/// The URL without its `user:password@`, for messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

fn agent() -> ureq::Agent {
    let tls = ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::PlatformVerifier).build();
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        // A stalled server must not hold the install (and every other os command) forever; a
        // slow one may take its time: an hour is 60 KiB/s for a 220 MiB installer.
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_recv_body(Some(Duration::from_secs(3600)))
        .http_status_as_error(false)
        .tls_config(tls)
        .build()
        .into()
}

/// Fetches `url` to `dest` (and `url.sig` beside it, when there is one), written whole
/// and fsync'd; `free_mib` answers the room left where `dest` is. On any failure nothing is
/// left behind.
pub fn download(
    url: &str,
    dest: &Path,
    free_mib: &dyn Fn(&Path) -> Option<u64>,
    progress: &dyn Fn(String),
) -> Result<u64, FetchError> {
    let shown = redact(url);
    let sig = super::installer::signature_path(dest);
    remove(dest, &sig);
    let result = fetch_both(url, &shown, dest, &sig, free_mib, progress);
    if result.is_err() {
        remove(dest, &sig);
    }
    result
}

/// Removes a download and its signature.
pub fn remove(dest: &Path, sig: &Path) {
    for path in [dest, sig] {
        let _ = std::fs::remove_file(path);
    }
}

fn fetch_both(
    url: &str,
    shown: &str,
    dest: &Path,
    sig: &Path,
    free_mib: &dyn Fn(&Path) -> Option<u64>,
    progress: &dyn Fn(String),
) -> Result<u64, FetchError> {
    let agent = agent();
    let request_error = |e: ureq::Error| FetchError::Request { url: shown.to_owned(), message: e.to_string() };
    progress(format!("downloading {shown}"));
    let mut response = agent.get(url).call().map_err(request_error)?;
    let status = response.status().as_u16();
    if !(200..300).contains(&status) {
        return Err(FetchError::Status { url: shown.to_owned(), status });
    }
    let length: Option<u64> =
        response.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let dir = dest.parent().unwrap_or(Path::new("/"));
    if let (Some(length), Some(free)) = (length, free_mib(dir)) {
        // The image it holds is written beside it next: leave room for that too.
        let needed = (length >> 20) * 2 + 1;
        if needed > free {
            return Err(FetchError::NoRoom { url: shown.to_owned(), dir: dir.to_owned(), needed, free });
        }
    }
    let write_error = |source| FetchError::Write { path: dest.to_owned(), source };
    let mut file = std::fs::File::create(dest).map_err(write_error)?;
    let mut reader = response.body_mut().as_reader();
    let mut buf = vec![0u8; 1 << 20];
    let (mut got, mut shown_mib) = (0u64, 0u64);
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(FetchError::Body { url: shown.to_owned(), got, source }),
        };
        file.write_all(&buf[..n]).map_err(write_error)?;
        got += n as u64;
        if got >> 24 != shown_mib {
            shown_mib = got >> 24;
            let of = length.map(|l| format!(" of {}", l >> 20)).unwrap_or_default();
            progress(format!("downloading: {} MiB{of}", got >> 20));
        }
    }
    file.sync_all().map_err(write_error)?;
    progress(format!("downloaded {} MiB", got >> 20));
    let sig_url = format!("{url}.sig");
    let mut answer = agent.get(&sig_url).call().map_err(request_error)?;
    match answer.status().as_u16() {
        200..=299 => {
            let bytes = answer.body_mut().with_config().limit(64 * 1024).read_to_vec().map_err(request_error)?;
            crate::state::fsutil::atomic_write(sig, &bytes)
                .map_err(|source| FetchError::Write { path: sig.to_owned(), source })?;
            progress("downloaded its signature".to_owned());
        }
        404 | 410 => {}
        status => return Err(FetchError::Status { url: format!("{shown}.sig"), status }),
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::net::TcpListener;

    /// A real HTTP/1.1 server on loopback: each path answers its status and body, with a
    /// Content-Length that may claim more than it sends.
    fn serve(routes: Vec<(&'static str, u16, Vec<u8>, usize)>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap_or(0) <= 2 {
                        break;
                    }
                }
                let (status, body, claimed) = routes
                    .iter()
                    .find(|r| r.0 == path)
                    .map_or((404, Vec::new(), 0), |r| (r.1, r.2.clone(), r.3.max(r.2.len())));
                let head = format!("HTTP/1.1 {status} X\r\nContent-Length: {claimed}\r\nConnection: close\r\n\r\n");
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            }
        });
        format!("http://{address}")
    }

    fn quiet(_: String) {}

    #[test]
    fn an_installer_and_its_signature_are_fetched_whole() {
        let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let base = serve(vec![("/img", 200, payload.clone(), 0), ("/img.sig", 200, vec![7u8; 64], 0)]);
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join(DOWNLOAD);
        let said = std::cell::RefCell::new(Vec::new());
        let got = download(&format!("{base}/img"), &dest, &|_| Some(1 << 20), &|l| said.borrow_mut().push(l)).unwrap();
        assert_eq!(got, payload.len() as u64);
        assert_eq!(std::fs::read(&dest).unwrap(), payload);
        assert_eq!(std::fs::read(super::super::installer::signature_path(&dest)).unwrap(), vec![7u8; 64]);
        assert!(said.borrow().iter().any(|l| l == "downloaded 2 MiB"), "{:?}", said.borrow());
    }

    #[test]
    fn a_failed_download_names_the_url_and_leaves_nothing() {
        let base = serve(vec![
            ("/short", 200, vec![1u8; 1000], 5000),
            ("/big", 200, vec![1u8; 10], 900 << 20),
            ("/nosig", 200, vec![1u8; 10], 0),
            ("/nosig.sig", 500, Vec::new(), 0),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join(DOWNLOAD);
        let cases = [
            ("/missing", "answered 404"),
            ("/short", "broke off after 1000 bytes"),
            ("/big", "is 1801 MiB and"),
            ("/nosig", "/nosig.sig: the server answered 500"),
        ];
        for (path, want) in cases {
            let e = download(&format!("{base}{path}"), &dest, &|_| Some(1000), &quiet).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains(path), "{path}: {e}");
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "{path}: something was left");
        }
        let e = download("http://127.0.0.1:9/x", &dest, &|_| None, &quiet).unwrap_err();
        assert!(matches!(e, FetchError::Request { .. }), "{e}");
    }

    #[test]
    fn credentials_in_a_url_never_reach_a_message() {
        assert_eq!(redact("https://ops:s3cret@images.example/a@b"), "https://***@images.example/a@b");
        assert_eq!(redact("http://images.example/x"), "http://images.example/x");
        let e = download("http://ops:s3cret@127.0.0.1:9/x", Path::new("/nonexistent/d"), &|_| None, &quiet)
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cret"), "{e}");
    }
}
