//! `wfstate list`: the cases in the views, filtered, the most recently committed first.
//!
//! It is a scan: every view is read once, in pages of 1,024, and only the matching cases'
//! summaries are kept. No index is kept for it, so a commit costs nothing more; a listing
//! costs one read of the views (docs/benchmarks.md has the figure at 100,000 cases).

use std::collections::HashMap;

use clap::Args;
use serde_json::{Value as Json, json};
use wfstate_projector::{ScanCursor, View, ViewScan};
use wfstate_store::CaseStatus;

use crate::backend::Backend;
use crate::commands::print_json;
use crate::error::CliError;
use crate::stdout::out;
use crate::time::{format_ms, parse_instant};

/// What `list` shows.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only cases with this status: running, done, failed or cancelled (repeat for any of
    /// several).
    #[arg(long, value_name = "STATUS")]
    status: Vec<String>,
    /// Only cases whose ctx.KEY or meta.KEY holds VALUE (JSON, or else a string); a KEY with
    /// dots reaches into nested objects. Repeat: every one must hold.
    #[arg(long = "where", value_name = "ctx.KEY=VALUE")]
    filters: Vec<String>,
    /// Only cases committed to at or after T: RFC 3339, a date, or a span back from now (2h).
    #[arg(long, value_name = "T")]
    updated_since: Option<String>,
    /// At most N cases, the most recently committed first; 0 for all.
    #[arg(long, value_name = "N", default_value_t = 50)]
    limit: usize,
}

/// A `--where` filter: a path into ctx or metadata, and the value it must hold.
struct Filter {
    in_metadata: bool,
    path: Vec<String>,
    value: Json,
}

impl Filter {
    fn parse(text: &str) -> Result<Filter, CliError> {
        let hint = "give --where ctx.KEY=VALUE or --where meta.KEY=VALUE, as in --where \
                    ctx.region=eu";
        let Some((path, value)) = text.split_once('=') else {
            return Err(CliError::bad_input(format!(
                "--where {text:?} has no '=': {hint}"
            )));
        };
        let (in_metadata, key) = match path.split_once('.') {
            Some(("ctx", key)) if !key.is_empty() => (false, key),
            Some(("meta" | "metadata", key)) if !key.is_empty() => (true, key),
            _ => {
                return Err(CliError::bad_input(format!(
                    "--where {text:?} names neither ctx.KEY nor meta.KEY: {hint}"
                )));
            }
        };
        Ok(Filter {
            in_metadata,
            path: key.split('.').map(str::to_owned).collect(),
            value: serde_json::from_str(value).unwrap_or_else(|_| Json::String(value.into())),
        })
    }

    fn holds(&self, ctx: &Json, metadata: &Json) -> bool {
        let mut at = if self.in_metadata { metadata } else { ctx };
        for key in &self.path {
            match at.get(key) {
                Some(next) => at = next,
                None => return false,
            }
        }
        *at == self.value
    }
}

fn status(text: &str) -> Result<CaseStatus, CliError> {
    [
        CaseStatus::Running,
        CaseStatus::Done,
        CaseStatus::Failed,
        CaseStatus::Cancelled,
    ]
    .into_iter()
    .find(|status| status.as_str() == text)
    .ok_or_else(|| {
        CliError::bad_input(format!(
            "--status {text:?} is not a status: give running, done, failed or cancelled"
        ))
    })
}

/// A listed case.
pub struct Row {
    case_id: String,
    status: &'static str,
    version: u64,
    steps: u64,
    last_commit_at_ms: u64,
    halted: bool,
}

/// Whether `view` passes the filters.
fn matches(view: &View, statuses: &[CaseStatus], filters: &[Filter], since: Option<u64>) -> bool {
    let state = &view.state;
    if !statuses.is_empty() && !statuses.contains(&state.status) {
        return false;
    }
    if since.is_some_and(|since| state.last_commit_at_ms < since) {
        return false;
    }
    if filters.is_empty() {
        return true;
    }
    let ctx = serde_json::to_value(&state.ctx).unwrap_or(Json::Null);
    let metadata = serde_json::to_value(&state.metadata).unwrap_or(Json::Null);
    filters.iter().all(|filter| filter.holds(&ctx, &metadata))
}

