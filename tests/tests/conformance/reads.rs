//! Reads: a case's history, following the log from a position, and replay of long histories.

use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use wfstate_events::{EmbeddedConfig, EmbeddedLog, EventLog, Workspace};
use wfstate_projector::{ProjectorError, StateChecks, replay, replay_with};
use wfstate_store::{Case, CommitId, Hash, Mutation, Position, Receipt};

use crate::fixtures::{Fixture, case, meta};

pub async fn history_read(fixture: &impl Fixture) {
    let workspace = Workspace::new(fixture.log());
    let (mut a, _) = workspace.create(case("ha"), []).await.unwrap();
    let (mut b, _) = workspace.create(case("hb"), []).await.unwrap();
    let mut positions = vec![a.position()];
    let mut others = Vec::new();
    for _ in 0..40 {
        a.buffer(Mutation::IncrementStepCount);
        positions.push(workspace.commit(&mut a).await.unwrap().position);
        b.buffer(Mutation::IncrementStepCount);
        others.push(workspace.commit(&mut b).await.unwrap().position);
    }
    let log = fixture.log();
    let history = async |after: Position| -> Vec<Position> {
        log.history(&case("ha"), after)
            .await
            .unwrap()
            .map_ok(|e| e.position)
            .try_collect()
            .await
            .unwrap()
    };
    assert_eq!(history(Position::ZERO).await, positions);
    assert_eq!(history(positions[30]).await, positions[31..]);
    // From a position that is another case's event: the case's events after it.
    let after_other = history(others[20]).await;
    let expected: Vec<Position> = positions
        .iter()
        .copied()
        .filter(|position| *position > others[20])
        .collect();
    assert_eq!(after_other, expected);
    let next = log.event_after(&case("ha"), others[20]).await.unwrap();
    assert_eq!(next.map(|e| e.position), expected.first().copied());
    let last = log.last_event(&case("ha")).await.unwrap();
    assert_eq!(last.map(|e| e.position), positions.last().copied());
    let none: Vec<_> = log
        .history(&case("nobody"), Position::ZERO)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(none.is_empty());
}

pub async fn follow_from_a_position(fixture: &impl Fixture) {
    let workspace = Workspace::new(fixture.log());
    let mut receipts = Vec::new();
    for n in 0..5 {
        receipts.push(
            workspace
                .create(case(&format!("f{n}")), [])
                .await
                .unwrap()
                .1,
        );
    }
    let mut events = fixture.log().follow(receipts[1].position).await.unwrap();
    let later = workspace.create(case("f-late"), []).await.unwrap().1;
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push((event.position.get(), event.case_id));
    }
    let expected: Vec<(u64, String)> = receipts[2..]
        .iter()
        .chain([&later])
        .map(|r: &Receipt| (r.position.get(), r.case_id.to_string()))
        .collect();
    assert_eq!(seen, expected);
}

/// Appends `events` commits to a new case, each setting one of 7 ctx keys; the one at
/// `forged_at` (if any) is first appended once more with a wrong state hash.
async fn write_long_case<L: EventLog>(
    log: &L,
    id: &str,
    events: u64,
    forged_at: u64,
) -> (Case, Position) {
    let mut case = Case::new(self::case(id));
    let mut last = Position::ZERO;
    for n in 1..=events {
        case.buffer(Mutation::set_key(format!("k{}", n % 7), n));
        let prepared = case.prepare_commit(meta()).unwrap();
        let mut payloads = vec![Bytes::copy_from_slice(prepared.payload())];
        if n == forged_at {
            let mut forged = prepared.event().clone();
            forged.state_hash = Hash::of(b"forged");
            payloads.insert(0, Bytes::from(forged.encode()));
        }
        for payload in payloads {
            last = log
                .append(case.id(), CommitId::generate(), last, payload)
                .await
                .unwrap()
                .stored_at()
                .unwrap();
        }
        case.complete(prepared).unwrap();
    }
    (case, last)
}

/// A history long enough to be read and folded at the same time (past the first read and
/// over several chunks): replay reaches the writer's state. A replay checks the state hash of
/// the last event; a strict one (every state hash) stops at a forged event with its position.
pub async fn long_replay(fixture: &impl Fixture) {
    let log = fixture.log();
    let (mut writer, last) = write_long_case(&log, "long", 1500, 0).await;
    let replayed = replay(&log, writer.id(), None).await.unwrap();
    assert_eq!(
        (&replayed.state, replayed.last_event_hash, replayed.position),
        (writer.state(), writer.last_event_hash(), last)
    );
    assert_eq!(replayed.events_folded, 1500);

    // A last event that links to the one before but carries another state hash.
    writer.buffer(Mutation::IncrementStepCount);
    let mut forged = writer.prepare_commit(meta()).unwrap().event().clone();
    forged.state_hash = Hash::of(b"forged");
    let forged_last = log
        .append(
            writer.id(),
            CommitId::generate(),
            last,
            Bytes::from(forged.encode()),
        )
        .await
        .unwrap()
        .stored_at()
        .unwrap();
    let error = replay(&log, writer.id(), None).await.unwrap_err();
    assert!(
        matches!(
            error,
            ProjectorError::BadEvent { position, ref source, .. }
                if position == forged_last && source.code().as_str() == "state_hash_mismatch"
        ),
        "{error}"
    );

    write_long_case(&log, "forged", 1500, 700).await;
    let forged_position = log
        .history(&case("forged"), Position::ZERO)
        .await
        .unwrap()
        .skip(699)
        .next()
        .await
        .unwrap()
        .unwrap()
        .position;
    let error = replay_with(&log, &case("forged"), None, StateChecks::Every)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            ProjectorError::BadEvent { position, ref source, .. }
                if position == forged_position && source.code().as_str() == "state_hash_mismatch"
        ),
        "{error}"
    );
    // Sampled, the replay stops at the next event, which does not follow the forged one.
    let error = replay(&log, &case("forged"), None).await.unwrap_err();
    assert!(
        matches!(
            error,
            ProjectorError::BadEvent { position, ref source, .. }
                if position > forged_position && source.code().as_str() == "version_gap"
        ),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_follow_sees_events_written_by_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let reader = EmbeddedLog::open(&EmbeddedConfig::new(dir.path())).unwrap();
    // A second open of the same file has its own writer and no in-process notification link
    // to the first: only polling can see its events.
    let other = EmbeddedLog::open(&EmbeddedConfig::new(dir.path())).unwrap();
    let mut events = reader.follow(Position::ZERO).await.unwrap();
    let workspace = Workspace::new(other);
    let (_, receipt) = workspace.create(case("elsewhere"), []).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (event.position.get(), event.case_id.as_str()),
        (receipt.position.get(), "elsewhere")
    );
}
