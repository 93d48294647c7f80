//! The API server's plumbing: its state, the socket, errors as responses, strict request
//! bodies (the [`Body`] extractor), and answer streams as JSON lines.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

use super::{ApiError, ErrorBody, ErrorKind};
use crate::intent::engine::IntentHandle;
use crate::manifest::ManifestSet;
use crate::supervisor::{CommandError, Handle};

/// What every handler may use. Handlers never change service state themselves: they send
/// the supervisor a command and relay its answer.
pub struct ApiState<R> {
    pub handle: Handle,
    /// For reads that need no decision (the image list).
    pub runtime: Arc<R>,
    pub manifests: Arc<ManifestSet>,
    pub logs_dir: PathBuf,
    /// The intent engine, when the switch has a database service.
    pub intents: Option<IntentHandle>,
    /// Where SONiC's host paths live (`/etc/sonic/config_db.json` for config reload).
    pub sonic_root: PathBuf,
    /// Ends the endless streams (watch, log follow) so a graceful shutdown does not wait on them.
    pub shutdown: CancellationToken,
    /// The daemon's state directory (the image change history).
    pub state_dir: PathBuf,
}

impl<R> std::fmt::Debug for ApiState<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState").field("logs_dir", &self.logs_dir).finish_non_exhaustive()
    }
}

impl<R> Clone for ApiState<R> {
    fn clone(&self) -> Self {
        Self {
            handle: self.handle.clone(),
            runtime: Arc::clone(&self.runtime),
            manifests: Arc::clone(&self.manifests),
            logs_dir: self.logs_dir.clone(),
            intents: self.intents.clone(),
            sonic_root: self.sonic_root.clone(),
            shutdown: self.shutdown.clone(),
            state_dir: self.state_dir.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("another soniclet daemon is serving {}; stop it first", path.display())]
    InUse { path: PathBuf },
    #[error("cannot bind the API socket {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("API socket group {group:?} does not exist; create it or fix api.group")]
    UnknownGroup { group: String },
}

/// Binds the API socket with mode 0660, owned by `group` when given.
pub fn bind(path: &Path, group: Option<&str>) -> Result<UnixListener, BindError> {
    let io = |source| BindError::Io { path: path.to_owned(), source };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(BindError::InUse { path: path.to_owned() });
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io)?;
    if let Some(group) = group {
        let gid = nix::unistd::Group::from_name(group)
            .ok()
            .flatten()
            .ok_or_else(|| BindError::UnknownGroup { group: group.to_owned() })?
            .gid;
        nix::unistd::chown(path, None, Some(gid)).map_err(|e| io(std::io::Error::from(e)))?;
    }
    Ok(listener)
}

pub fn error_response(kind: ErrorKind, message: impl Into<String>) -> Response {
    let status = match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Failed => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, Json(ErrorBody { error: ApiError { kind, message: message.into() } })).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(self.kind, self.message)
    }
}

impl IntoResponse for CommandError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

/// A JSON request body, parsed strictly (unknown fields refused, naming the field); an empty
/// body is the type's default. A malformed one is answered with a bad request.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state).await.map_err(IntoResponse::into_response)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        serde_json::from_slice(&bytes)
            .map(Self)
            .map_err(|e| error_response(ErrorKind::BadRequest, format!("malformed request body: {e}")))
    }
}

/// A stream of JSON lines, one per item.
pub fn ndjson<T: serde::Serialize + Send + 'static>(
    items: impl futures_util::Stream<Item = T> + Send + 'static,
) -> Response {
    let stream = items.map(|item| {
        let mut line = serde_json::to_vec(&item).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, std::io::Error>(Bytes::from(line))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(axum::body::Body::from_stream(stream))
        .unwrap_or_else(|_| error_response(ErrorKind::Internal, "response"))
}
