//! The API server: HTTP/1.1 on a unix socket, turned into supervisor commands.
//!
//! Handlers never change service state themselves; they send a [`Command`] and relay the
//! reply. Reads that need no decision (logs, image listing) go to the runtime or the log
//! files directly. Malformed requests get a JSON error naming what is wrong; the daemon
//! never fails because of a request.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

use super::{
    ActionRequest, ApiError, ErrorBody, ErrorKind, FeatureChange, FeatureStatus, ImageSummary, ImportEvent,
    ImportRequest, IntentApply, ReloadRequest, ShutdownRequest, WaitRequest,
};
use crate::dblink::DbLink;
use crate::images::{self, ImportError};
use crate::intent::engine::IntentHandle;
use crate::intent::IntentError;
use crate::logs;
use crate::manifest::ManifestSet;
use crate::runtime::ContainerRuntime;
use crate::supervisor::{Command, CommandError, Event, Handle, ReloadEvent};

/// How long a `wait` request may last when the client gives no timeout.
const DEFAULT_WAIT: Duration = Duration::from_secs(300);

pub struct ApiState<R> {
    pub handle: Handle,
    pub runtime: Arc<R>,
    pub manifests: Arc<ManifestSet>,
    pub logs_dir: PathBuf,
    /// Where archives are staged while they are verified.
    pub staging_dir: PathBuf,
    /// One import at a time: they share the staging area and containerd's write locks.
    pub import_lock: Arc<tokio::sync::Mutex<()>>,
    /// The switch's databases (CONFIG_DB writes for `soniclet feature`).
    pub db: Arc<DbLink>,
    /// The intent engine, when the switch has a database service.
    pub intents: Option<IntentHandle>,
    /// Where SONiC's host paths live (`/etc/sonic/config_db.json` for config reload).
    pub sonic_root: PathBuf,
    /// Ends the endless streams (watch, log follow) so a graceful shutdown does not wait on them.
    pub shutdown: CancellationToken,
    /// The daemon's state directory (the image change history).
    pub state_dir: PathBuf,
    /// One image change (upgrade, rollback, release) at a time, from import to outcome.
    pub change_lock: Arc<tokio::sync::Mutex<()>>,
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
            staging_dir: self.staging_dir.clone(),
            import_lock: Arc::clone(&self.import_lock),
            db: Arc::clone(&self.db),
            intents: self.intents.clone(),
            sonic_root: self.sonic_root.clone(),
            shutdown: self.shutdown.clone(),
            state_dir: self.state_dir.clone(),
            change_lock: Arc::clone(&self.change_lock),
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

pub(super) fn error_response(kind: ErrorKind, message: impl Into<String>) -> Response {
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

impl IntoResponse for CommandError {
    fn into_response(self) -> Response {
        error_response(self.kind, self.message)
    }
}

/// Parses a JSON body strictly; an empty body means the type's default.
/// A stream of JSON lines, one per item.
pub(super) fn ndjson<T: serde::Serialize + Send + 'static>(rx: tokio::sync::mpsc::UnboundedReceiver<T>) -> Response {
    let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(|event| {
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, std::io::Error>(Bytes::from(line))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| error_response(ErrorKind::Internal, "response"))
}

pub(super) fn parse_body<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T, Box<Response>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| Box::new(error_response(ErrorKind::BadRequest, format!("malformed request body: {e}"))))
}

pub fn router<R: ContainerRuntime>(state: ApiState<R>) -> Router {
    Router::new()
        .route("/v1/status", get(status::<R>))
        .route("/v1/services/{name}", get(service_status::<R>))
        .route("/v1/services/{name}/{action}", post(service_action::<R>))
        .route("/v1/services/{name}/logs", get(service_logs::<R>))
        .route("/v1/services/{name}/watch", get(watch_service::<R>))
        .route("/v1/services/{name}/history", get(super::upgrade::history::<R>))
        .route("/v1/release", post(super::upgrade::release::<R>))
        .route("/v1/images", get(list_images::<R>))
        .route("/v1/images/import", post(import_images::<R>))
        .route("/v1/features", get(list_features::<R>))
        .route("/v1/features/{name}", post(change_feature::<R>))
        .route("/v1/intents", get(intent_status::<R>).post(apply_intents::<R>).layer(DefaultBodyLimit::max(256 << 20)))
        .route("/v1/config/reload", post(config_reload::<R>).layer(DefaultBodyLimit::max(256 << 20)))
        .route("/v1/wait", post(wait::<R>))
        .route("/v1/shutdown", post(shutdown::<R>))
        .fallback(|| async { error_response(ErrorKind::NotFound, "no such API endpoint; see `soniclet --help`") })
        .method_not_allowed_fallback(|| async {
            error_response(ErrorKind::BadRequest, "method not allowed on this endpoint")
        })
        .with_state(state)
}

