//! Bad input: invalid manifests, corrupt archives, malformed API requests.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::support::{project_root, start_then_ready, test_manifest, wait_until, TestSwitch, SONICLET};

#[test]
#[ignore = "needs root, containerd, runc and redis-server: `cargo xtask ci` runs it"]
fn invalid_manifests_start_nothing_and_name_file_and_field() {
    let good = test_manifest("", &start_then_ready("0"));
    let bad = test_manifest("requires = [\"good\", \"ghost\"]\nstoptime = 3", "true")
        .replace("docker-teamd:latest\"", "docker-teamd:latest\"\ncapabilities = [\"NET_ADMINZ\"]");
    let sw = TestSwitch::new(&[("good", &good), ("bad", &bad)]);
    let mut child = sw.spawn_daemon();
    let mut status = None;
    assert!(wait_until(Duration::from_secs(20), || {
        status = child.try_wait().unwrap();
        status.is_some()
    }));
    assert_eq!(status.unwrap().code(), Some(78), "config errors exit with EX_CONFIG");
    let log = sw.daemon_log();
    assert!(log.contains("bad.toml") && log.contains("unknown field `stoptime`"), "{log}");
    assert!(sw.containers().is_empty(), "nothing was created");

    // The offline check says the same, per field once the file parses.
    let bad = test_manifest("requires = [\"good\", \"ghost\"]", "true")
        .replace("docker-teamd:latest\"", "docker-teamd:latest\"\ncapabilities = [\"NET_ADMINZ\"]");
    std::fs::write(sw.services.join("bad.toml"), bad).unwrap();
    let out = std::process::Command::new(SONICLET).args(["manifests", "check"]).arg(&sw.services).output().unwrap();
    assert_eq!(out.status.code(), Some(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml: service.requires: unknown service \"ghost\""), "{err}");
    assert!(err.contains("bad.toml: container.capabilities: unknown capability \"NET_ADMINZ\""), "{err}");
}

#[test]
#[ignore = "needs root, containerd, runc and redis-server: `cargo xtask ci` runs it"]
fn corrupt_and_foreign_archives_are_refused_and_leave_no_image() {
    let a = test_manifest("", &start_then_ready("0"));
    let mut sw = TestSwitch::new(&[("a", &a)]);
    sw.start_daemon();
    let original = std::fs::read(project_root().join("target/images/docker-teamd.tar")).unwrap();

    let truncated = sw.root().join("truncated.tar");
    std::fs::write(&truncated, &original[..original.len() * 2 / 3]).unwrap();
    let out = sw.cli(&["image", "import", truncated.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("truncated.tar"), "{err}");

    // Flip one byte in the middle of the largest blob: its digest no longer matches.
    let mut tampered = original.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0xff;
    let tampered_path = sw.root().join("tampered.tar");
    std::fs::write(&tampered_path, &tampered).unwrap();
    let out = sw.cli(&["image", "import", tampered_path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("digest"), "{}", String::from_utf8_lossy(&out.stderr));

    let out = sw.cli(&["image", "import", "/nonexistent/image.tar"]);
    assert_eq!(out.status.code(), Some(4));

    let images = sw.cli_ok(&["image", "ls", "--json"]);
    assert_eq!(images.trim(), "[]", "no half image is left: {images}");

    // The good archive still imports, and the waiting service starts.
    sw.import(&["docker-teamd"]);
    sw.wait_service("a", Duration::from_secs(30), |s| s["ready"] == true);
    let images: serde_json::Value = serde_json::from_str(&sw.cli_ok(&["image", "ls", "--json"])).unwrap();
    assert_eq!(images[0]["name"], "docker-teamd:latest");
    assert_eq!(images[0]["used_by"][0], "a");
}

fn raw_http(socket: &std::path::Path, request: &str) -> String {
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
#[ignore = "needs root, containerd, runc and redis-server: `cargo xtask ci` runs it"]
fn api_errors_are_clear_and_the_daemon_stays_up() {
    let a = test_manifest("", &start_then_ready("0"));
    let mut sw = TestSwitch::new(&[("a", &a)]);
    sw.start_daemon();
    sw.import(&["docker-teamd"]);
    sw.wait_ready(Duration::from_secs(30));

    let mode = std::fs::metadata(&sw.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "API socket mode");

    let out = sw.cli(&["start", "nosuch"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown service \"nosuch\"; known services: a"));
    assert_eq!(sw.cli(&["status", "nosuch"]).status.code(), Some(4));
    assert_eq!(sw.cli(&["logs", "nosuch"]).status.code(), Some(4));

    let body = "{not json";
    let response = raw_http(
        &sw.socket,
        &format!(
            "POST /v1/services/a/start HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(response.contains("\"kind\":\"bad_request\"") && response.contains("malformed request body"), "{response}");

    let body = "{\"wait\": true, \"bogus\": 1}";
    let response = raw_http(
        &sw.socket,
        &format!(
            "POST /v1/services/a/stop HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(response.starts_with("HTTP/1.1 400") && response.contains("bogus"), "{response}");

    let response = raw_http(&sw.socket, "GET /v2/everything HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    let response = raw_http(
        &sw.socket,
        "POST /v1/services/a/explode HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(response.starts_with("HTTP/1.1 404") && response.contains("unknown action"), "{response}");

    // Nothing above changed anything, and the daemon still answers.
    assert_eq!(sw.service("a")["ready"], true);
    assert_eq!(sw.service("a")["restarts"], 0);

    // A second daemon on the same socket refuses to start.
    let mut second = sw.spawn_daemon();
    let status = second.wait().unwrap();
    assert_eq!(status.code(), Some(7), "socket in use is a conflict");
    assert_eq!(sw.service("a")["ready"], true);

    // Without a daemon, the CLI says how to find it.
    sw.stop_daemon();
    let out = sw.cli(&["status"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is it running?"));
}
