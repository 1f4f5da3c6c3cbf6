//! `GET /api/events[?case=ID]`: server-sent events, one a commit as it lands in the log
//! (`{"case_id", "version", "position"}`), for the page's live updates. A comment line every
//! 15 s keeps proxies from closing an idle stream.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::json;
use wfstate_store::Event;

use super::Console;
use super::api::{ApiError, query_pairs};
use crate::backend::Backend;

/// How often an idle stream says it is alive.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub async fn events<L: Backend>(
    State(console): State<Arc<Console<L>>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let pairs = query_pairs(query.as_deref());
    if let Some((key, _)) = pairs
        .iter()
        .find(|(key, _)| key != "case" && key != "token")
    {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "bad_input",
            format!("unknown query parameter {key:?}; this route takes case"),
        ));
    }
    let case = pairs
        .into_iter()
        .find(|(key, _)| key == "case")
        .map(|(_, case)| case);
    let Ok(slot) = Arc::clone(&console.streams).try_acquire_owned() else {
        return Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!(
                "{} event streams are open, the most this console keeps; try again later",
                super::STREAMS_OPEN
            ),
        ));
    };
    let log = console.log.clone();
    let last = log
        .last_position()
        .await
        .map_err(|error| ApiError::from(crate::error::CliError::from(error)))?;
    let commits = log
        .follow(last)
        .await
        .map_err(|error| ApiError::from(crate::error::CliError::from(error)))?;
    let commits = commits.filter_map(move |stored| {
        let wanted = match &stored {
            Ok(stored) => case.as_ref().is_none_or(|case| *case == stored.case_id),
            Err(_) => true,
        };
        futures::future::ready(wanted.then_some(stored))
    });
    // The stream holds its slot until the client goes and the body is dropped.
    let lines = commits.map(move |stored| {
        let _open = &slot;
        let data = match stored {
            Ok(stored) => {
                let version = Event::decode(&stored.payload)
                    .ok()
                    .map(|event| event.version);
                json!({"case_id": stored.case_id, "version": version, "position": stored.position})
            }
            Err(error) => json!({"error": error.to_string()}),
        };
        Ok::<_, Infallible>(Bytes::from(format!("data: {data}\n\n")))
    });
    let alive = futures::stream::unfold((), |()| async {
        tokio::time::sleep(KEEP_ALIVE).await;
        Some((Ok::<_, Infallible>(Bytes::from_static(b": alive\n\n")), ()))
    });
    let opened =
        futures::stream::once(async { Ok::<_, Infallible>(Bytes::from_static(b": open\n\n")) });
    let body = Body::from_stream(opened.chain(futures::stream::select(lines, alive)));
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}
