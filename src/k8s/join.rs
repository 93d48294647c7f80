//! The k3s agent's files on the switch: what `soniclet k8s join` writes, `status` reads and
//! `leave` removes, under a root (`/` on a switch, a temp dir in tests).
//!
//! The token is copied into a file of soniclet's, created 0600, and the agent's config names
//! that file (`token-file`): the token is in no config, no log, no answer and no error. The
//! config is written last, so its presence means joined; a join cut short leaves at most a
//! token file, which the next join replaces and `leave` removes.

use std::path::{Path, PathBuf};

use super::agent::{self, AgentConfigError, Join};
use crate::state::fsutil::{atomic_write, atomic_write_mode};

/// The agent's config, where k3s reads it.
pub const CONFIG: &str = "etc/rancher/k3s/config.yaml";
/// soniclet's copy of the join token (0600).
pub const TOKEN: &str = "etc/rancher/k3s/soniclet-token";
/// The agent's state (certificates, the kubelet's kubeconfig, its containerd-side data).
pub const DATA_DIR: &str = "var/lib/rancher/k3s";
/// Where the OS image puts k3s when it was built with `K3S_BIN`.
pub const BINARY: &str = "usr/local/bin/k3s";
/// The agent's unit, as k3s's installer names it; the OS image ships it disabled.
pub const UNIT: &str = "k3s-agent.service";

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("token file {}: {source} (give the cluster's join token in a file: --token-file)", path.display())]
    TokenUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("token file {} is empty: it must hold the cluster's join token", path.display())]
    TokenEmpty { path: PathBuf },
    #[error("token file {} is readable by others (mode {mode:o}): chmod 600 it, then join again", path.display())]
    TokenReadable { path: PathBuf, mode: u32 },
    #[error(transparent)]
    Config(#[from] AgentConfigError),
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot remove {}", path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not the agent config soniclet writes: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
}

/// A join token. It shows itself to no one: no `Display`, no `Serialize`, and a `Debug`
/// that says only that it is there.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// Reads the operator's token file: it must exist, hold a token and be readable by its
    /// owner alone.
    pub fn read(path: &Path) -> Result<Self, JoinError> {
        use std::os::unix::fs::PermissionsExt;
        let unreadable = |source| JoinError::TokenUnreadable { path: path.to_owned(), source };
        let mode = std::fs::metadata(path).map_err(unreadable)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(JoinError::TokenReadable { path: path.to_owned(), mode });
        }
        let text = std::fs::read_to_string(path).map_err(unreadable)?;
        let token = text.trim();
        if token.is_empty() {
            return Err(JoinError::TokenEmpty { path: path.to_owned() });
        }
        Ok(Self(token.to_owned()))
    }
}

/// What the agent's config says of the join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub server: String,
    pub node_name: String,
}

/// The agent's files under one root.
#[derive(Debug, Clone)]
pub struct AgentFiles {
    root: PathBuf,
}

impl AgentFiles {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    /// The token file's path as the agent sees it (on the switch's own root).
    pub fn token_file() -> PathBuf {
        Path::new("/").join(TOKEN)
    }

    /// The kubelet's kubeconfig: its node credentials, there once the agent has registered
    /// the node.
    pub fn kubelet_kubeconfig(&self) -> PathBuf {
        self.path(DATA_DIR).join("agent/kubelet.kubeconfig")
    }

    /// Whether the OS image carries k3s.
    pub fn has_k3s(&self) -> bool {
        self.path(BINARY).is_file()
    }

    /// Writes the token, then the config that names it. `join.token_file` must be
    /// [`AgentFiles::token_file`]; the config is checked before anything is written.
    pub fn install(&self, join: &Join, token: &Token) -> Result<(), JoinError> {
        let config = agent::render(join)?;
        let token_path = self.path(TOKEN);
        atomic_write_mode(&token_path, format!("{}\n", token.0).as_bytes(), 0o600)
            .map_err(|source| JoinError::Write { path: token_path, source })?;
        let config_path = self.path(CONFIG);
        atomic_write(&config_path, config.as_bytes()).map_err(|source| JoinError::Write { path: config_path, source })
    }

