//! The API server: HTTP/1.1 on a unix socket, routed to the handlers of each resource.
//!
//! Handlers never change service state themselves; they send the supervisor a command and
//! relay its answer. Reads that need no decision (logs, image listing, history) go to the
//! runtime or the files directly. Malformed requests get a JSON error naming what is wrong;
//! the daemon never fails because of a request.

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::UnixListener;

use super::http::{error_response, ApiState};
use super::{features, images, intents, os, paths, services, system, ErrorKind};
use crate::runtime::ContainerRuntime;

/// Bodies that carry whole documents (intents, config_db.json) may be large.
const DOCUMENT_LIMIT: usize = 256 << 20;

pub fn router<R: ContainerRuntime>(state: ApiState<R>) -> Router {
    Router::new()
        .route(paths::STATUS, get(services::status::<R>))
        .route(paths::SERVICE, get(services::service::<R>))
        .route(paths::SERVICE_ACTION, post(services::action::<R>))
        .route(paths::SERVICE_UPGRADE, post(services::upgrade::<R>))
        .route(paths::SERVICE_ROLLBACK, post(services::rollback::<R>))
        .route(paths::SERVICE_LOGS, get(services::logs::<R>))
        .route(paths::SERVICE_WATCH, get(services::watch::<R>))
        .route(paths::SERVICE_HISTORY, get(services::service_history::<R>))
        .route(paths::RELEASE, post(services::release::<R>))
        .route(paths::IMAGES, get(images::list::<R>))
        .route(paths::IMAGES_IMPORT, post(images::import::<R>))
        .route(paths::FEATURES, get(features::list::<R>))
        .route(paths::FEATURE, post(features::change::<R>))
        .route(
            paths::INTENTS,
            get(intents::status::<R>).post(intents::apply::<R>).layer(DefaultBodyLimit::max(DOCUMENT_LIMIT)),
        )
        .route(paths::CONFIG_RELOAD, post(system::reload::<R>).layer(DefaultBodyLimit::max(DOCUMENT_LIMIT)))
        .route(paths::WAIT, post(system::wait::<R>))
        .route(paths::SHUTDOWN, post(system::shutdown::<R>))
        .route(paths::OS, get(os::list::<R>))
        .route(paths::OS_INSTALL, post(os::install::<R>))
        .route(paths::OS_DEFAULT, post(os::set_default::<R>))
        .route(paths::OS_NEXT_BOOT, post(os::set_next_boot::<R>))
        .route(paths::OS_REMOVE, post(os::remove::<R>))
        .route(paths::OS_CLEANUP, post(os::cleanup::<R>))
        .route(paths::OS_ONIE, post(os::onie::<R>))
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
