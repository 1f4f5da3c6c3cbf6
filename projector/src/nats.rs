//! The projector's JetStream plumbing: receiving fetched messages as stored events, opening its
//! buckets, and what a failed call means.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv};
use futures::StreamExt;
use wfstate_events::{LogError, LogErrorKind, StoredEvent};

use crate::ProjectorError;

/// A fetched message and the event it carries.
pub(crate) type Received = (jetstream::Message, StoredEvent);

/// A batch being received.
pub(crate) type Fetched = tokio::task::JoinHandle<Result<Batch, ProjectorError>>;

/// A received batch.
pub(crate) struct Batch {
    /// Every message and the event it carries.
    pub(crate) received: Vec<Received>,
    /// Whether the server ended it at its byte limit (the next event did not fit).
    pub(crate) full_by_bytes: bool,
}

/// How the server ends a pull request at its byte limit (nats-server's consumer.go), which
/// async-nats reports as an error holding only this text.
const MAX_BYTES_STATUS: &str = "Message Size Exceeds MaxBytes";

/// Receives a fetched batch.
pub(crate) async fn receive(
    mut messages: consumer::pull::Batch,
    batch: usize,
    prefix: String,
) -> Result<Batch, ProjectorError> {
    let mut received = Vec::with_capacity(batch);
    while let Some(message) = messages.next().await {
        let message = match message {
            Ok(message) => message,
            Err(error) if error.to_string().contains(MAX_BYTES_STATUS) => {
                return Ok(Batch {
                    received,
                    full_by_bytes: true,
                });
            }
            Err(error) => return Err(failed("receiving events", error)),
        };
        let stored = StoredEvent::from_consumed(&prefix, &message)?;
        received.push((message, stored));
    }
    Ok(Batch {
        received,
        full_by_bytes: false,
    })
}

pub(crate) fn failed(what: &str, error: impl Into<wfstate_events::BoxError>) -> ProjectorError {
    ProjectorError::Log(LogError::from_nats(what, error))
}

/// A task of the projector's own that ended without an answer (it panicked).
pub(crate) fn task_failed(what: &str, error: tokio::task::JoinError) -> ProjectorError {
    ProjectorError::Log(
        LogError::new(LogErrorKind::Unexpected, format!("{what}: the task failed"))
            .with_source(error),
    )
}

/// Opens the bucket `name`, or creates it with `replicas` replicas; an existing bucket with
/// fewer is refused, saying what to change.
pub(crate) async fn bucket(
    context: &jetstream::Context,
    name: &str,
    replicas: usize,
) -> Result<kv::Store, ProjectorError> {
    if let Ok(store) = context.get_key_value(name).await {
        let status = store
            .status()
            .await
            .map_err(|e| failed(&format!("reading KV bucket {name}"), e))?;
        let actual = status.info.config.num_replicas;
        if actual < replicas {
            return Err(ProjectorError::Log(LogError::new(
                LogErrorKind::Config,
                format!(
                    "KV bucket {name} has {actual} replica(s), fewer than the {replicas} asked \
                     for: raise them (nats kv edit {name} --replicas {replicas}) or ask for \
                     {actual} (--replicas, WFSTATE_REPLICAS)"
                ),
            )));
        }
        return answering(store, name).await;
    }
    let store = context
        .create_key_value(kv::Config {
            bucket: name.to_owned(),
            history: 1,
            storage: jetstream::stream::StorageType::File,
            num_replicas: replicas,
            ..kv::Config::default()
        })
        .await
        .map_err(|e| {
            failed(
                &format!("creating KV bucket {name} with {replicas} replica(s)"),
                e,
            )
        })?;
    answering(store, name).await
}

/// How long a bucket's replicas may take to serve reads once it exists.
const READY_WAIT: Duration = Duration::from_secs(10);

/// `store`, once a read of it is answered. A replicated bucket just created or elected serves
/// direct gets only when its replicas have subscribed and the cluster has learned of it;
/// before that a read finds no responders.
async fn answering(store: kv::Store, name: &str) -> Result<kv::Store, ProjectorError> {
    let deadline = tokio::time::Instant::now() + READY_WAIT;
    loop {
        let error = match store.entry("wfstate-ready").await {
            Ok(_) => return Ok(store),
            Err(error) => failed(&format!("reading KV bucket {name}"), error),
        };
        let retryable =
            matches!(&error, ProjectorError::Log(e) if e.kind() == LogErrorKind::Unavailable);
        if !retryable || tokio::time::Instant::now() >= deadline {
            return Err(error);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
