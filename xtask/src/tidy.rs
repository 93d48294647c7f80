//! The architecture, executable: `#[test]`s over the source tree that keep its rules true
//! (rust-analyzer's tidy tests). `cargo xtask ci` runs them with the unit tier.
//!
//! - The supervisor imports no client crate and nothing from the API or the database link.
//! - Each client crate appears in its one adapter.
//! - The CLI reaches the daemon only through the typed API client.
//! - Responses are read tolerantly: only requests and files refuse unknown fields.
//! - Daemon code spawns no task it does not own or track.
//! - Every source file is named in ARCHITECTURE.md's codemap; every module in lib.rs's layout.
//! - The root tiers are gated: plain `cargo test` needs no root.
//! - No port trait answers `Result<_, String>`.
//! - The pause image has one name, in the rootfs's containerd and the k3s agent's config.

#![cfg(test)]

use std::path::{Path, PathBuf};

use crate::util::project_root;

/// Every `.rs` file under `dir`, relative to the project root.
fn rust_files(dir: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = project_root();
    let mut out = Vec::new();
    walk(&root.join(dir), &mut out);
    out.sort();
    out.into_iter().map(|p| p.strip_prefix(&root).unwrap().to_owned()).collect()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(project_root().join(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The file's code: comment lines and `#[cfg(test)]` modules left out.
fn code(path: &Path) -> String {
    let text = read(path);
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => &text,
    };
    text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// Whether `code` names `name` as a path root (`name::` or `use name`).
fn names(code: &str, name: &str) -> bool {
    code.match_indices(name).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = &code[at + name.len()..];
        // A path root, not a segment (`crate::db::redis::Db` names soniclet's module).
        let starts_word = !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
        starts_word && (after.starts_with("::") || after.starts_with(';') || after.starts_with(" as "))
    })
}

const CLIENT_CRATES: &[(&str, &[&str])] = &[
    // CRI is served on containerd's own socket: its adapter dials it the same way.
    ("containerd_client", &["src/runtime/containerd.rs", "src/k8s/cri.rs", "src/bin/soniclet-bench/kubelet.rs"]),
    ("tonic", &["src/runtime/containerd.rs"]),
    ("prost_types", &["src/runtime/containerd.rs"]),
    ("redis", &["src/db/"]),
    ("zbus", &["src/systemd/dbus.rs"]),
    ("rtnetlink", &["src/vasic/netlink.rs"]),
    ("netlink_packet_route", &["src/vasic/netlink.rs"]),
    ("netlink_packet_core", &["src/vasic/netlink.rs"]),
    (
        "axum",
        &[
            "src/api/http.rs",
            "src/api/server.rs",
            "src/api/services.rs",
            "src/api/images.rs",
            "src/api/features.rs",
            "src/api/intents.rs",
            "src/api/system.rs",
            "src/api/os.rs",
        ],
    ),
    ("ed25519_dalek", &["src/os/signature.rs"]),
    ("ureq", &["src/os/fetch.rs"]),
    ("kube", &["src/k8s/kube_api.rs"]),
    ("k8s_openapi", &["src/k8s/kube_api.rs"]),
    // The benchmarks (and the e2e tier, which includes the same file) play the kubelet.
    ("k8s_cri", &["src/k8s/cri.rs", "src/bin/soniclet-bench/kubelet.rs"]),
    ("hyper", &["src/api/client.rs"]),
    ("hyper_util", &["src/api/client.rs"]),
    ("http_body_util", &["src/api/client.rs"]),
];

fn allowed(path: &Path, places: &[&str]) -> bool {
    let path = path.to_string_lossy();
    places.iter().any(|p| if p.ends_with('/') { path.starts_with(p) } else { path == *p })
}

#[test]
fn the_supervisor_imports_no_client_crate_and_nothing_from_the_api_or_the_database_link() {
    let mut offences = Vec::new();
    for path in rust_files("src/supervisor") {
        if path.starts_with("src/supervisor/tests") {
            continue;
        }
        let code = code(&path);
        for (name, _) in CLIENT_CRATES {
            if names(&code, name) {
                offences.push(format!("{}: {name}", path.display()));
            }
        }
        for module in ["crate::api", "crate::sonic::dblink", "crate::db::redis", "crate::cli", "crate::daemon"] {
            if code.contains(module) {
                offences.push(format!("{}: {module}", path.display()));
            }
        }
    }
    assert!(offences.is_empty(), "the supervisor reaches past its ports:\n{}", offences.join("\n"));
}

#[test]
fn each_client_crate_appears_in_its_one_adapter() {
    let mut offences = Vec::new();
    for path in rust_files("src") {
        let code = code(&path);
        for (name, places) in CLIENT_CRATES {
            if names(&code, name) && !allowed(&path, places) {
                offences.push(format!("{}: {name} (only in {})", path.display(), places.join(", ")));
            }
        }
    }
    assert!(offences.is_empty(), "client crates outside their adapter:\n{}", offences.join("\n"));
}

#[test]
fn the_cli_reaches_the_daemon_only_through_the_typed_client() {
    let mut offences = Vec::new();
    for path in rust_files("src/cli") {
        let code = code(&path);
        if names(&code, "hyper") {
            offences.push(format!("{}: hyper", path.display()));
        }
        if code.contains("\"/v1/") {
            offences.push(format!("{}: an API path written by hand", path.display()));
        }
    }
    assert!(offences.is_empty(), "{}", offences.join("\n"));
}

/// The names of the types a file gives `deny_unknown_fields`.
fn strict_types(path: &Path) -> Vec<String> {
    let code = code(path);
    let mut out = Vec::new();
    let mut strict = false;
    for line in code.lines() {
        let line = line.trim();
        if line.starts_with("#[serde(") && line.contains("deny_unknown_fields") {
            strict = true;
        } else if let Some(rest) = line.strip_prefix("pub struct ").or_else(|| line.strip_prefix("pub enum ")) {
            if strict {
                out.push(rest.split(|c: char| !c.is_alphanumeric() && c != '_').next().unwrap_or_default().to_owned());
            }
            strict = false;
        } else if !line.starts_with("#[") {
            strict = false;
        }
    }
    out
}

#[test]
fn responses_are_read_tolerantly_only_requests_refuse_unknown_fields() {
    let mut offences = Vec::new();
    for path in ["src/api/mod.rs", "src/intent/mod.rs", "src/state/history.rs"] {
        for name in strict_types(Path::new(path)) {
            let request = ["Request", "Change", "Apply"].iter().any(|s| name.ends_with(s));
            let file_format = name == "HistoryFile";
            if !request && !file_format {
                offences.push(format!("{path}: {name} is an answer and must not refuse unknown fields"));
            }
        }
    }
    assert!(offences.is_empty(), "{}", offences.join("\n"));
}

/// Files whose spawns own their task: the handle is kept and the task aborted on drop.
const OWNED_SPAWNS: &[&str] = &["src/db/subscriber.rs", "src/db/channel.rs", "src/db/consumer_state.rs"];

/// Roles that are not the daemon: the CLI, the log shim, the virtual ASIC, the bench tool.
const NOT_THE_DAEMON: &[&str] =
    &["src/cli/", "src/main.rs", "src/bin/", "src/vasic/", "src/logs.rs", "src/api/client.rs"];

#[test]
fn daemon_code_spawns_only_into_its_task_tracker() {
    let mut offences = Vec::new();
    for path in rust_files("src") {
        if allowed(&path, NOT_THE_DAEMON) || allowed(&path, OWNED_SPAWNS) || path.starts_with("src/supervisor/tests") {
            continue;
        }
        let code = code(&path);
        for pattern in ["tokio::spawn(", "thread::spawn("] {
            if code.contains(pattern) {
                offences.push(format!("{}: {pattern}", path.display()));
            }
        }
    }
    assert!(
        offences.is_empty(),
        "untracked tasks in daemon code (spawn into the TaskTracker):\n{}",
        offences.join("\n")
    );
}

#[test]
fn every_source_file_is_named_in_the_codemap() {
    let architecture = read(Path::new("ARCHITECTURE.md"));
    // Bullets of the codemap, each with its continuation lines.
    let mut bullets: Vec<String> = Vec::new();
    for line in architecture.lines() {
        if line.starts_with("- ") || bullets.is_empty() {
            bullets.push(line.to_owned());
        } else if let Some(last) = bullets.last_mut() {
            last.push(' ');
            last.push_str(line.trim());
        }
    }
    let mut missing = Vec::new();
    for path in rust_files("src") {
        let full = path.to_string_lossy().into_owned();
        let (dir, file) = match full.rsplit_once('/') {
            Some((dir, file)) => (format!("{dir}/"), file.to_owned()),
            None => (String::new(), full.clone()),
        };
        let named = bullets.iter().any(|b| {
            b.contains(&format!("`{full}`")) || (b.contains(&format!("`{dir}")) && b.contains(&format!("`{file}`")))
        });
        if !named {
            missing.push(full);
        }
    }
    assert!(missing.is_empty(), "ARCHITECTURE.md's codemap does not name:\n{}", missing.join("\n"));
}

#[test]
fn lib_rs_lists_every_module() {
    let lib = read(Path::new("src/lib.rs"));
    let layout: String = lib.lines().filter(|l| l.starts_with("//!")).collect::<Vec<_>>().join("\n");
    let missing: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod ")?.strip_suffix(';'))
        .filter(|m| !layout.contains(&format!("`{m}`")))
        .collect();
    assert!(missing.is_empty(), "src/lib.rs's layout does not list: {missing:?}");
}

#[test]
fn the_root_tiers_are_gated_so_plain_cargo_test_needs_no_root() {
    let mut offences = Vec::new();
    for dir in ["tests/it", "tests/e2e"] {
        for path in rust_files(dir) {
            let text = read(&path);
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                if line.trim() == "#[test]"
                    && !lines.get(i + 1).is_some_and(|n| n.trim().starts_with("#[ignore = \"needs "))
                {
                    offences.push(format!("{}:{}", path.display(), i + 1));
                }
            }
        }
    }
    assert!(offences.is_empty(), "root tests without #[ignore = \"needs ...\"]:\n{}", offences.join("\n"));
}

#[test]
fn no_port_trait_answers_a_string_error() {
    let ports = ["src/runtime/mod.rs", "src/supervisor/ports.rs", "src/vasic/kernel.rs"];
    let mut offences = Vec::new();
    for path in ports {
        for (i, line) in code(Path::new(path)).lines().enumerate() {
            let squeezed: String = line.split_whitespace().collect();
            if squeezed.contains(",String>") && squeezed.contains("Result<") {
                offences.push(format!("{path}:{}: {}", i + 1, line.trim()));
            }
        }
    }
    assert!(offences.is_empty(), "{}", offences.join("\n"));
}

#[test]
fn the_pause_image_has_one_name() {
    let k8s = read(Path::new("src/k8s/mod.rs"));
    let line = format!("pub const PAUSE_IMAGE: &str = {:?};", crate::images::PAUSE_IMAGE);
    assert!(k8s.contains(&line), "src/k8s/mod.rs's PAUSE_IMAGE must be xtask's: {line}");
}
