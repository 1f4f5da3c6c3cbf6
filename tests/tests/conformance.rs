//! One conformance suite, written once and run against both backends (JetStream on a real
//! nats-server, and the embedded SQLite log): commit and receipt, dedup, conflicts, lost-ack
//! retries, history, follow, projector idempotence and quarantine, invalid ids; plus export
//! and import between the backends, and the client's answer to a transient sequence conflict.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers stop the test at the first setup error"
)]

use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use wfstate_events::{
    AppendOutcome, CommitError, CommitErrorKind, EmbeddedConfig, EmbeddedLog, EventLog,
    JetStreamConfig, JetStreamLog, LogError, StoredEvent, Workspace,
};
use wfstate_projector::{
    EmbeddedProjector, JetStreamProjector, Projector, ProjectorConfig, ProjectorError, ViewSource,
    audit_all, export, import, replay, verify,
};
use wfstate_store::{Case, CaseId, CommitId, CommitMeta, Hash, Mutation, Receipt};
use wfstate_tests::NatsServer;

trait Fixture {
    type Log: EventLog + Clone;
    type Projector: Projector;
    fn log(&self) -> Self::Log;
    async fn projector(&self) -> Self::Projector;
}

struct JetStream {
    _server: NatsServer,
    log: JetStreamLog,
}

impl JetStream {
    async fn start() -> Self {
        let server = NatsServer::start().await;
        let log = JetStreamLog::connect(&JetStreamConfig::new(server.url()))
            .await
            .unwrap();
        JetStream {
            _server: server,
            log,
        }
    }
}

impl Fixture for JetStream {
    type Log = JetStreamLog;
    type Projector = JetStreamProjector;
    fn log(&self) -> JetStreamLog {
        self.log.clone()
    }
    async fn projector(&self) -> JetStreamProjector {
        let config = ProjectorConfig {
            batch: 32,
            fetch_wait: Duration::from_millis(100),
            ..ProjectorConfig::default()
        };
        JetStreamProjector::open(&self.log, config).await.unwrap()
    }
}

struct Embedded {
    _dir: tempfile::TempDir,
    log: EmbeddedLog,
}

impl Embedded {
    #[expect(
        clippy::unused_async,
        reason = "the conformance macro awaits every fixture's start"
    )]
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(&EmbeddedConfig::new(dir.path())).unwrap();
        Embedded { _dir: dir, log }
    }
}

impl Fixture for Embedded {
    type Log = EmbeddedLog;
    type Projector = EmbeddedProjector;
    fn log(&self) -> EmbeddedLog {
        self.log.clone()
    }
    async fn projector(&self) -> EmbeddedProjector {
        EmbeddedProjector::open(self.log.path(), "test", 32).unwrap()
    }
}

fn case(id: &str) -> CaseId {
    CaseId::new(id).unwrap()
}

fn meta() -> CommitMeta {
    CommitMeta {
        commit_id: CommitId::generate(),
        committed_at_ms: 1_700_000_000_000,
        writer: "w".into(),
    }
}

/// Appends raw bytes as the case's next event, around the commit client.
async fn inject<L: EventLog>(log: &L, case_id: &str, payload: &[u8]) -> u64 {
    let id = case(case_id);
    let last = log
        .last_event(&id)
        .await
        .unwrap()
        .map_or(0, |event| event.position);
    log.append(
        &id,
        CommitId::generate(),
        last,
        Bytes::copy_from_slice(payload),
    )
    .await
    .unwrap()
    .stored_at()
    .unwrap()
}

async fn commit_and_receipt(fixture: &impl Fixture) {
    let workspace = Workspace::new(fixture.log());
    let (mut handle, first) = workspace
        .create(case("c1"), [Mutation::set_key("a", 1)])
        .await
        .unwrap();
    handle.case_mut().buffer(Mutation::IncrementStepCount);
    let second = workspace.commit(&mut handle).await.unwrap();
    assert_eq!((first.version, second.version), (1, 2));
    assert_eq!(second.prev_event_hash, first.event_hash);
    assert_eq!(second.state_hash, handle.case().state().hash());
    let loaded = workspace.load(&case("c1")).await.unwrap();
    assert_eq!(loaded.case().state(), handle.case().state());
    assert_eq!(loaded.position(), second.position);
    assert_eq!(
        workspace.create(case("c1"), []).await.unwrap_err().kind(),
        CommitErrorKind::CaseExists
    );
    assert_eq!(
        workspace.load(&case("none")).await.unwrap_err().kind(),
        CommitErrorKind::CaseNotFound
    );
}