/// Serves until `shutdown` completes.
pub async fn serve<R: ContainerRuntime>(
    listener: UnixListener,
    state: ApiState<R>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}

async fn status<R: ContainerRuntime>(State(state): State<ApiState<R>>) -> Response {
    match state.handle.request(|reply| Command::Status { reply }).await {
        Ok(status) => Json(status).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn service_status<R: ContainerRuntime>(
    State(state): State<ApiState<R>>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    match state.handle.request(|reply| Command::Status { reply }).await {
        Ok(status) => match status.services.into_iter().find(|s| s.name == name) {
            Some(service) => Json(service).into_response(),
            None => error_response(ErrorKind::NotFound, format!("unknown service {name:?}")),
        },
        Err(e) => e.into_response(),
    }
}

async fn service_action<R: ContainerRuntime>(
    State(state): State<ApiState<R>>,
    UrlPath((name, action)): UrlPath<(String, String)>,
    body: Bytes,
) -> Response {
    if matches!(action.as_str(), "upgrade" | "rollback") {
        return super::upgrade::change(state, name, action == "rollback", body).await;
    }
    let request: ActionRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(response) => return *response,
    };
    let wait = request.wait;
    let service = name.clone();
    if !matches!(action.as_str(), "start" | "stop" | "restart") {
        return error_response(
            ErrorKind::NotFound,
            format!("unknown action {action:?}: use start, stop, restart, upgrade or rollback"),
        );
    }
    let verb = action.clone();
    let fut = state.handle.request(move |reply| match verb.as_str() {
        "start" => Command::Start { service, wait, reply },
        "stop" => Command::Stop { service, wait, reply },
        _ => Command::Restart { service, wait, reply },
    });
    let limit = request.timeout_secs.map(Duration::from_secs).unwrap_or(DEFAULT_WAIT);
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(status)) => Json(status).into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(_) => error_response(
            ErrorKind::Timeout,
            format!(
                "{name} did not finish {action} within {}s; it goes on in the background: see `soniclet status {name}` and `soniclet logs {name}`",
                limit.as_secs()
            ),
        ),
    }
}

