//! The typed API client the CLI uses: one method per endpoint, one HTTP/1.1 request per
//! connection over the unix socket. The paths and the HTTP plumbing stay in this file.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixStream;

use super::{
    paths, ActionRequest, ApiError, ChangeEvent, ErrorBody, ErrorKind, FeatureChange, FeatureStatus, HistoryEntry,
    ImageSummary, ImportEvent, ImportRequest, IntentApply, ReleaseRequest, ReloadEvent, ReloadRequest, ServiceStatus,
    ShutdownRequest, StatusResponse, UpgradeRequest, WaitRequest,
};
use crate::intent::{ApplyOutcome, IntentReport};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the soniclet daemon at {}; is it running? (systemctl status soniclet, or set --socket / SONICLET_SOCKET)", socket.display())]
    Unreachable {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("unexpected answer from the daemon: {0}")]
    Protocol(String),
}

impl ClientError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ClientError::Unreachable { .. } => ErrorKind::Unavailable,
            ClientError::Api(e) => e.kind,
            ClientError::Protocol(_) => ErrorKind::Internal,
        }
    }
}

/// What `POST /v1/services/{name}/{action}` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Restart,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

fn parse_line<T: DeserializeOwned>(line: &str) -> Result<T, ClientError> {
    serde_json::from_str(line).map_err(|e| ClientError::Protocol(format!("{e}: {line}")))
}

fn body<B: Serialize>(body: &B) -> Result<Vec<u8>, ClientError> {
    serde_json::to_vec(body).map_err(|e| ClientError::Protocol(e.to_string()))
}

impl Client {
    pub fn new(socket: &Path) -> Self {
        Self { socket: socket.to_owned() }
    }

    async fn send(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Response<Incoming>, ClientError> {
        let unreachable = |source| ClientError::Unreachable { socket: self.socket.clone(), source };
        let stream = UnixStream::connect(&self.socket).await.map_err(unreachable)?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        // The connection is driven beside the request for as long as its body is read; the
        // CLI is one short-lived request, so nothing needs to track it.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "soniclet")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let response = sender.send_request(request).await.map_err(|e| ClientError::Protocol(e.to_string()))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let bytes = response.into_body().collect().await.map_err(|e| ClientError::Protocol(e.to_string()))?.to_bytes();
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => Err(ClientError::Api(body.error)),
            Err(_) => Err(ClientError::Protocol(format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)))),
        }
    }

    async fn json<T: DeserializeOwned>(response: Response<Incoming>) -> Result<T, ClientError> {
        let bytes = response.into_body().collect().await.map_err(|e| ClientError::Protocol(e.to_string()))?.to_bytes();
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        Self::json(self.send(Method::GET, path, None).await?).await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, request: &B) -> Result<T, ClientError> {
        Self::json(self.send(Method::POST, path, Some(body(request)?)).await?).await
    }

    /// Posts `request` and hands each JSON line of the answer to `on_event`.
    async fn post_stream<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        request: &B,
        mut on_event: impl FnMut(T),
    ) -> Result<(), ClientError> {
        self.lines(Method::POST, path, Some(body(request)?), |line| {
            on_event(parse_line(line)?);
            Ok(ControlFlow::Continue(()))
        })
        .await
    }

    /// Sends a request whose answer is a stream of lines; calls `on_line` for each, until the
    /// stream ends or `on_line` breaks.
    async fn lines(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        mut on_line: impl FnMut(&str) -> Result<ControlFlow<()>, ClientError>,
    ) -> Result<(), ClientError> {
        let mut body = self.send(method, path, body).await?.into_body();
        let mut pending = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ClientError::Protocol(e.to_string()))?;
            let Some(data) = frame.data_ref() else { continue };
            pending.extend_from_slice(data);
            while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=pos).collect();
                if on_line(&String::from_utf8_lossy(&line[..line.len() - 1]))?.is_break() {
                    return Ok(());
                }
            }
        }
        if !pending.is_empty() {
            let _ = on_line(&String::from_utf8_lossy(&pending))?;
        }
        Ok(())
    }
}

/// One method per endpoint.
impl Client {
    pub async fn status(&self) -> Result<StatusResponse, ClientError> {
        self.get(paths::STATUS).await
    }

    pub async fn service(&self, name: &str) -> Result<ServiceStatus, ClientError> {
        self.get(&paths::fill(paths::SERVICE, name, "")).await
    }