/// A commit future dropped after its append was sent (a time-out or a `select!` around the
/// commit) may still land: the handle keeps the commit in doubt, with its trial undone, and the
/// next `transact_on` sends it again instead of applying the change a second time.
async fn a_dropped_commit_is_in_doubt_not_forgotten(fixture: &impl Fixture) {
    let workspace = Workspace::new(fixture.log());
    let (mut handle, _) = workspace.create(case("dropped"), []).await.unwrap();
    let before = handle.case().state().clone();
    handle.case_mut().buffer(Mutation::IncrementStepCount);
    {
        let mut commit = std::pin::pin!(workspace.commit(&mut handle));
        assert!(
            futures::poll!(commit.as_mut()).is_pending(),
            "the append is in flight"
        );
    }
    assert_eq!(handle.in_doubt().len(), 1, "the commit is in doubt");
    assert_eq!(handle.case().state(), &before, "its trial is undone");
    let increment = |case: &mut Case| {
        case.buffer(Mutation::IncrementStepCount);
    };
    let (receipt, attempts) = workspace.transact_on(&mut handle, increment).await.unwrap();
    assert_eq!((receipt.version, attempts), (2, 1));
    let stored = workspace.load(&case("dropped")).await.unwrap();
    assert_eq!(
        stored.case().state().step_count,
        1,
        "one increment, not two"
    );
    assert_eq!(handle.case().state(), stored.case().state());
    assert!(handle.in_doubt().is_empty());
}

/// Each way a commit is refused before anything is sent keeps its own kind: an invalid writer
/// id is not "too large", and `commit_many` on a handle with a buffer is a misuse of the
/// client, not an unavailable log.
async fn refusals_keep_their_own_kind(fixture: &impl Fixture) {
    let nameless = Workspace::new(fixture.log()).with_writer("");
    let error = nameless.create(case("w"), []).await.unwrap_err();
    assert_eq!(error.kind(), CommitErrorKind::InvalidWriter, "{error}");

    let workspace = Workspace::new(fixture.log());
    let (mut handle, _) = workspace.create(case("busy"), []).await.unwrap();
    handle.case_mut().buffer(Mutation::IncrementStepCount);
    let error = workspace
        .commit_many(&mut handle, vec![vec![Mutation::IncrementStepCount]])
        .await
        .unwrap_err();
    assert_eq!(error.kind(), CommitErrorKind::Misuse, "{error}");
    assert_eq!(fixture.log().last_position().await.unwrap(), 1);
}

async fn dedup(fixture: &impl Fixture) {
    let workspace = Workspace::new(fixture.log());
    let meta = meta();
    let mut a = workspace.new_case(case("d"));
    a.case_mut().buffer(Mutation::set_key("k", 1));
    let mut b = workspace.new_case(case("d"));
    b.case_mut().buffer(Mutation::set_key("k", 1));
    let first = workspace
        .commit_with_meta(&mut a, meta.clone())
        .await
        .unwrap();
    let again = workspace.commit_with_meta(&mut b, meta).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(b.case().state(), a.case().state());
    assert_eq!(b.case().buffered(), 0);
    assert_eq!(fixture.log().last_position().await.unwrap(), 1);
}