/// The service's status now, then every change, one JSON object per line (the systemd
/// facades follow this).
async fn watch_service<R: ContainerRuntime>(
    State(state): State<ApiState<R>>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    // Subscribe before the snapshot, so no change falls between them.
    let changes = state.handle.statuses();
    let current = match state.handle.request(|reply| Command::Status { reply }).await {
        Ok(status) => status.services.into_iter().find(|s| s.name == name),
        Err(e) => return e.into_response(),
    };
    let Some(current) = current else {
        return error_response(ErrorKind::NotFound, format!("unknown service {name:?}"));
    };
    let line = |status: &crate::api::ServiceStatus| {
        let mut bytes = serde_json::to_vec(status).unwrap_or_default();
        bytes.push(b'\n');
        Ok::<_, std::io::Error>(Bytes::from(bytes))
    };
    let first = futures_util::stream::iter([line(&current)]);
    let rest = tokio_stream::wrappers::BroadcastStream::new(changes).filter_map(move |change| {
        let name = name.clone();
        async move {
            match change {
                Ok(status) if status.name == name => Some(line(&status)),
                Ok(_) => None,
                // Lagged: the next change carries the whole status anyway.
                Err(_) => None,
            }
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(first.chain(rest).take_until(state.shutdown.cancelled_owned())))
        .unwrap_or_else(|_| error_response(ErrorKind::Internal, "response"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    #[serde(default = "default_lines")]
    lines: usize,
    #[serde(default)]
    follow: bool,
}

fn default_lines() -> usize {
    100
}

async fn service_logs<R: ContainerRuntime>(
    State(state): State<ApiState<R>>,
    UrlPath(name): UrlPath<String>,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(q) => q,
        Err(e) => return error_response(ErrorKind::BadRequest, format!("bad log query: {e}")),
    };
    if state.manifests.lookup(&name).is_none() {
        return error_response(ErrorKind::NotFound, format!("unknown service {name:?}"));
    }
    let dir = state.logs_dir.clone();
    let id = name.clone();
    let lines = query.lines;
    let tail = match tokio::task::spawn_blocking(move || logs::tail(&dir, &id, lines)).await {
        Ok(Ok(lines)) => lines,
        Ok(Err(e)) => return error_response(ErrorKind::Internal, format!("cannot read the log of {name}: {e}")),
        Err(e) => return error_response(ErrorKind::Internal, e.to_string()),
    };
    let head = futures_util::stream::iter(tail.into_iter().map(|l| Ok::<_, std::io::Error>(Bytes::from(l + "\n"))));
    if !query.follow {
        return Response::builder()
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Body::from_stream(head))
            .unwrap_or_else(|_| error_response(ErrorKind::Internal, "response"));
    }
    let follower = logs::Follower::from_end(&state.logs_dir, &name);
    let follow = futures_util::stream::unfold(follower, |mut follower| async move {
        loop {
            let lines = follower.poll();
            if !lines.is_empty() {
                let chunk: String = lines.into_iter().map(|l| l + "\n").collect();
                return Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), follower));
            }
            tokio::time::sleep(logs::Follower::INTERVAL).await;
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from_stream(head.chain(follow.take_until(state.shutdown.cancelled_owned()))))
        .unwrap_or_else(|_| error_response(ErrorKind::Internal, "response"))
}

fn used_by(manifests: &ManifestSet, image: &str) -> Vec<String> {
    manifests.services().filter(|s| s.manifest.container.image == image).map(|s| s.name.to_string()).collect()
}

async fn list_images<R: ContainerRuntime>(State(state): State<ApiState<R>>) -> Response {
    match state.runtime.images().await {
        Ok(images) => {
            let summaries: Vec<ImageSummary> = images
                .into_iter()
                .map(|i| ImageSummary {
                    used_by: used_by(&state.manifests, &i.name),
                    name: i.name,
                    digest: i.digest,
                    size: i.size,
                    architecture: i.architecture,
                    os: i.os,
                })
                .collect();
            Json(summaries).into_response()
        }
        Err(e) => error_response(ErrorKind::Unavailable, e.to_string()),
    }
}

async fn import_images<R: ContainerRuntime>(State(state): State<ApiState<R>>, body: Bytes) -> Response {
    let request: ImportRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(response) => return *response,
    };
    if request.paths.is_empty() {
        return error_response(ErrorKind::BadRequest, "no archive given: paths is empty");
    }
    for path in &request.paths {
        let p = Path::new(path);
        if !p.is_absolute() {
            return error_response(ErrorKind::BadRequest, format!("{path} is not an absolute path"));
        }
        if !p.is_file() {
            return error_response(ErrorKind::NotFound, format!("{path}: no such file (the daemon reads it)"));
        }
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<ImportEvent>();
    tokio::spawn(async move {
        let _guard = state.import_lock.lock().await;
        let mut imported = 0;
        for path in request.paths {
            let progress_tx = tx.clone();
            let progress = move |line: String| {
                let _ = progress_tx.send(ImportEvent::Progress(line));
            };
            let result =
                images::import_archive(state.runtime.as_ref(), &state.staging_dir, Path::new(&path), &progress);
            match result.await {
                Ok(images) => {
                    for image in images {
                        imported += 1;
                        let _ = tx.send(ImportEvent::Imported(ImageSummary {
                            used_by: used_by(&state.manifests, &image.name),
                            name: image.name,
                            digest: image.digest,
                            size: image.size,
                            architecture: image.architecture,
                            os: image.os,
                        }));
                    }
                }
                Err(e) => {
                    let kind = match e {
                        ImportError::Archive(_) => ErrorKind::BadRequest,
                        ImportError::Runtime { .. } => ErrorKind::Failed,
                        ImportError::Interrupted { .. } => ErrorKind::Internal,
                    };
                    let _ = tx.send(ImportEvent::Error(ApiError { kind, message: e.to_string() }));
                    state.handle.send(Event::ImagesChanged);
                    return;
                }
            }
        }
        state.handle.send(Event::ImagesChanged);
        let _ = tx.send(ImportEvent::Done { imported });
    });
    ndjson(rx)
}

async fn wait<R: ContainerRuntime>(State(state): State<ApiState<R>>, body: Bytes) -> Response {
    let request: WaitRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(response) => return *response,
    };
    let limit = request.timeout_secs.map(Duration::from_secs).unwrap_or(DEFAULT_WAIT);
    let (services, stopped) = (request.services, request.stopped);
    match tokio::time::timeout(limit, state.handle.request(move |reply| Command::Wait { services, stopped, reply }))
        .await
    {
        Ok(Ok(status)) => Json(status).into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(_) => {
            error_response(ErrorKind::Timeout, format!("not ready within {}s; see `soniclet status`", limit.as_secs()))
        }
    }
}