    /// Starts, stops or restarts a service; with `wait`, answers once it got there.
    pub async fn act(&self, name: &str, action: Action, request: &ActionRequest) -> Result<ServiceStatus, ClientError> {
        self.post(&paths::fill(paths::SERVICE_ACTION, name, action.as_str()), request).await
    }

    pub async fn wait(&self, request: &WaitRequest) -> Result<StatusResponse, ClientError> {
        self.post(paths::WAIT, request).await
    }

    /// The service's last `lines` log records, and with `follow` every new one, each to
    /// `on_record`.
    pub async fn logs(
        &self,
        name: &str,
        lines: usize,
        follow: bool,
        mut on_record: impl FnMut(&str),
    ) -> Result<(), ClientError> {
        let path = format!("{}?lines={lines}&follow={follow}", paths::fill(paths::SERVICE_LOGS, name, ""));
        self.lines(Method::GET, &path, None, |record| {
            on_record(record);
            Ok(ControlFlow::Continue(()))
        })
        .await
    }

    /// The service's status now, then each change, until `on_status` breaks or the daemon
    /// ends the stream.
    pub async fn watch(
        &self,
        name: &str,
        mut on_status: impl FnMut(ServiceStatus) -> ControlFlow<()>,
    ) -> Result<(), ClientError> {
        self.lines(Method::GET, &paths::fill(paths::SERVICE_WATCH, name, ""), None, |line| {
            Ok(on_status(parse_line(line)?))
        })
        .await
    }

    pub async fn images(&self) -> Result<Vec<ImageSummary>, ClientError> {
        self.get(paths::IMAGES).await
    }

    pub async fn import(&self, request: &ImportRequest, on_event: impl FnMut(ImportEvent)) -> Result<(), ClientError> {
        self.post_stream(paths::IMAGES_IMPORT, request, on_event).await
    }

    pub async fn os_images(&self) -> Result<crate::os::Images, ClientError> {
        self.get(paths::OS).await
    }

    /// An `os` change at `path` (one of `paths::OS_*`), streaming its progress.
    pub async fn os_change<B: serde::Serialize>(
        &self,
        path: &str,
        request: &B,
        on_event: impl FnMut(super::OsEvent),
    ) -> Result<(), ClientError> {
        self.post_stream(path, request, on_event).await
    }

    pub async fn features(&self) -> Result<Vec<FeatureStatus>, ClientError> {
        self.get(paths::FEATURES).await
    }

    pub async fn change_feature(&self, name: &str, change: &FeatureChange) -> Result<FeatureStatus, ClientError> {
        self.post(&paths::fill(paths::FEATURE, name, ""), change).await
    }

    pub async fn apply_intents(&self, request: &IntentApply) -> Result<ApplyOutcome, ClientError> {
        self.post(paths::INTENTS, request).await
    }

    pub async fn intents(&self) -> Result<IntentReport, ClientError> {
        self.get(paths::INTENTS).await
    }

    pub async fn reload(&self, request: &ReloadRequest, on_event: impl FnMut(ReloadEvent)) -> Result<(), ClientError> {
        self.post_stream(paths::CONFIG_RELOAD, request, on_event).await
    }

    pub async fn upgrade(
        &self,
        name: &str,
        request: &UpgradeRequest,
        on_event: impl FnMut(ChangeEvent),
    ) -> Result<(), ClientError> {
        self.post_stream(&paths::fill(paths::SERVICE_UPGRADE, name, ""), request, on_event).await
    }

    pub async fn rollback(
        &self,
        name: &str,
        request: &UpgradeRequest,
        on_event: impl FnMut(ChangeEvent),
    ) -> Result<(), ClientError> {
        self.post_stream(&paths::fill(paths::SERVICE_ROLLBACK, name, ""), request, on_event).await
    }

    pub async fn history(&self, name: &str) -> Result<Vec<HistoryEntry>, ClientError> {
        self.get(&paths::fill(paths::SERVICE_HISTORY, name, "")).await
    }

    pub async fn release(
        &self,
        request: &ReleaseRequest,
        on_event: impl FnMut(ChangeEvent),
    ) -> Result<(), ClientError> {
        self.post_stream(paths::RELEASE, request, on_event).await
    }

    pub async fn shutdown(&self, request: &ShutdownRequest) -> Result<(), ClientError> {
        let _: serde_json::Value = self.post(paths::SHUTDOWN, request).await?;
        Ok(())
    }
}