async fn conflict_between_two_writers(fixture: &impl Fixture) {
    let workspace = Workspace::new(fixture.log());
    workspace
        .create(case("race"), [Mutation::set_key("n", 0)])
        .await
        .unwrap();
    let mut a = workspace.load(&case("race")).await.unwrap();
    let mut b = workspace.load(&case("race")).await.unwrap();
    a.case_mut().buffer(Mutation::IncrementStepCount);
    b.case_mut().buffer(Mutation::IncrementStepCount);
    workspace.commit(&mut a).await.unwrap();
    let lost = workspace.commit(&mut b).await.unwrap_err();
    assert!(
        matches!(lost, CommitError::Conflict { expected: 1, .. }),
        "{lost:?}"
    );
    assert_eq!(b.case().state().version, 1, "the lost commit is undone");
    assert_eq!(b.case().state().step_count, 0);
    assert_eq!(b.case().buffered(), 1, "and its batch kept");
    let transacted = workspace
        .transact(&case("race"), |case| {
            case.buffer(Mutation::IncrementStepCount);
        })
        .await
        .unwrap();
    assert_eq!(transacted.case.case().state().step_count, 2);
}

async fn lost_acknowledgement_retry(fixture: &impl Fixture) {
    let workspace = Workspace::new(fixture.log());
    let (mut handle, _) = workspace.create(case("lost"), []).await.unwrap();
    handle.case_mut().buffer(Mutation::IncrementStepCount);
    let meta = meta();
    let prepared = handle.case_mut().prepare_commit(meta.clone()).unwrap();
    // The append lands; its acknowledgement never reaches the writer.
    let landed = fixture
        .log()
        .append(
            &case("lost"),
            meta.commit_id,
            handle.position(),
            Bytes::copy_from_slice(prepared.payload()),
        )
        .await
        .unwrap();
    let receipt = workspace.commit_with_meta(&mut handle, meta).await.unwrap();
    assert_eq!(Some(receipt.position), landed.stored_at());
    assert_eq!(fixture.log().last_position().await.unwrap(), 2);
}

async fn history_read(fixture: &impl Fixture) {
    let workspace = Workspace::new(fixture.log());
    let (mut a, _) = workspace.create(case("ha"), []).await.unwrap();
    let (mut b, _) = workspace.create(case("hb"), []).await.unwrap();
    let mut positions = vec![a.position()];
    let mut others = Vec::new();
    for _ in 0..40 {
        a.case_mut().buffer(Mutation::IncrementStepCount);
        positions.push(workspace.commit(&mut a).await.unwrap().position);
        b.case_mut().buffer(Mutation::IncrementStepCount);
        others.push(workspace.commit(&mut b).await.unwrap().position);
    }
    let log = fixture.log();
    let history = async |after: u64| -> Vec<u64> {
        log.history(&case("ha"), after)
            .await
            .unwrap()
            .map_ok(|e| e.position)
            .try_collect()
            .await
            .unwrap()
    };
    assert_eq!(history(0).await, positions);
    assert_eq!(history(positions[30]).await, positions[31..]);
    // From a position that is another case's event: the case's events after it.
    let after_other = history(others[20]).await;
    let expected: Vec<u64> = positions
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
        .history(&case("nobody"), 0)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(none.is_empty());
}

async fn follow_from_a_position(fixture: &impl Fixture) {
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
        seen.push((event.position, event.case_id));
    }
    let expected: Vec<(u64, String)> = receipts[2..]
        .iter()
        .chain([&later])
        .map(|r: &Receipt| (r.position, r.case_id.to_string()))
        .collect();
    assert_eq!(seen, expected);
}

async fn projector_idempotence_and_quarantine(fixture: &impl Fixture) {
    let workspace = Workspace::new(fixture.log());
    let mut cases = Vec::new();
    for n in 0..6 {
        let (mut handle, _) = workspace.create(case(&format!("p{n}")), []).await.unwrap();
        for _ in 0..10 {
            handle.case_mut().buffer(Mutation::IncrementStepCount);
            workspace.commit(&mut handle).await.unwrap();
        }
        cases.push(handle.case().id().clone());
    }
    let garbage = inject(&fixture.log(), "p0", b"\x00garbage").await;
    let mut projector = fixture.projector().await;
    projector.catch_up().await.unwrap();
    let stats = projector.stats();
    assert_eq!(stats.applied.load(std::sync::atomic::Ordering::Relaxed), 66);
    // A second projector over the same views and position applies nothing.
    let mut again = fixture.projector().await;
    again.catch_up().await.unwrap();
    assert_eq!(
        again
            .stats()
            .applied
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );

    let records = projector.quarantined().await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(
        (
            records[0].position,
            records[0].code.as_str(),
            records[0].case_id.as_str()
        ),
        (garbage, "undecodable", "p0")
    );
    let view = projector.view(&case("p0")).await.unwrap().unwrap();
    assert_eq!(view.quarantine.map(|q| q.position), Some(garbage));
    let mismatches = verify(&fixture.log(), &projector, &cases).await.unwrap();
    let bad: Vec<&str> = mismatches.iter().map(|m| m.case_id.as_str()).collect();
    assert_eq!(bad, ["p0"]);
}

