//! `runbook serve`: the runs of a state dir as web pages and JSON, and the
//! Approve/Reject of a waiting step, for approvers who are not at the
//! operator's terminal.
//!
//! Shaped around what already answers these questions on the command line,
//! so the page cannot disagree with it: a run's JSON is `status RUN_ID
//! --format json` ([`crate::status::run_json`]), events are the journal's
//! records, and an answer goes through the same checks and decision files
//! as `runbook approve` ([`crate::approvals::decide`]). The server keeps no
//! state of its own; the journal is the truth.
//!
//! Safety: loopback unless `--listen` says otherwise; identity only from the
//! trusted proxy's header (`--auth-header`), and read-only without it; a
//! POST must come from the page itself (`Origin` / `Sec-Fetch-Site`), so a
//! link elsewhere cannot approve; every page is escaped server-side and
//! served with a strict Content-Security-Policy (scripts from this server
//! only, no inline script, no frames). Runbooks with `allowed_signers` are
//! not approved here: a page holds no key.

mod api;
mod graph;
mod pages;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, HeaderValue};
use axum::routing::{get, post};
use axum::Router;

use crate::error::{Done, Error, Result};

/// `runbook serve`, resolved.
#[derive(Clone)]
pub struct ServeSettings {
    pub store: Arc<dyn crate::store::Store>,
    pub listen: SocketAddr,
    /// The header the authenticating proxy sets to the user's name.
    pub auth_header: Option<String>,
}

pub(crate) struct Shared {
    pub(crate) store: Arc<dyn crate::store::Store>,
    pub(crate) auth_header: Option<header::HeaderName>,
}

/// The Content-Security-Policy of every answer: nothing but this server's
/// own script and style, no inline code, no frames, no form posts elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn serve(s: ServeSettings) -> Result {
    let auth_header = match &s.auth_header {
        None => None,
        Some(name) => Some(
            header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                Error::invalid(format!("--auth-header `{name}` is not a header name"))
            })?,
        ),
    };
    let shared = Arc::new(Shared {
        store: s.store.clone(),
        auth_header,
    });
    let app = router(shared);
    // Several threads: a handler's store read blocks its thread (a file
    // read, a database query), never the whole server.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .map_err(|e| Error::cannot_start(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(s.listen)
            .await
            .map_err(|e| Error::cannot_start(format!("cannot listen on {}: {e}", s.listen)))?;
        let bound = listener.local_addr().unwrap_or(s.listen);
        let mode = if s.auth_header.is_some() {
            "answers approvals as the user the proxy names"
        } else {
            "read-only: no --auth-header"
        };
        crate::broken_pipe::eprint_line(&format!(
            "serving the runs of {} at http://{bound}/ ({mode})",
            s.store.describe()
        ));
        axum::serve(listener, app)
            .await
            .map_err(|e| Error::cannot_start(format!("the server stopped: {e}")))?;
        Ok(Done::Ok)
    })
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(pages::runs))
        .route("/runs/{run_id}", get(pages::run))
        .route("/assets/run.js", get(pages::script))
        .route("/assets/style.css", get(pages::style))
        .route("/api/runs", get(api::runs))
        .route("/api/runs/{run_id}", get(api::run))
        .route("/api/runs/{run_id}/events", get(api::events))
        .route(
            "/api/runs/{run_id}/steps/{step}/{decision}",
            post(api::answer),
        )
        .route(
            "/runs/{run_id}/steps/{step}/{decision}",
            post(api::answer_form),
        )
        .layer(axum::middleware::map_response(secure_headers))
        .with_state(shared)
}

async fn secure_headers(mut res: axum::response::Response) -> axum::response::Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}
