//! The API client the CLI uses: one HTTP/1.1 request per connection over the unix socket.

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

use super::{ApiError, ErrorBody, ErrorKind};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the soniclet daemon at {}: {source}; is it running? (systemctl status soniclet, or set --socket / SONICLET_SOCKET)", socket.display())]
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

#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
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

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        Self::json(self.send(Method::GET, path, None).await?).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Protocol(e.to_string()))?;
        Self::json(self.send(Method::POST, path, Some(body)).await?).await
    }

    /// Sends a request whose answer is a stream of lines; calls `on_line` for each, until the
    /// stream ends or `on_line` breaks.
    pub async fn lines(
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