/// Appends `events` commits to a new case, each setting one of 7 ctx keys; the one at
/// `forged_at` (if any) is first appended once more with a wrong state hash.
async fn write_long_case<L: EventLog>(
    log: &L,
    id: &str,
    events: u64,
    forged_at: u64,
) -> (Case, u64) {
    let mut case = Case::new(self::case(id));
    let mut last = 0;
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
/// over several chunks): replay reaches the writer's state, and a bad event deep in it stops
/// the replay with that event's position.
async fn long_replay(fixture: &impl Fixture) {
    let log = fixture.log();
    let (writer, last) = write_long_case(&log, "long", 1500, 0).await;
    let replayed = replay(&log, writer.id(), None).await.unwrap();
    assert_eq!(
        (&replayed.state, replayed.last_event_hash, replayed.position),
        (writer.state(), writer.last_event_hash(), last)
    );
    assert_eq!(replayed.events_folded, 1500);

    write_long_case(&log, "forged", 1500, 700).await;
    let forged_position = log
        .history(&case("forged"), 0)
        .await
        .unwrap()
        .skip(699)
        .next()
        .await
        .unwrap()
        .unwrap()
        .position;
    let error = replay(&log, &case("forged"), None).await.unwrap_err();
    assert!(
        matches!(
            error,
            ProjectorError::BadEvent { position, ref source, .. }
                if position == forged_position && source.code().as_str() == "state_hash_mismatch"
        ),
        "{error}"
    );
}

/// Several commits in one atomic append: one event per batch, contiguous and chained, all or
/// nothing; the same events sent again are refused whole.
async fn atomic_batches(fixture: &impl Fixture) {
    let log = fixture.log();
    let workspace = Workspace::new(log.clone());
    let (mut handle, _) = workspace
        .create(case("hot"), [Mutation::set_key("n", 0)])
        .await
        .unwrap();
    let mut stale = workspace.load(&case("hot")).await.unwrap();
    let batches = (1..=5)
        .map(|n| vec![Mutation::set_key("n", n), Mutation::IncrementStepCount])
        .collect();
    let receipts = workspace.commit_many(&mut handle, batches).await.unwrap();
    let versions: Vec<u64> = receipts.iter().map(|r| r.version).collect();
    assert_eq!(versions, [2, 3, 4, 5, 6]);
    for pair in receipts.windows(2) {
        assert_eq!(pair[1].prev_event_hash, pair[0].event_hash);
    }
    let loaded = workspace.load(&case("hot")).await.unwrap();
    assert_eq!(loaded.case().state(), handle.case().state());
    assert_eq!(loaded.position(), receipts[4].position);
    let stored: Vec<_> = log
        .history(&case("hot"), receipts[0].position - 1)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let positions: Vec<u64> = stored.iter().map(|e| e.position).collect();
    assert_eq!(
        positions,
        receipts.iter().map(|r| r.position).collect::<Vec<_>>()
    );
    let before = log.last_position().await.unwrap();

    // From a stale position: refused whole.
    let error = workspace
        .commit_many(&mut stale, vec![vec![Mutation::IncrementStepCount]; 3])
        .await
        .unwrap_err();
    assert!(
        matches!(error, CommitError::Conflict { expected: 1, .. }),
        "{error:?}"
    );
    assert_eq!(stale.case().state().version, 1, "the handle is unchanged");
    // The same events again, as a retry after a lost answer would send them: refused whole.
    let events: Vec<(CommitId, Bytes)> = stored
        .iter()
        .map(|e| (e.commit_id.unwrap(), e.payload.clone()))
        .collect();
    let again = log.append_many(&case("hot"), &events, 1).await.unwrap();
    assert!(
        matches!(
            again,
            AppendOutcome::Duplicate { .. } | AppendOutcome::Conflict { .. }
        ),
        "{again:?}"
    );
    assert_eq!(log.last_position().await.unwrap(), before);
}

async fn invalid_ids_publish_nothing(fixture: &impl Fixture) {
    let workspace = Workspace::new(fixture.log());
    for bad in ["a.b", "*", ">", "", " ", "$JS", "\u{e9}", &"x".repeat(65)] {
        let result: Result<_, CommitError> =
            async { workspace.create(CaseId::new(bad)?, []).await }.await;
        assert_eq!(
            result.unwrap_err().kind(),
            CommitErrorKind::InvalidId,
            "{bad:?}"
        );
    }
    assert_eq!(fixture.log().last_position().await.unwrap(), 0);
}

macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod jetstream {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::$check(&super::JetStream::start().await).await;
                }
            )*
        }
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::$check(&super::Embedded::start().await).await;
                }
            )*
        }
    };
}

