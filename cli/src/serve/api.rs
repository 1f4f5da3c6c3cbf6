//! The API's routes. Every answer is JSON; an error is `{"error": {"code", "message"}}`, its
//! HTTP status from the command line's exit code classes: bad input 400, not there 404,
//! conflict 409, try again later 503, a failed check 500.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use serde_json::{Value as Json, json};
use wfstate_projector::{Projector, Until, ViewSource, audit_case};
use wfstate_store::{CaseId, Position, Version};

use super::{Console, LIST_FRESH, Listing};
use crate::backend::Backend;
use crate::error::{BAD_INPUT, CHECK_FAILED, CONFLICT, CliError};
use crate::list::Query;
use crate::output::state_json;

/// The most cases or events a page holds.
const PAGE_MAX: usize = 1000;

/// An error of the API: its status, a code to match on, and a sentence.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_input", message)
    }
}

impl From<CliError> for ApiError {
    fn from(error: CliError) -> Self {
        let (status, code) = match error.code {
            _ if error.not_found => (StatusCode::NOT_FOUND, "not_found"),
            BAD_INPUT => (StatusCode::BAD_REQUEST, "bad_input"),
            CONFLICT => (StatusCode::CONFLICT, "conflict"),
            CHECK_FAILED => (StatusCode::INTERNAL_SERVER_ERROR, "check_failed"),
            _ => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        };
        ApiError::new(status, code, error.lines.join("; "))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, json_headers(), body.to_string()).into_response()
    }
}

