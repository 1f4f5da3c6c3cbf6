//! Long histories through a pull consumer read on a subscription of the store's own: each
//! delivery is a plain message, where an async-nats consumer stream builds a JetStream
//! message (a context clone, a second parse of its reply subject) for every event. This
//! reads a long case in about three quarters of the time, which a replay feels directly.
//!
//! What the async-nats ordered consumer does for the store, this does too: the consumer
//! delivers in stream order without acknowledgements, a gap in its delivery sequence or a
//! silent server makes a new consumer start after the last event handed out, and the
//! consumer is deleted when the reader is done or dropped.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer;
use futures::StreamExt;
use wfstate_store::{CaseId, CommitId, Position};

use super::JetStreamLog;
use crate::error::{LogError, LogErrorKind};
use crate::log::{EventStream, StoredEvent};

/// The most events one pull request asks for; the next is sent when half have arrived, so
/// at most one and a half requests' worth are in flight.
const PULL_BATCH: usize = 1024;

/// The most bytes one pull request asks for (raised to fit the largest event).
const PULL_BYTES: usize = 8 << 20;

/// How many new consumers one read may start before it reports the server unavailable.
const RESTARTS_MAX: u32 = 5;

/// How long an unread consumer outlives a reader that vanished without deleting it.
const INACTIVE_THRESHOLD: Duration = Duration::from_secs(30);

/// The server's pull request status headers: the part of the request left unserved.
const PENDING_MESSAGES: &str = "Nats-Pending-Messages";

impl JetStreamLog {
    /// The events of `filter` after `position` up to `last`, through a pull consumer.
    ///
    /// # Errors
    /// As creating a consumer: [`LogErrorKind::PermissionDenied`] for a connection that may
    /// not, which then reads in batched direct gets.
    pub(crate) async fn history_in_pulls(
        &self,
        case_id: &CaseId,
        position: Position,
        last: Position,
    ) -> Result<EventStream, LogError> {
        let puller =
            Puller::start(self.clone(), self.stored_subject(case_id), position, last).await?;
        Ok(Box::pin(futures::stream::unfold(
            Some(puller),
            |puller| async move {
                let mut puller = puller?;
                match puller.next().await {
                    Ok(event) if event.position >= puller.last => Some((Ok(event), None)),
                    Ok(event) => Some((Ok(event), Some(puller))),
                    Err(error) => Some((Err(error), None)),
                }
            },
        )))
    }
}

/// A read in progress: its consumer, its subscription and what it asked for.
struct Puller {
    log: JetStreamLog,
    filter: String,
    /// The last event handed out.
    position: Position,
    /// The last event to read.
    last: Position,
    consumer: String,
    inbox: String,
    subscriber: async_nats::Subscriber,
    /// Events asked for and neither received nor given up by the server.
    pending: usize,
    /// The delivery sequence the consumer's next event must carry.
    next_delivery: u64,
    restarts: u32,
}

impl Puller {
    async fn start(
        log: JetStreamLog,
        filter: String,
        position: Position,
        last: Position,
    ) -> Result<Puller, LogError> {
        let (consumer, inbox, subscriber) = open(&log, &filter, position).await?;
        Ok(Puller {
            log,
            filter,
            position,
            last,
            consumer,
            inbox,
            subscriber,
            pending: 0,
            next_delivery: 1,
            restarts: 0,
        })
    }

    /// The next event after [`Puller::position`].
    async fn next(&mut self) -> Result<StoredEvent, LogError> {
        loop {
            if self.pending <= PULL_BATCH / 2 {
                self.ask().await?;
            }
            let waited =
                tokio::time::timeout(self.log.request_timeout, self.subscriber.next()).await;
            let Ok(Some(message)) = waited else {
                // A consumer lost with its server, or a subscription closed: start over.
                self.restart().await?;
                continue;
            };
            if let Some(status) = message.status {
                match (status.as_u16(), unserved(message.headers.as_ref())) {
                    // What the server gave up of a request (timed out, byte limit reached).
                    (_, Some(unserved)) => self.pending = self.pending.saturating_sub(unserved),
                    // A heartbeat.
                    (100, None) => {}
                    // A leadership change, a deleted consumer, or an unexpected answer.
                    _ => self.restart().await?,
                }
                continue;
            }
            let Some((position, delivery)) = message.reply.as_deref().and_then(sequences) else {
                return Err(LogError::new(
                    LogErrorKind::Unexpected,
                    format!(
                        "reading events from {}: a delivery without its stream sequence",
                        self.log.urls
                    ),
                ));
            };
            if delivery != self.next_delivery {
                // A delivery lost on the way: start again after the last event handed out.
                self.restart().await?;
                continue;
            }
            self.next_delivery += 1;
            self.pending = self.pending.saturating_sub(1);
            let position = Position::new(position);
            if position <= self.position {
                continue;
            }
            self.position = position;
            let commit_id = message
                .headers
                .as_ref()
                .and_then(|headers| headers.get(async_nats::header::NATS_MESSAGE_ID))
                .map(async_nats::HeaderValue::as_str);
            return Ok(StoredEvent::from_message(
                &self.log.subject_prefix,
                position,
                &message.subject,
                commit_id,
                message.payload,
            ));
        }
    }