conformance!(
    commit_and_receipt,
    a_dropped_commit_is_in_doubt_not_forgotten,
    refusals_keep_their_own_kind,
    dedup,
    conflict_between_two_writers,
    lost_acknowledgement_retry,
    history_read,
    follow_from_a_position,
    projector_idempotence_and_quarantine,
    long_replay,
    atomic_batches,
    invalid_ids_publish_nothing,
    import_resumes_where_it_stopped,
);

/// Writes a few cases with a realistic mix of commits.
async fn populate<L: EventLog>(log: L) -> Vec<CaseId> {
    let workspace = Workspace::new(log);
    let mut ids = Vec::new();
    for n in 0..8 {
        let (mut handle, _) = workspace
            .create(case(&format!("x{n}")), [Mutation::set_key("n", n)])
            .await
            .unwrap();
        for step in 0..n {
            handle
                .case_mut()
                .buffer(Mutation::set_key("step", step))
                .buffer(Mutation::IncrementStepCount);
            workspace.commit(&mut handle).await.unwrap();
        }
        ids.push(handle.case().id().clone());
    }
    ids
}

/// Receipts of every event, as audit rebuilds them.
async fn receipts<L: EventLog>(log: &L) -> Vec<Receipt> {
    let mut all = Vec::new();
    let report = audit_all(log, |receipt| all.push(receipt.clone()))
        .await
        .unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    all
}

async fn states<L: EventLog>(log: &L, ids: &[CaseId]) -> Vec<Hash> {
    let mut hashes = Vec::new();
    for id in ids {
        hashes.push(
            wfstate_projector::replay(log, id, None)
                .await
                .unwrap()
                .state
                .hash(),
        );
    }
    hashes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_from_one_backend_and_import_into_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.cbor");
    let source = Embedded::start().await;
    let ids = populate(source.log()).await;
    let exported = export(&source.log(), &file).await.unwrap();
    assert_eq!((exported.cases, exported.events), (8, 36));

    let target = JetStream::start().await;
    import(&target.log(), &file).await.unwrap();
    assert_eq!(receipts(&target.log()).await, receipts(&source.log()).await);
    assert_eq!(
        states(&target.log(), &ids).await,
        states(&source.log(), &ids).await
    );
    let mut projector = target.projector().await;
    projector.catch_up().await.unwrap();
    assert!(
        verify(&target.log(), &projector, &ids)
            .await
            .unwrap()
            .is_empty()
    );

    // And back: JetStream to a fresh embedded log.
    let back_file = dir.path().join("back.cbor");
    export(&target.log(), &back_file).await.unwrap();
    let back = Embedded::start().await;
    import(&back.log(), &back_file).await.unwrap();
    assert_eq!(receipts(&back.log()).await, receipts(&source.log()).await);

    // Importing twice writes nothing.
    let again = import(&back.log(), &back_file).await.unwrap();
    assert_eq!((again.appended, again.already_there), (0, 36));
    assert_eq!(back.log().last_position().await.unwrap(), 36);
}

