//! (3): replay of one long case next to a raw ordered read of its messages.

use async_nats::jetstream::message::PublishMessage;
use futures::StreamExt;
use wfstate_events::JetStreamLog;
use wfstate_projector::{StateChecks, replay_with};
use wfstate_store::{Case, CaseId, CommitId, CommitMeta, Mutation, Value};

use crate::figure::{Figure, best, finish, phase_start};
use crate::{BenchArgs, BenchError, bench_error};

/// (3): replay of a long case (the default checks, and every state hash), next to a raw
/// ordered read of its messages; each runs three times, in mirrored order (ABC CBA ABC), and
/// keeps its best: one reading is half a second, where a neighbour's burst weighs.
pub(crate) async fn long_replay(
    log: &JetStreamLog,
    args: &BenchArgs,
) -> Result<(Figure, Figure, Figure), BenchError> {
    let long_case = CaseId::new("long").map_err(bench_error)?;
    write_long_case(log, &long_case, args.replay_events).await?;
    let mut results: Option<(Figure, Figure, Figure)> = None;
    for round in 0..3 {
        let (mut raw, mut ours, mut strict) = (None, None, None);
        for side in if round == 1 { [2, 1, 0] } else { [0, 1, 2] } {
            match side {
                0 => raw = Some(raw_read(log, &long_case, args.replay_events).await?),
                1 => ours = Some(replay_long(log, &long_case, StateChecks::Sampled).await?),
                _ => strict = Some(replay_long(log, &long_case, StateChecks::Every).await?),
            }
        }
        let (Some(raw), Some(ours), Some(strict)) = (raw, ours, strict) else {
            return Err(bench_error("a side of (3) did not run"));
        };
        results = Some(match results {
            None => (ours, strict, raw),
            Some((o, s, r)) => (best(o, ours), best(s, strict), best(r, raw)),
        });
    }
    results.ok_or_else(|| bench_error("(3) did not run"))
}

/// Writes a long case quickly (a fixture, not measured): prepared events, pipelined.
async fn write_long_case(
    log: &JetStreamLog,
    case_id: &CaseId,
    events: usize,
) -> Result<(), BenchError> {
    let mut case = Case::new(case_id.clone());
    let mut acks = futures::stream::FuturesOrdered::new();
    for n in 0..events {
        case.buffer(Mutation::set_key(
            format!("k{}", n % 16),
            Value::from(n as u64),
        ))
        .buffer(Mutation::IncrementStepCount);
        let meta = CommitMeta {
            commit_id: CommitId::generate(),
            committed_at_ms: n as u64,
            writer: "bench".into(),
        };
        let prepared = case.prepare_commit(meta).map_err(bench_error)?;
        let message = PublishMessage::build()
            .payload(prepared.payload_bytes())
            .message_id(prepared.event().commit_id.to_string());
        let ack = log
            .context()
            .send_publish(log.subject(case_id), message)
            .await
            .map_err(bench_error)?;
        acks.push_back(std::future::IntoFuture::into_future(ack));
        case.complete(prepared).map_err(bench_error)?;
        if acks.len() >= 512 {
            acks.next().await.transpose().map_err(bench_error)?;
        }
    }
    while let Some(ack) = acks.next().await {
        ack.map_err(bench_error)?;
    }
    Ok(())
}

async fn raw_read(
    log: &JetStreamLog,
    case_id: &CaseId,
    events: usize,
) -> Result<Figure, BenchError> {
    let stream = log
        .context()
        .get_stream(log.stream_name())
        .await
        .map_err(bench_error)?;
    let filter_subject = log.subject(case_id);
    let started = phase_start();
    // In a task, like replay.
    tokio::spawn(async move {
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
                filter_subject,
                ..Default::default()
            })
            .await
            .map_err(bench_error)?;
        let mut messages = consumer.messages().await.map_err(bench_error)?;
        let mut bytes = 0;
        for _ in 0..events {
            let message = messages
                .next()
                .await
                .ok_or_else(|| bench_error("the stream ended"))?
                .map_err(bench_error)?;
            bytes += message.payload.len();
        }
        std::hint::black_box(bytes);
        Ok::<(), BenchError>(())
    })
    .await
    .map_err(bench_error)??;
    Ok(finish(started, events, Vec::new()))
}

async fn replay_long(
    log: &JetStreamLog,
    case_id: &CaseId,
    checks: StateChecks,
) -> Result<Figure, BenchError> {
    let (log, case_id) = (log.clone(), case_id.clone());
    let started = phase_start();
    let replayed = tokio::spawn(async move { replay_with(&log, &case_id, None, checks).await })
        .await
        .map_err(bench_error)??;
    Ok(finish(
        started,
        usize::try_from(replayed.events_folded).unwrap_or(0),
        Vec::new(),
    ))
}