/// What a listing asks for: the filters of `list`, parsed.
pub struct Query {
    statuses: Vec<CaseStatus>,
    filters: Vec<Filter>,
    since: Option<u64>,
}

impl Query {
    /// Parses the filters as `list` takes them (`statuses` as names, `filters` as
    /// `ctx.KEY=VALUE`, `since` as a time); `flag` names the time's option in errors.
    pub fn parse(
        statuses: &[String],
        filters: &[String],
        since: Option<&str>,
        flag: &str,
    ) -> Result<Query, CliError> {
        Ok(Query {
            statuses: statuses
                .iter()
                .map(|text| status(text))
                .collect::<Result<_, _>>()?,
            filters: filters
                .iter()
                .map(|text| Filter::parse(text))
                .collect::<Result<_, _>>()?,
            since: since.map(|text| parse_instant(flag, text)).transpose()?,
        })
    }
}

/// The cases of `views` that match, the most recently committed first, and how many views
/// were read.
pub async fn rows(views: &impl ViewScan, query: &Query) -> Result<(Vec<Row>, u64), CliError> {
    // Keyed by case: a view rewritten during the scan is seen again, newer.
    let mut rows: HashMap<String, Row> = HashMap::new();
    let mut scanned = 0_u64;
    let mut cursor = ScanCursor::default();
    loop {
        let (page, next) = views.scan_page(&cursor).await?;
        scanned += page.len() as u64;
        for view in page {
            let case_id = view.state.case_id.as_str().to_owned();
            if !matches(&view, &query.statuses, &query.filters, query.since) {
                rows.remove(&case_id);
                continue;
            }
            let row = Row {
                case_id: case_id.clone(),
                status: view.state.status.as_str(),
                version: view.state.version.get(),
                steps: view.state.step_count,
                last_commit_at_ms: view.state.last_commit_at_ms,
                halted: view.quarantine.is_some(),
            };
            rows.insert(case_id, row);
        }
        match next {
            Some(next) => cursor = next,
            None => break,
        }
    }
    let mut rows: Vec<Row> = rows.into_values().collect();
    rows.sort_unstable_by(|a, b| {
        (b.last_commit_at_ms, &a.case_id).cmp(&(a.last_commit_at_ms, &b.case_id))
    });
    Ok((rows, scanned))
}

pub async fn list<L: Backend>(log: &L, args: &ListArgs, json: bool) -> Result<u8, CliError> {
    let query = Query::parse(
        &args.status,
        &args.filters,
        args.updated_since.as_deref(),
        "--updated-since",
    )?;
    let views = crate::views::current(log, "listing").await?;
    let (mut rows, scanned) = rows(&views, &query).await?;
    let matched = rows.len();
    if args.limit > 0 {
        rows.truncate(args.limit);
    }
    print_rows(&rows, json);
    if !json {
        let more = if rows.len() < matched {
            "; --limit N shows more, 0 all"
        } else {
            ""
        };
        eprintln!(
            "{} of {matched} matching case(s) shown, of {scanned} in the views{more}",
            rows.len()
        );
    }
    Ok(0)
}

impl Row {
    /// The row as `list --json` prints it.
    pub fn json(&self) -> Json {
        json!({
            "case_id": self.case_id,
            "status": self.status,
            "version": self.version,
            "step_count": self.steps,
            "last_commit_at_ms": self.last_commit_at_ms,
            "last_commit_at": format_ms(self.last_commit_at_ms),
            "halted": self.halted,
        })
    }
}

fn print_rows(rows: &[Row], json: bool) {
    if json {
        for row in rows {
            print_json(&row.json());
        }
        return;
    }
    let width = rows
        .iter()
        .map(|row| row.case_id.len())
        .max()
        .unwrap_or(0)
        .max(4);
    out!(
        "{:<width$}  {:<9}  {:>7}  {:>6}  LAST COMMIT",
        "CASE",
        "STATUS",
        "VERSION",
        "STEPS"
    );
    for row in rows {
        let status = if row.halted {
            format!("{} (halted)", row.status)
        } else {
            row.status.to_owned()
        };
        out!(
            "{:<width$}  {:<9}  {:>7}  {:>6}  {}",
            row.case_id,
            status,
            row.version,
            row.steps,
            format_ms(row.last_commit_at_ms)
        );
    }
}
