//! `wfstate serve`: a read-only HTTP JSON API and a web console over the same store every
//! command uses. It never commits; where it may write it keeps the views caught up (as
//! `show` and `list` do), at most once a second. It binds to loopback unless told otherwise,
//! and beyond loopback it requires a bearer token.

mod api;
mod events;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Args;
use tokio::sync::{Mutex, Semaphore};
use wfstate_projector::Projector;

use crate::backend::Backend;
use crate::error::CliError;
use crate::list::Row;

/// Where `serve` listens and who may read.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The address to listen on; beyond loopback it needs --api-token.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR:PORT")]
    listen: SocketAddr,
    /// Require `Authorization: Bearer TOKEN` on every request (the page takes it once, as
    /// `#token=TOKEN` in its address).
    #[arg(long, env = "WFSTATE_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
}

/// The most event streams open at once; more are refused (503) until one closes.
pub const STREAMS_OPEN: usize = 256;

/// How long a list of cases is answered before it is read again (in the background, the
/// kept one answering meanwhile).
const LIST_FRESH: Duration = Duration::from_secs(1);

/// The console's shared state.
pub struct Console<L: Backend> {
    log: L,
    views: L::Views,
    /// The projector, when this process may write the views: caught up at most once a
    /// second before views are read.
    projector: Mutex<Option<(L::Projector, Instant)>>,
    token: Option<String>,
    /// The last listing: its query, when it was read, its rows and how many views were read.
    listing: Mutex<Option<Listing>>,
    reads: Semaphore,
    /// Slots of open event streams: each stream holds one while it is open.
    pub streams: Arc<Semaphore>,
}

/// A listing kept for [`LIST_FRESH`].
struct Listing {
    key: String,
    read_at: Instant,
    rows: Arc<Vec<Row>>,
    scanned: u64,
    /// Whether a reading of it again is under way.
    reading: bool,
}

impl<L: Backend> Console<L> {
    /// Brings the views up to date, if this process may and it has not within a second;
    /// a request that finds another doing it reads the views as they are.
    async fn catch_up(&self) -> Result<(), CliError> {
        let Ok(mut projector) = self.projector.try_lock() else {
            return Ok(());
        };
        if let Some((projector, caught_up)) = projector.as_mut()
            && caught_up.elapsed() >= Duration::from_secs(1)
        {
            projector.catch_up().await?;
            *caught_up = Instant::now();
        }
        Ok(())
    }
}

pub async fn run<L: Backend>(log: &L, args: &ServeArgs, json: bool) -> Result<u8, CliError> {
    if !args.listen.ip().is_loopback() && args.api_token.is_none() {
        return Err(CliError::bad_input(format!(
            "{} is not a loopback address: serving beyond this machine needs --api-token \
             (or WFSTATE_API_TOKEN), which every request must then carry",
            args.listen
        )));
    }
    if args.api_token.as_deref().is_some_and(str::is_empty) {
        return Err(CliError::bad_input("--api-token must not be empty"));
    }
    // Caught up once here, where it may: the views then exist to be read. A store that
    // refuses these rights is served as the projector left it.
    let projector = match log.projector().await {
        Ok(mut projector) => {
            projector.catch_up().await?;
            Some((projector, Instant::now()))
        }
        Err(error) if crate::views::refused(&error) => {
            eprintln!(
                "wfstate: serving the views as the projector left them: this store may not be \
                 written with these rights ({error})"
            );
            None
        }
        Err(error) => return Err(error.into()),
    };
    let console = Arc::new(Console {
        views: log.views().await?,
        log: log.clone(),
        projector: Mutex::new(projector),
        token: args.api_token.clone(),
        listing: Mutex::new(None),
        reads: Semaphore::new(L::CONCURRENT_READS),
        streams: Arc::new(Semaphore::new(STREAMS_OPEN)),
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|error| {
            CliError::bad_input(format!(
                "cannot listen on {}: {error}; give another --listen address",
                args.listen
            ))
        })?;
    let bound = listener.local_addr().map_err(|error| {
        CliError::new(
            crate::error::UNAVAILABLE,
            format!("the listener failed: {error}"),
        )
    })?;
    let router = Router::new()
        .route("/", get(page))
        .route("/api/cases", get(api::cases::<L>))
        .route("/api/cases/{case}", get(api::view::<L>))
        .route(
            "/api/cases/{case}/versions/{version}",
            get(api::at_version::<L>),
        )
        .route("/api/cases/{case}/diff", get(api::diff::<L>))
        .route("/api/cases/{case}/history", get(api::history::<L>))
        .route("/api/cases/{case}/audit", get(api::audit::<L>))
        .route(
            "/api/cases/{case}/receipts/{version}",
            get(api::receipt::<L>),
        )
        .route("/api/projector", get(api::projector::<L>))
        .route("/api/events", get(events::events::<L>))
        .fallback(api::unknown_route)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&console),
            guard::<L>,
        ))
        .with_state(console);
    let store = log.name();
    if json {
        crate::commands::print_json(
            &serde_json::json!({"listening": format!("http://{bound}/"), "store": store}),
        );
    } else {
        crate::stdout::out!("serving {store} on http://{bound}/ (read only; Ctrl-C stops)");
    }
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|error| {
            CliError::new(
                crate::error::UNAVAILABLE,
                format!("the server failed: {error}"),
            )
        })?;
    Ok(0)
}

/// Every request: the bearer token when one is required, and one of the store's
/// [`Backend::CONCURRENT_READS`] slots for an API request that reads it.
async fn guard<L: Backend>(
    State(console): State<Arc<Console<L>>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(token) = &console.token {
        let expected = format!("Bearer {token}");
        let header_ok = request
            .headers()
            .get(header::AUTHORIZATION)
            .is_some_and(|value| constant_time_eq(value.as_bytes(), expected.as_bytes()));
        // An event stream (EventSource) cannot set headers: it may carry the token in its
        // query instead.
        let query_ok = request.uri().path() == "/api/events"
            && api::query_pairs(request.uri().query())
                .iter()
                .any(|(key, value)| {
                    key == "token" && constant_time_eq(value.as_bytes(), token.as_bytes())
                });
        // The page itself holds no data: it asks for the token and sends it with each call.
        if !(header_ok || query_ok || request.uri().path() == "/") {
            let mut response = api::ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this console requires a bearer token: send Authorization: Bearer TOKEN",
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    // The page, the event streams (which take a slot of their own) and the list (read by
    // one request at a time and shared, under its own lock) do not wait here: a case page
    // never queues behind a listing.
    let path = request.uri().path();
    if path == "/" || path == "/api/events" || path == "/api/cases" {
        return next.run(request).await;
    }
    let Ok(_slot) = console.reads.acquire().await else {
        return api::ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the console is shutting down",
        )
        .into_response();
    };
    next.run(request).await
}

/// Equality that takes as long whatever the first difference: a token is not guessed byte by
/// byte from response times.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The page: one file, built into the binary.
async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        include_str!("page.html"),
    )
        .into_response()
}
