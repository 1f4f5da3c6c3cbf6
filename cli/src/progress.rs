//! Progress of the commands that can take long (export, import, `audit`, `verify --all`,
//! `replay`): a bar on stderr when it is a terminal, nothing when it is not or with `--json`.
//! The count comes from the log itself: [`Counted`] counts the events read and appended
//! through it, so the library's commands need no hook.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use wfstate_events::{AppendOutcome, EventLog, EventStream, LogError, StoredEvent};
use wfstate_store::{CaseId, CommitId, Position};

/// A log that counts the events read from it and appended to it.
#[derive(Clone)]
pub struct Counted<L> {
    inner: L,
    count: Arc<AtomicU64>,
}

impl<L: EventLog> Counted<L> {
    fn counting(&self, stream: EventStream) -> EventStream {
        let count = Arc::clone(&self.count);
        Box::pin(stream.inspect(move |event| {
            if event.is_ok() {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }))
    }

    fn appended(&self, outcome: &Result<AppendOutcome, LogError>, events: u64) {
        if let Ok(AppendOutcome::Appended { .. } | AppendOutcome::Duplicate { .. }) = outcome {
            self.count.fetch_add(events, Ordering::Relaxed);
        }
    }
}

impl<L: EventLog> EventLog for Counted<L> {
    async fn append(
        &self,
        case_id: &CaseId,
        commit_id: CommitId,
        expected_position: Position,
        payload: Bytes,
    ) -> Result<AppendOutcome, LogError> {
        let outcome = self
            .inner
            .append(case_id, commit_id, expected_position, payload)
            .await;
        self.appended(&outcome, 1);
        outcome
    }

    async fn append_many(
        &self,
        case_id: &CaseId,
        events: &[(CommitId, Bytes)],
        expected_position: Position,
    ) -> Result<AppendOutcome, LogError> {
        let outcome = self
            .inner
            .append_many(case_id, events, expected_position)
            .await;
        self.appended(&outcome, events.len() as u64);
        outcome
    }

    async fn last_event(&self, case_id: &CaseId) -> Result<Option<StoredEvent>, LogError> {
        self.inner.last_event(case_id).await
    }

    async fn event_after(
        &self,
        case_id: &CaseId,
        position: Position,
    ) -> Result<Option<StoredEvent>, LogError> {
        self.inner.event_after(case_id, position).await
    }

    async fn event_at(&self, position: Position) -> Result<Option<StoredEvent>, LogError> {
        self.inner.event_at(position).await
    }

    async fn history(
        &self,
        case_id: &CaseId,
        after_position: Position,
    ) -> Result<EventStream, LogError> {
        let stream = self.inner.history(case_id, after_position).await?;
        Ok(self.counting(stream))
    }

    async fn follow(&self, after_position: Position) -> Result<EventStream, LogError> {
        let stream = self.inner.follow(after_position).await?;
        Ok(self.counting(stream))
    }

    async fn last_position(&self) -> Result<Position, LogError> {
        self.inner.last_position().await
    }

    fn payload_size_max(&self) -> usize {
        self.inner.payload_size_max()
    }
}

/// A progress bar drawn from a [`Counted`] log's count while it lives; hidden when stderr
/// is not a terminal or the output is JSON.
pub struct Progress {
    bar: Option<ProgressBar>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// Starts showing the progress of work on `log` (`total` events when known), described
    /// by `what`; returns the counted log to do the work on.
    pub fn start<L: EventLog + Clone>(
        log: &L,
        what: &str,
        total: Option<u64>,
        json: bool,
    ) -> (Counted<L>, Progress) {
        let counted = Counted {
            inner: log.clone(),
            count: Arc::default(),
        };
        if json || !std::io::stderr().is_terminal() {
            let hidden = Progress {
                bar: None,
                ticker: None,
            };
            return (counted, hidden);
        }
        let bar = match total {
            Some(total) => ProgressBar::new(total).with_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {pos}/{len} events, {per_sec}, {eta} left",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} {msg}: {pos} events, {per_sec}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        bar.set_message(what.to_owned());
        let (shown, count) = (bar.clone(), Arc::clone(&counted.count));
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                shown.set_position(count.load(Ordering::Relaxed));
            }
        });
        let progress = Progress {
            bar: Some(bar),
            ticker: Some(ticker),
        };
        (counted, progress)
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
        }
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