    /// Asks the consumer for its next batch.
    async fn ask(&mut self) -> Result<(), LogError> {
        let bytes = PULL_BYTES.max(2 * self.log.payload_size_max);
        let request = format!(
            "{{\"batch\":{PULL_BATCH},\"max_bytes\":{bytes},\"expires\":{}}}",
            // Longer than a reader waits: a request ends by delivering, not by expiring.
            2 * self.log.request_timeout.as_nanos(),
        );
        let subject = format!(
            "$JS.API.CONSUMER.MSG.NEXT.{}.{}",
            self.log.stream_name(),
            self.consumer
        );
        self.log
            .client
            .publish_with_reply(subject, self.inbox.clone(), request.into())
            .await
            .map_err(|error| {
                LogError::new(
                    LogErrorKind::Unavailable,
                    format!("reading events from {}; try again later", self.log.urls),
                )
                .with_source(error)
            })?;
        self.pending += PULL_BATCH;
        Ok(())
    }

    /// A new consumer from after the last event handed out, in place of one that failed.
    async fn restart(&mut self) -> Result<(), LogError> {
        self.restarts += 1;
        if self.restarts > RESTARTS_MAX {
            return Err(LogError::new(
                LogErrorKind::Unavailable,
                format!(
                    "reading events from {}: the server stopped delivering after position {}; \
                     try again later",
                    self.log.urls, self.position
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100) * self.restarts).await;
        delete_later(&self.log, &self.consumer);
        let (consumer, inbox, subscriber) = open(&self.log, &self.filter, self.position).await?;
        (self.consumer, self.inbox, self.subscriber) = (consumer, inbox, subscriber);
        self.pending = 0;
        self.next_delivery = 1;
        Ok(())
    }
}

impl Drop for Puller {
    fn drop(&mut self) {
        delete_later(&self.log, &self.consumer);
    }
}

/// A consumer of `filter` from after `position`, and the subscription its deliveries come to.
async fn open(
    log: &JetStreamLog,
    filter: &str,
    position: Position,
) -> Result<(String, String, async_nats::Subscriber), LogError> {
    let name = format!("wfstate-read-{}", CommitId::generate());
    log.stream
        .create_consumer(consumer::pull::Config {
            name: Some(name.clone()),
            filter_subject: filter.to_owned(),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: position.get() + 1,
            },
            ack_policy: consumer::AckPolicy::None,
            memory_storage: true,
            num_replicas: 1,
            inactive_threshold: INACTIVE_THRESHOLD,
            ..consumer::pull::Config::default()
        })
        .await
        .map_err(|error| log.consumer_error(error))?;
    let inbox = log.client.new_inbox();
    let subscriber = log.client.subscribe(inbox.clone()).await.map_err(|error| {
        delete_later(log, &name);
        LogError::new(
            LogErrorKind::Unavailable,
            format!("reading events from {}; try again later", log.urls),
        )
        .with_source(error)
    })?;
    Ok((name, inbox, subscriber))
}

/// Deletes a reader's consumer without waiting: the inactive threshold removes it anyway.
fn delete_later(log: &JetStreamLog, consumer: &str) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let (stream, consumer) = (log.stream.clone(), consumer.to_owned());
        runtime.spawn(async move { stream.delete_consumer(&consumer).await });
    }
}

/// How many of a request's events the server will not deliver, from its status headers.
fn unserved(headers: Option<&HeaderMap>) -> Option<usize> {
    headers?.get(PENDING_MESSAGES)?.as_str().parse().ok()
}

/// The stream and delivery sequences in a delivery's reply subject (ADR-15:
/// `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<delivery seq>.<time>.<pending>`, or
/// with a domain and an account hash before the stream and optional tokens after).
fn sequences(reply: &str) -> Option<(u64, u64)> {
    let rest = reply.strip_prefix("$JS.ACK.")?;
    let mut tokens = [""; 9];
    let mut count = 0;
    for token in rest.split('.') {
        if count < tokens.len() {
            tokens[count] = token;
        }
        count += 1;
    }
    let first = match count {
        7 => 3,
        9.. => 5,
        _ => return None,
    };
    Some((tokens[first].parse().ok()?, tokens[first + 1].parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_reply_forms_give_their_sequences() {
        assert_eq!(
            sequences("$JS.ACK.WFSTATE.r1.1.4711.12.1733000000000000000.88"),
            Some((4711, 12))
        );
        assert_eq!(
            sequences("$JS.ACK._.ACCHASH.WFSTATE.r1.1.4711.12.1733000000000000000.88.tok"),
            Some((4711, 12))
        );
        assert_eq!(
            sequences("$JS.ACK.hub.ACCHASH.WFSTATE.r1.1.4711.12.1733000000000000000.88"),
            Some((4711, 12))
        );
        for bad in [
            "$JS.ACK.WFSTATE.r1.1.4711",
            "$JS.ACK.WFSTATE.r1.1.x.12.1.0",
            "_INBOX.abc",
        ] {
            assert_eq!(sequences(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_unserved_part_of_a_request_is_read_from_its_status() {
        let mut headers = HeaderMap::new();
        headers.insert(PENDING_MESSAGES, "612");
        assert_eq!(unserved(Some(&headers)), Some(612));
        assert_eq!(unserved(Some(&HeaderMap::new())), None);
        assert_eq!(unserved(None), None);
    }
}
