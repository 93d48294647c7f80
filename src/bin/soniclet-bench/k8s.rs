//! `bench k8s`'s side: pods started and removed through CRI as the kubelet does (timed), and
//! a stand-in API server the daemon's Kubernetes task can report to, since no real one can be
//! had here. Synchronous: the kubelet player runs its own runtime.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::kubelet::{ContainerState, Kubelet, Pod};

/// The Kubernetes namespace of the benchmark's pods.
const NAMESPACE: &str = "sonic-bench";

/// Starts a pod and waits until its container runs; prints its ids and the time it took.
pub fn pod_start(leader: u32, name: &str, image: &str, script: &str, memory_limit: Option<i64>) {
    let mut kubelet = Kubelet::connect(leader, NAMESPACE);
    let started = Instant::now();
    let pod = kubelet.run_pod(name, image, script, memory_limit);
    kubelet.wait_for(&pod, ContainerState::ContainerRunning, Duration::from_secs(60));
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    println!("{}", serde_json::json!({"sandbox": pod.sandbox, "container": pod.container, "ms": ms}));
}

/// Stops and removes a pod, as the kubelet does when it is deleted.
pub fn pod_remove(leader: u32, sandbox: &str) {
    let mut kubelet = Kubelet::connect(leader, NAMESPACE);
    let pod = Pod { name: sandbox.to_owned(), sandbox: sandbox.to_owned(), container: String::new() };
    kubelet.remove(&pod);
}

/// The object an API server would answer for `path`: enough for a client to read it back.
fn answer_for(path: &str) -> serde_json::Value {
    if path.contains("/events") {
        serde_json::json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "bench", "namespace": "default"}})
    } else {
        serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "bench"}})
    }
}

/// One connection, HTTP/1.1 with keep-alive: every request is answered 200.
fn serve(stream: TcpStream, requests: &AtomicU64) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let path = request_line.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header)?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        requests.fetch_add(1, Ordering::Relaxed);
        let answer = answer_for(&path).to_string();
        write!(
            writer,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        )?;
    }
}

/// Answers every request on 127.0.0.1:`port`; prints how many it had, every ten seconds.
pub fn fake_apiserver(port: u16) {
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| panic!("cannot listen on {port}: {e}"));
    let requests = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&requests);
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_secs(10));
        eprintln!("fake-apiserver: {} requests", counter.load(Ordering::Relaxed));
    });
    for stream in listener.incoming().flatten() {
        let requests = Arc::clone(&requests);
        std::thread::spawn(move || {
            let _ = serve(stream, &requests);
        });
    }
}