async fn list_features<R: ContainerRuntime>(State(state): State<ApiState<R>>) -> Response {
    match state.handle.request(|reply| Command::Features { reply }).await {
        Ok(features) => Json(features).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `config feature state|autorestart`: validated by the supervisor, written to CONFIG_DB
/// `FEATURE|<name>`; the supervisor then acts on the change through its subscription, like on
/// any other writer's.
async fn change_feature<R: ContainerRuntime>(
    State(state): State<ApiState<R>>,
    UrlPath(name): UrlPath<String>,
    body: Bytes,
) -> Response {
    let change: FeatureChange = match parse_body(&body) {
        Ok(c) => c,
        Err(response) => return *response,
    };
    if change.state.is_none() && change.auto_restart.is_none() {
        return error_response(ErrorKind::BadRequest, "nothing to change: give state or auto_restart");
    }
    let (target_state, auto_restart) = (change.state.clone(), change.auto_restart.clone());
    let service = match state
        .handle
        .request(move |reply| Command::CheckFeatureChange { service: name, state: target_state, auto_restart, reply })
        .await
    {
        Ok(service) => service,
        Err(e) => return e.into_response(),
    };
    let connections = match state.db.connections().await {
        Ok(c) => c,
        Err(_) => {
            return error_response(
                ErrorKind::Unavailable,
                "the database is not running; see `soniclet status database`",
            )
        }
    };
    let mut fields = Vec::new();
    if let Some(s) = &change.state {
        fields.push(("state".to_owned(), s.clone()));
    }
    if let Some(a) = &change.auto_restart {
        fields.push(("auto_restart".to_owned(), a.clone()));
    }
    let key = connections.config_db.key("FEATURE", service.as_str());
    // A FEATURE entry always has a state: a first write of auto_restart completes the entry
    // with the state the service has now (its manifest's default).
    if change.state.is_none() && matches!(connections.config_db.hget(&key, "state").await, Ok(None)) {
        if let Ok(features) = state.handle.request(|reply| Command::Features { reply }).await {
            if let Some(current) = features.iter().find(|f| f.name == service.as_str()) {
                fields.push(("state".to_owned(), current.state.clone()));
            }
        }
    }
    if let Err(e) = connections.config_db.hset(&key, &fields).await {
        return error_response(ErrorKind::Unavailable, format!("cannot write CONFIG_DB {key}: {e}"));
    }
    let feature_of = |features: Vec<FeatureStatus>| features.into_iter().find(|f| f.name == service.as_str());
    // The change reaches the supervisor through its CONFIG_DB subscription; wait until it has.
    let limit = change.timeout_secs.map(Duration::from_secs).unwrap_or(DEFAULT_WAIT);
    let deadline = tokio::time::Instant::now() + limit;
    let current = loop {
        let features = match state.handle.request(|reply| Command::Features { reply }).await {
            Ok(f) => f,
            Err(e) => return e.into_response(),
        };
        let current = feature_of(features);
        let applied = current.as_ref().is_some_and(|f| {
            change.state.as_ref().is_none_or(|s| &f.state == s)
                && change.auto_restart.as_ref().is_none_or(|a| &f.auto_restart == a)
        });
        if applied || tokio::time::Instant::now() >= deadline {
            break current;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    if change.wait {
        if let Some(s) = &change.state {
            let (services, stopped) = (vec![service.to_string()], s == "disabled");
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let waited = tokio::time::timeout(
                remaining,
                state.handle.request(move |reply| Command::Wait { services, stopped, reply }),
            )
            .await;
            match waited {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return e.into_response(),
                Err(_) => {
                    return error_response(
                        ErrorKind::Timeout,
                        format!("{service} did not reach {s} within {}s", limit.as_secs()),
                    )
                }
            }
        }
    }
    let current = match state.handle.request(|reply| Command::Features { reply }).await {
        Ok(features) => feature_of(features).or(current),
        Err(e) => return e.into_response(),
    };
    match current {
        Some(f) => Json(f).into_response(),
        None => error_response(ErrorKind::NotFound, "no such feature"),
    }
}

fn intents_of<R>(state: &ApiState<R>) -> Result<&IntentHandle, Box<Response>> {
    state.intents.as_ref().ok_or_else(|| {
        Box::new(error_response(
            ErrorKind::Unavailable,
            "intents need the switch's database: no service is marked database = true",
        ))
    })
}

async fn apply_intents<R: ContainerRuntime>(State(state): State<ApiState<R>>, body: Bytes) -> Response {
    let request: IntentApply = match parse_body(&body) {
        Ok(r) => r,
        Err(response) => return *response,
    };
    let intents = match intents_of(&state) {
        Ok(i) => i,
        Err(response) => return *response,
    };
    match intents.apply(PathBuf::from(request.file), request.text).await {
        Some(Ok(outcome)) => Json(outcome).into_response(),
        Some(Err(e @ (IntentError::Parse { .. } | IntentError::Invalid(_)))) => {
            error_response(ErrorKind::BadRequest, e.to_string())
        }
        Some(Err(e)) => error_response(ErrorKind::Internal, e.to_string()),
        None => error_response(ErrorKind::Unavailable, "the daemon is shutting down"),
    }
}

async fn intent_status<R: ContainerRuntime>(State(state): State<ApiState<R>>) -> Response {
    let intents = match intents_of(&state) {
        Ok(i) => i,
        Err(response) => return *response,
    };
    match intents.status().await {
        Some(report) => Json(report).into_response(),
        None => error_response(ErrorKind::Unavailable, "the daemon is shutting down"),
    }
}

/// `config reload`: the file is checked whole first; a broken one changes nothing.
async fn config_reload<R: ContainerRuntime>(State(state): State<ApiState<R>>, body: Bytes) -> Response {
    let request: ReloadRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(response) => return *response,
    };
    let default = state.sonic_root.join("etc/sonic/config_db.json");
    let (file, text) = match (request.file, request.text) {
        (file, Some(text)) => (file.map(PathBuf::from).unwrap_or_else(|| default.clone()), text),
        (_, None) => match std::fs::read_to_string(&default) {
            Ok(text) => (default.clone(), text),
            Err(e) => return error_response(ErrorKind::NotFound, format!("cannot read {}: {e}", default.display())),
        },
    };
    let config = match crate::configdb::parse(&file, &text) {
        Ok(c) => c,
        Err(e) => return error_response(ErrorKind::BadRequest, format!("{e}; nothing was changed")),
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<ReloadEvent>();
    if !state.handle.send(Event::Command(Command::Reload { config, force: request.force, progress: tx })) {
        return error_response(ErrorKind::Unavailable, "the daemon is shutting down");
    }
    ndjson(rx)
}

async fn shutdown<R: ContainerRuntime>(State(state): State<ApiState<R>>, body: Bytes) -> Response {
    let request: ShutdownRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(response) => return *response,
    };
    let stop_services = request.stop_services;
    match state.handle.request(move |reply| Command::Shutdown { stop_services, reply }).await {
        Ok(()) => Json(serde_json::json!({})).into_response(),
        Err(e) => e.into_response(),
    }
}