fn json_headers() -> [(header::HeaderName, &'static str); 2] {
    [
        (header::CONTENT_TYPE, "application/json"),
        (header::CACHE_CONTROL, "no-store"),
    ]
}

/// A JSON answer.
fn ok(value: &Json) -> Response {
    (StatusCode::OK, json_headers(), value.to_string()).into_response()
}

type Answer = Result<Response, ApiError>;

/// Runs a library call, its error as an API error.
async fn call<T, E: Into<CliError>>(
    future: impl Future<Output = Result<T, E>>,
) -> Result<T, ApiError> {
    future.await.map_err(|error| ApiError::from(error.into()))
}

/// `key=value` pairs of a query, percent-decoded; `+` is a space.
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    let decode = |text: &str| {
        let text = text.replace('+', " ");
        percent_decode(&text)
    };
    query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (bytes[at], bytes.get(at + 1), bytes.get(at + 2)) {
            (b'%', Some(&high), Some(&low)) if hex(high).is_some() && hex(low).is_some() => {
                let value = hex(high).unwrap_or(0) * 16 + hex(low).unwrap_or(0);
                out.push(u8::try_from(value).unwrap_or(b'?'));
                at += 3;
            }
            (byte, ..) => {
                out.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The one value of `key`, checked to be a number within `range`.
fn number(
    pairs: &[(String, String)],
    key: &str,
    default: Option<u64>,
) -> Result<Option<u64>, ApiError> {
    match pairs.iter().rev().find(|(k, _)| k == key) {
        None => Ok(default),
        Some((_, value)) => value
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad(format!("{key}={value:?} is not a whole number"))),
    }
}

/// A page size: 1 to [`PAGE_MAX`].
fn page_size(pairs: &[(String, String)], default: u64) -> Result<usize, ApiError> {
    let limit = number(pairs, "limit", Some(default))?.unwrap_or(default);
    if limit == 0 || limit > PAGE_MAX as u64 {
        return Err(ApiError::bad(format!(
            "limit={limit} is out of range: give 1 to {PAGE_MAX}, and page with offset"
        )));
    }
    Ok(usize::try_from(limit).unwrap_or(PAGE_MAX))
}

fn case_id(text: &str) -> Result<CaseId, ApiError> {
    CaseId::new(text).map_err(|error| ApiError::bad(error.to_string()))
}

/// Refuses query keys a route does not take: a typo is an error, not a silent default.
fn only(pairs: &[(String, String)], known: &[&str]) -> Result<(), ApiError> {
    match pairs.iter().find(|(key, _)| !known.contains(&key.as_str())) {
        Some((key, _)) => Err(ApiError::bad(format!(
            "unknown query parameter {key:?}; this route takes {}",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ))),
        None => Ok(()),
    }
}

/// A failure on `console`'s store, a missing case named with the store.
fn failed<L: Backend>(console: &Console<L>, error: CliError) -> ApiError {
    ApiError::from(error.looked_in(&console.log.name()))
}

/// A version in a path: 1 or more.
fn version_in(text: &str) -> Result<u64, ApiError> {
    text.parse()
        .ok()
        .filter(|version| *version > 0)
        .ok_or_else(|| ApiError::bad(format!("version {text:?} is not a version: give 1 or more")))
}

/// `GET /api/cases?status=&where=&updated_since=&limit=&offset=`: the cases of `list`.
pub async fn cases<L: Backend>(
    State(console): State<Arc<Console<L>>>,
    RawQuery(query): RawQuery,
) -> Answer {
    let pairs = query_pairs(query.as_deref());
    only(
        &pairs,
        &[
            "status",
            "where",
            "updated_since",
            "limit",
            "offset",
            "token",
        ],
    )?;
    let values = |key: &str| -> Vec<String> {
        pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    };
    let since = values("updated_since").pop();
    let parsed = Query::parse(
        &values("status"),
        &values("where"),
        since.as_deref(),
        "updated_since",
    )?;
    let limit = page_size(&pairs, 50)?;
    let offset =
        usize::try_from(number(&pairs, "offset", Some(0))?.unwrap_or(0)).unwrap_or(usize::MAX);
    console.catch_up().await?;
    // One listing is read at a time and reused for a second: many clients listing at once
    // cost one read of the views.
    let key = format!("{:?}|{:?}|{since:?}", values("status"), values("where"));
    let (rows, scanned) = {
        let mut listing = console.listing.lock().await;
        match listing.as_mut() {
            // A listing of the same query is answered at once; past a second it is read
            // again in the background, one reading at a time, while it goes on answering.
            Some(kept) if kept.key == key => {
                if kept.read_at.elapsed() >= LIST_FRESH && !kept.reading {
                    kept.reading = true;
                    tokio::spawn(read_again(Arc::clone(&console), key, parsed));
                }
                (Arc::clone(&kept.rows), kept.scanned)
            }
            _ => {
                let (rows, scanned) = crate::list::rows(&console.views, &parsed).await?;
                let rows = Arc::new(rows);
                *listing = Some(Listing {
                    key,
                    read_at: Instant::now(),
                    rows: Arc::clone(&rows),
                    scanned,
                    reading: false,
                });
                (rows, scanned)
            }
        }
    };
    let page: Vec<Json> = rows
        .iter()
        .skip(offset)
        .take(limit)
        .map(Row::json)
        .collect();
    Ok(ok(&json!({
        "cases": page,
        "matched": rows.len(),
        "scanned": scanned,
        "offset": offset,
        "limit": limit,
    })))
}

use crate::list::Row;

/// Reads the listing of `key` again and keeps it, unless another query's took its place.
async fn read_again<L: Backend>(console: Arc<Console<L>>, key: String, query: Query) {
    let read = crate::list::rows(&console.views, &query).await;
    let mut listing = console.listing.lock().await;
    let Some(kept) = listing.as_mut().filter(|kept| kept.key == key) else {
        return;
    };
    kept.reading = false;
    match read {
        Ok((rows, scanned)) => {
            kept.rows = Arc::new(rows);
            kept.scanned = scanned;
            kept.read_at = Instant::now();
        }
        // The kept listing goes on answering; the next request past a second tries again.
        Err(error) => tracing::warn!("reading the cases again failed: {}", error.lines.join("; ")),
    }
}

/// `GET /api/cases/{case}`: the case's view, or its replay when it has no view yet.
pub async fn view<L: Backend>(
    State(console): State<Arc<Console<L>>>,
    Path(case): Path<String>,
    RawQuery(query): RawQuery,
) -> Answer {
    only(&query_pairs(query.as_deref()), &["token"])?;
    let id = case_id(&case)?;
    console.catch_up().await?;
    if let Some(view) = call(console.views.view(&id)).await? {
        return Ok(ok(&state_json(
            &view.state,
            view.position,
            view.quarantine.as_ref(),
        )));
    }
    let replayed =
        crate::views::replayed_at(&console.log, &id, Until::Position(Position::new(u64::MAX)))
            .await
            .map_err(|error| failed(&console, error))?;
    Ok(ok(&state_json(&replayed.state, replayed.position, None)))
}

/// `GET /api/cases/{case}/versions/{version}`: the case as it was after that version.
pub async fn at_version<L: Backend>(
    State(console): State<Arc<Console<L>>>,
    Path((case, version)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Answer {
    only(&query_pairs(query.as_deref()), &["token"])?;
    let id = case_id(&case)?;
    let version = version_in(&version)?;
    let replayed =
        crate::views::replayed_at(&console.log, &id, Until::Version(Version::new(version)))
            .await
            .map_err(|error| failed(&console, error))?;
    Ok(ok(&state_json(&replayed.state, replayed.position, None)))
}

/// `GET /api/cases/{case}/diff?from=V1&to=V2`.
pub async fn diff<L: Backend>(
    State(console): State<Arc<Console<L>>>,
    Path(case): Path<String>,
    RawQuery(query): RawQuery,
) -> Answer {
    let pairs = query_pairs(query.as_deref());
    only(&pairs, &["from", "to", "token"])?;
    let id = case_id(&case)?;
    let (Some(from), Some(to)) = (number(&pairs, "from", None)?, number(&pairs, "to", None)?)
    else {
        return Err(ApiError::bad(
            "give the two versions: ?from=V1&to=V2 (0 is before the first event)",
        ));
    };
    let diff = crate::diff::between(&console.log, &id, from, to)
        .await
        .map_err(|error| failed(&console, error))?;
    Ok(ok(&diff))
}

/// `GET /api/cases/{case}/history?after=V&limit=N`: the events after version V (0: from the
/// first), a page at a time; `next_after` continues.
pub async fn history<L: Backend>(
    State(console): State<Arc<Console<L>>>,
    Path(case): Path<String>,
    RawQuery(query): RawQuery,
) -> Answer {
    let pairs = query_pairs(query.as_deref());
    only(&pairs, &["after", "limit", "token"])?;
    let id = case_id(&case)?;
    let after = number(&pairs, "after", Some(0))?.unwrap_or(0);
    let limit = page_size(&pairs, 100)?;
    let mut events = call(console.log.history(&id, Position::ZERO)).await?;
    let (mut page, mut seen, mut more) = (Vec::new(), 0_u64, false);
    while let Some(stored) = call(events.try_next()).await? {
        seen += 1;
        // A case's events are its versions in order: the n-th is version n.
        if seen <= after {
            continue;
        }
        if page.len() == limit {
            more = true;
            break;
        }
        page.push(crate::history::event_json(&stored));
    }
    if seen == 0 {
        return Err(failed(&console, CliError::case_not_found(&id)));
    }
    let next_after = more.then(|| after + page.len() as u64);
    Ok(ok(
        &json!({"case_id": id.as_str(), "events": page, "next_after": next_after}),
    ))
}

/// `GET /api/cases/{case}/audit`: the case's chain verified: clean, or where it breaks.
pub async fn audit<L: Backend>(
    State(console): State<Arc<Console<L>>>,
    Path(case): Path<String>,
    RawQuery(query): RawQuery,
) -> Answer {
    only(&query_pairs(query.as_deref()), &["token"])?;
    let id = case_id(&case)?;
    let report = call(audit_case(&console.log, &id, None, |_| {})).await?;
    if report.events == 0 {
        return Err(failed(&console, CliError::case_not_found(&id)));
    }
    Ok(ok(&json!({
        "case_id": id.as_str(),
        "events": report.events,
        "clean": report.is_clean(),
        "problems": report.problems,
    })))
}

/// `GET /api/cases/{case}/receipts/{version}`: the receipt with its inclusion proof and the
/// newest signed checkpoint (400 until a checkpoint covers it, as the command line's exit 2).
pub async fn receipt<L: Backend>(
    State(console): State<Arc<Console<L>>>,
    Path((case, version)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Answer {
    only(&query_pairs(query.as_deref()), &["token"])?;
    let id = case_id(&case)?;
    let version = version_in(&version)?;
    let proven = crate::tree::proven_receipt(&console.log, &id, version)
        .await
        .map_err(|error| failed(&console, error))?;
    Ok(ok(&proven))
}

/// `GET /api/projector`: how far the views lag, and the halted cases.
pub async fn projector<L: Backend>(
    State(console): State<Arc<Console<L>>>,
    RawQuery(query): RawQuery,
) -> Answer {
    only(&query_pairs(query.as_deref()), &["token"])?;
    let mut projector = console.projector.lock().await;
    let Some((projector, _)) = projector.as_mut() else {
        return Ok(ok(&json!({
            "lag": null,
            "halted": [],
            "note": "this console reads the views as the projector left them; its lag is \
                     known to a process that may run it",
        })));
    };
    let lag = call(projector.lag()).await?;
    let quarantined = call(projector.quarantined()).await?;
    let mut halted = Vec::new();
    for record in &quarantined {
        if let Ok(id) = CaseId::new(&record.case_id)
            && let Some(quarantine) = call(projector.view(&id))
                .await?
                .and_then(|view| view.quarantine)
        {
            halted.push(json!({
                "case_id": id.as_str(),
                "position": quarantine.position,
                "code": quarantine.code.as_str(),
                "reason": quarantine.reason,
            }));
        }
    }
    halted.dedup();
    Ok(ok(
        &json!({"lag": lag, "halted": halted, "quarantined": quarantined}),
    ))
}

/// Any other route.
pub async fn unknown_route() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route: the API is under /api/cases, /api/projector and /api/events (README)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_decoded() {
        let pairs = query_pairs(Some("where=ctx.region%3Deu&status=done&x=a+b&bad=%zz"));
        assert_eq!(
            pairs,
            [
                ("where".to_owned(), "ctx.region=eu".to_owned()),
                ("status".to_owned(), "done".to_owned()),
                ("x".to_owned(), "a b".to_owned()),
                ("bad".to_owned(), "%zz".to_owned()),
            ]
        );
        assert!(page_size(&[("limit".into(), "100000".into())], 50).is_err());
        assert!(page_size(&[("limit".into(), "0".into())], 50).is_err());
        assert_eq!(page_size(&[], 50).ok(), Some(50));
    }
}