    /// The join the config records, if any.
    pub fn joined(&self) -> Result<Option<Joined>, JoinError> {
        let path = self.path(CONFIG);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(JoinError::Corrupt { path, message: e.to_string() }),
        };
        let doc: serde_json::Value = serde_norway::from_str(&text)
            .map_err(|e| JoinError::Corrupt { path: path.clone(), message: e.to_string() })?;
        let field = |name: &str| doc[name].as_str().map(str::to_owned);
        match (field("server"), field("node-name")) {
            (Some(server), Some(node_name)) => Ok(Some(Joined { server, node_name })),
            _ => Err(JoinError::Corrupt { path, message: "it names no server or node-name".into() }),
        }
    }

    /// Removes the config, the token and the agent's state; what was not there is no error.
    pub fn remove(&self) -> Result<(), JoinError> {
        for file in [CONFIG, TOKEN] {
            let path = self.path(file);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(JoinError::Remove { path, source }),
            }
        }
        let data = self.path(DATA_DIR);
        match std::fs::remove_dir_all(&data) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(JoinError::Remove { path: data, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const SECRET: &str = "K10abc::server:s3cr3t";

    fn join() -> Join {
        Join {
            server: "https://k3s.example.net:6443".into(),
            token_file: AgentFiles::token_file(),
            node_name: "leaf1".into(),
            labels: BTreeMap::from([("sonic.net/hwsku".into(), "Force10-S6000".into())]),
            runtime_endpoint: "unix:///run/containerd/containerd.sock".into(),
            pause_image: crate::k8s::PAUSE_IMAGE.into(),
            kubelet_args: Vec::new(),
        }
    }

    fn token_file(dir: &Path, text: &str, mode: u32) -> PathBuf {
        let path = dir.join("token");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_join_writes_the_token_0600_and_a_config_naming_it_and_leave_removes_both() {
        let dir = tempfile::tempdir().unwrap();
        let files = AgentFiles::new(dir.path().join("root"));
        let token = Token::read(&token_file(dir.path(), &format!("{SECRET}\n"), 0o600)).unwrap();
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
        assert_eq!(files.joined().unwrap(), None);
        files.install(&join(), &token).unwrap();

        let written = dir.path().join("root").join(TOKEN);
        assert_eq!(std::fs::read_to_string(&written).unwrap(), format!("{SECRET}\n"));
        assert_eq!(std::fs::metadata(&written).unwrap().permissions().mode() & 0o777, 0o600);
        let config = std::fs::read_to_string(dir.path().join("root").join(CONFIG)).unwrap();
        assert!(!config.contains(SECRET), "the token is in no config: {config}");
        assert!(config.contains("token-file: /etc/rancher/k3s/soniclet-token"), "{config}");
        let joined = files.joined().unwrap().unwrap();
        assert_eq!((joined.server.as_str(), joined.node_name.as_str()), ("https://k3s.example.net:6443", "leaf1"));

        std::fs::create_dir_all(dir.path().join("root").join(DATA_DIR).join("agent")).unwrap();
        files.remove().unwrap();
        assert_eq!(files.joined().unwrap(), None);
        assert!(!written.exists() && !dir.path().join("root").join(DATA_DIR).exists());
        files.remove().unwrap();
    }

    #[test]
    fn bad_token_files_are_refused_naming_the_file_never_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let missing = Token::read(&dir.path().join("absent")).unwrap_err().to_string();
        assert!(missing.contains("absent") && missing.contains("--token-file"), "{missing}");
        let empty = Token::read(&token_file(dir.path(), " \n", 0o600)).unwrap_err().to_string();
        assert!(empty.contains("is empty"), "{empty}");
        let readable = Token::read(&token_file(dir.path(), SECRET, 0o644)).unwrap_err().to_string();
        assert!(readable.contains("readable by others (mode 644): chmod 600"), "{readable}");
        assert!(!readable.contains(SECRET));
    }

    #[test]
    fn a_refused_config_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let files = AgentFiles::new(dir.path());
        let token = Token::read(&token_file(dir.path(), SECRET, 0o600)).unwrap();
        let mut bad = join();
        bad.server = "http://k3s:6443".into();
        let err = files.install(&bad, &token).unwrap_err().to_string();
        assert!(err.contains("must be https://"), "{err}");
        assert!(!dir.path().join(TOKEN).exists() && !dir.path().join(CONFIG).exists());
    }
}