/// The items of a CBOR sequence (an export file: its header, then one record per event).
fn cbor_items(path: &std::path::Path) -> Vec<ciborium::Value> {
    let bytes = std::fs::read(path).unwrap();
    let mut input = bytes.as_slice();
    let mut items = Vec::new();
    while !input.is_empty() {
        items.push(ciborium::from_reader::<ciborium::Value, _>(&mut input).unwrap());
    }
    items
}

fn write_items(path: &std::path::Path, items: &[ciborium::Value]) {
    let mut bytes = Vec::new();
    for item in items {
        ciborium::into_writer(item, &mut bytes).unwrap();
    }
    std::fs::write(path, bytes).unwrap();
}

async fn import_resumes_where_it_stopped(fixture: &impl Fixture) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.cbor");
    let source = Embedded::start().await;
    populate(source.log()).await;
    export(&source.log(), &file).await.unwrap();

    // An import cut short: the target holds the first 20 events, case x5 stopped after 5 of
    // its 6.
    let cut = dir.path().join("cut.cbor");
    write_items(&cut, &cbor_items(&file)[..21]);
    let first = import(&fixture.log(), &cut).await.unwrap();
    assert_eq!((first.appended, first.already_there), (20, 0));

    let resumed = import(&fixture.log(), &file).await.unwrap();
    assert_eq!((resumed.appended, resumed.already_there), (16, 20));
    assert_eq!(
        receipts(&fixture.log()).await,
        receipts(&source.log()).await
    );
    let again = import(&fixture.log(), &file).await.unwrap();
    assert_eq!((again.appended, again.already_there), (0, 36));

    // A file whose history of case x3 is another one than the target's is refused before
    // anything is written, its new case y included.
    let elsewhere = Embedded::start().await;
    let workspace = Workspace::new(elsewhere.log());
    for id in ["x3", "y"] {
        workspace
            .create(case(id), [Mutation::set_key("elsewhere", 1)])
            .await
            .unwrap();
    }
    let other = dir.path().join("other.cbor");
    export(&elsewhere.log(), &other).await.unwrap();
    let refused = import(&fixture.log(), &other).await.unwrap_err();
    assert!(
        matches!(&refused, wfstate_projector::TransferError::CaseExists(id) if id == "x3"),
        "{refused}"
    );
    assert_eq!(fixture.log().last_position().await.unwrap(), 36);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_refuses_a_file_with_a_broken_chain_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.cbor");
    let source = Embedded::start().await;
    populate(source.log()).await;
    export(&source.log(), &file).await.unwrap();

    // Alter case x1's first event (position 2: another clock, re-encoded): the file is
    // still well-formed CBOR.
    let mut items = cbor_items(&file);
    let record = items[2].as_map_mut().unwrap();
    let payload = record
        .iter_mut()
        .find(|(key, _)| key.as_text() == Some("payload"))
        .unwrap();
    let mut event = wfstate_store::Event::decode(payload.1.as_bytes().unwrap()).unwrap();
    assert_eq!((event.case_id.as_str(), event.version), ("x1", 1));
    event.committed_at_ms += 1;
    payload.1 = ciborium::Value::Bytes(event.encode());
    write_items(&file, &items);

    let target = Embedded::start().await;
    let error = import(&target.log(), &file).await.unwrap_err();
    let wfstate_projector::TransferError::Broken(report) = error else {
        panic!("{error}")
    };
    let found: Vec<(u64, &str, &str)> = report
        .problems
        .iter()
        .map(|p| (p.position, p.case_id.as_str(), p.code.as_str()))
        .collect();
    // The clock is part of the state (created_at_ms), so the altered event fails its own state
    // hash, and the next event no longer links to it.
    assert_eq!(
        found,
        [(2, "x1", "state_hash_mismatch"), (3, "x1", "broken_chain")]
    );
    assert_eq!(target.log().last_position().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_follow_sees_events_written_by_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let reader = EmbeddedLog::open(&EmbeddedConfig::new(dir.path())).unwrap();
    // A second open of the same file has its own writer and no in-process notification link
    // to the first: only polling can see its events.
    let other = EmbeddedLog::open(&EmbeddedConfig::new(dir.path())).unwrap();
    let mut events = reader.follow(0).await.unwrap();
    let workspace = Workspace::new(other);
    let (_, receipt) = workspace.create(case("elsewhere"), []).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (event.position, event.case_id.as_str()),
        (receipt.position, "elsewhere")
    );
}

/// A log that answers appends with the transient sequence conflict servers send around a
/// leader change (err 10164) while `transient` is above zero, having stored the event first
/// (`stored_first`) or not.
#[derive(Clone)]
struct Flaky<L> {
    inner: L,
    transient: std::sync::Arc<std::sync::atomic::AtomicU32>,
    stored_first: bool,
}

impl<L: EventLog + Clone> EventLog for Flaky<L> {
    async fn append(
        &self,
        case: &CaseId,
        commit_id: CommitId,
        expected_position: u64,
        payload: Bytes,
    ) -> Result<AppendOutcome, LogError> {
        let transient = self
            .transient
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |left| left.checked_sub(1),
            )
            .is_ok();
        if !transient {
            return self
                .inner
                .append(case, commit_id, expected_position, payload)
                .await;
        }
        if self.stored_first {
            let _ = self
                .inner
                .append(case, commit_id, expected_position, payload)
                .await?;
        }
        // A replicated stream's sequence conflict, without the actual position (10164).
        Ok(AppendOutcome::Conflict { actual: None })
    }

    async fn append_many(
        &self,
        case: &CaseId,
        events: &[(CommitId, Bytes)],
        expected_position: u64,
    ) -> Result<AppendOutcome, LogError> {
        self.inner
            .append_many(case, events, expected_position)
            .await
    }

    async fn last_event(&self, case: &CaseId) -> Result<Option<StoredEvent>, LogError> {
        self.inner.last_event(case).await
    }

    async fn event_after(
        &self,
        case: &CaseId,
        position: u64,
    ) -> Result<Option<StoredEvent>, LogError> {
        self.inner.event_after(case, position).await
    }

    async fn event_at(&self, position: u64) -> Result<Option<StoredEvent>, LogError> {
        self.inner.event_at(position).await
    }

    async fn history(
        &self,
        case: &CaseId,
        after_position: u64,
    ) -> Result<wfstate_events::EventStream, LogError> {
        self.inner.history(case, after_position).await
    }

    async fn follow(&self, after_position: u64) -> Result<wfstate_events::EventStream, LogError> {
        self.inner.follow(after_position).await
    }

    async fn last_position(&self) -> Result<u64, LogError> {
        self.inner.last_position().await
    }

    fn payload_size_max(&self) -> usize {
        self.inner.payload_size_max()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_sequence_conflict_is_resolved_by_reading_the_case() {
    for stored_first in [false, true] {
        let target = Embedded::start().await;
        let log = Flaky {
            inner: target.log(),
            transient: std::sync::Arc::default(),
            stored_first,
        };
        let workspace = Workspace::new(log.clone()).with_retry(
            wfstate_events::RetryPolicy::default()
                .with_backoff(Duration::from_millis(1), Duration::from_secs(1)),
        );
        let (mut handle, _) = workspace
            .create(case("leader-change"), [Mutation::set_key("n", 0)])
            .await
            .unwrap();
        // Two answers in a row: stored, the first one is ours when the case is read; not
        // stored, the case has nothing after the expected position and the append is retried.
        log.transient.store(2, std::sync::atomic::Ordering::SeqCst);
        handle.case_mut().buffer(Mutation::IncrementStepCount);
        let receipt = workspace.commit(&mut handle).await.unwrap();
        assert_eq!(receipt.version, 2, "stored first: {stored_first}");
        assert_eq!(
            target.log().last_position().await.unwrap(),
            2,
            "stored once"
        );
        // Stored: the case was read after the first answer. Not stored: both answers were used.
        let transient_left = log.transient.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(transient_left, u32::from(stored_first));
        assert_eq!(handle.case().state().step_count, 1);
    }
}
