//! Commits: receipts, dedup, conflicts, lost acknowledgements, commits in doubt, refusals and
//! multi-event appends, on every backend.

use bytes::Bytes;
use futures::TryStreamExt;
use wfstate_events::{AppendOutcome, CommitError, CommitErrorKind, EventLog, Workspace};
use wfstate_store::{CaseId, CommitId, Mutation, Position};

use std::time::Duration;

use wfstate_tests::{Fault, FaultyLog, Script};

use crate::fixtures::{Fixture, case, meta};

pub async fn commit_and_receipt(fixture: &impl Fixture) {
    let workspace = Workspace::new(fixture.log());
    let (mut handle, first) = workspace
        .create(case("c1"), [Mutation::set_key("a", 1)])
        .await
        .unwrap();
    handle.buffer(Mutation::IncrementStepCount);
    let second = workspace.commit(&mut handle).await.unwrap();
    assert_eq!((first.version.get(), second.version.get()), (1, 2));
    assert_eq!(second.prev_event_hash, first.event_hash);
    assert_eq!(second.state_hash, handle.case().state().hash());
    let loaded = workspace.load(&case("c1")).await.unwrap();
    assert_eq!(loaded.case().state(), handle.case().state());
    assert_eq!(loaded.position(), second.position.get());
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
pub async fn a_dropped_commit_is_in_doubt_not_forgotten(fixture: &impl Fixture) {
    // The commit's append is stored at once and answered late.
    let script = Script::new().on(2, Fault::SlowAnswer(Duration::from_secs(5)));
    let log = FaultyLog::new(fixture.log(), script);
    let workspace = Workspace::new(log.clone());
    let (mut handle, _) = workspace.create(case("dropped"), []).await.unwrap();
    let before = handle.case().state().clone();
    handle.buffer(Mutation::IncrementStepCount);
    {
        let mut commit = std::pin::pin!(workspace.commit(&mut handle));
        assert!(
            futures::poll!(commit.as_mut()).is_pending(),
            "the append is in flight"
        );
    }
    assert_eq!(handle.in_doubt().len(), 1, "the commit is in doubt");
    assert_eq!(handle.case().state(), &before, "its trial is undone");
    let increment = |case: &mut wfstate_events::Draft<'_>| {
        case.buffer(Mutation::IncrementStepCount);
    };
    let (receipt, attempts) = workspace.transact_on(&mut handle, increment).await.unwrap();
    assert_eq!((receipt.version.get(), attempts), (2, 1));
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
pub async fn refusals_keep_their_own_kind(fixture: &impl Fixture) {
    let nameless = Workspace::new(fixture.log()).with_writer("");
    let error = nameless.create(case("w"), []).await.unwrap_err();
    assert_eq!(error.kind(), CommitErrorKind::InvalidWriter, "{error}");

    let workspace = Workspace::new(fixture.log());
    let (mut handle, _) = workspace.create(case("busy"), []).await.unwrap();
    handle.buffer(Mutation::IncrementStepCount);
    let error = workspace
        .commit_many(&mut handle, vec![vec![Mutation::IncrementStepCount]])
        .await
        .unwrap_err();
    assert_eq!(error.kind(), CommitErrorKind::Misuse, "{error}");
    assert_eq!(fixture.log().last_position().await.unwrap(), 1);
}

pub async fn dedup(fixture: &impl Fixture) {
    let workspace = Workspace::new(fixture.log());
    let meta = meta();
    let mut a = workspace.new_case(case("d"));
    a.buffer(Mutation::set_key("k", 1));
    let mut b = workspace.new_case(case("d"));
    b.buffer(Mutation::set_key("k", 1));
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

pub async fn conflict_between_two_writers(fixture: &impl Fixture) {
    let workspace = Workspace::new(fixture.log());
    workspace
        .create(case("race"), [Mutation::set_key("n", 0)])
        .await
        .unwrap();
    let mut a = workspace.load(&case("race")).await.unwrap();
    let mut b = workspace.load(&case("race")).await.unwrap();
    a.buffer(Mutation::IncrementStepCount);
    b.buffer(Mutation::IncrementStepCount);
    workspace.commit(&mut a).await.unwrap();
    let lost = workspace.commit(&mut b).await.unwrap_err();
    assert!(
        matches!(lost, CommitError::Conflict { expected, .. } if expected == 1),
        "{lost:?}"
    );
    assert_eq!(
        b.case().state().version.get(),
        1,
        "the lost commit is undone"
    );
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

pub async fn lost_acknowledgement_retry(fixture: &impl Fixture) {
    let workspace = Workspace::new(fixture.log());
    let (mut handle, _) = workspace.create(case("lost"), []).await.unwrap();
    handle.buffer(Mutation::IncrementStepCount);
    let meta = meta();
    let prepared =
        wfstate_tests::prepare_next(&handle, [Mutation::IncrementStepCount], meta.clone());
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

/// Several commits in one atomic append: one event per batch, contiguous and chained, all or
/// nothing; the same events sent again are refused whole.
pub async fn atomic_batches(fixture: &impl Fixture) {
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
    let versions: Vec<u64> = receipts.iter().map(|r| r.version.get()).collect();
    assert_eq!(versions, [2, 3, 4, 5, 6]);
    for pair in receipts.windows(2) {
        assert_eq!(pair[1].prev_event_hash, pair[0].event_hash);
    }
    let loaded = workspace.load(&case("hot")).await.unwrap();
    assert_eq!(loaded.case().state(), handle.case().state());
    assert_eq!(loaded.position(), receipts[4].position.get());
    let stored: Vec<_> = log
        .history(&case("hot"), Position::new(receipts[0].position.get() - 1))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let positions: Vec<u64> = stored.iter().map(|e| e.position.get()).collect();
    assert_eq!(
        positions,
        receipts
            .iter()
            .map(|r| r.position.get())
            .collect::<Vec<_>>()
    );
    let before = log.last_position().await.unwrap();

    // From a stale position: refused whole.
    let error = workspace
        .commit_many(&mut stale, vec![vec![Mutation::IncrementStepCount]; 3])
        .await
        .unwrap_err();
    assert!(
        matches!(error, CommitError::Conflict { expected, .. } if expected == 1),
        "{error:?}"
    );
    assert_eq!(
        stale.case().state().version.get(),
        1,
        "the handle is unchanged"
    );
    // The same events again, as a retry after a lost answer would send them: refused whole.
    let events: Vec<(CommitId, Bytes)> = stored
        .iter()
        .map(|e| (e.commit_id.unwrap(), e.payload.clone()))
        .collect();
    let again = log
        .append_many(&case("hot"), &events, Position::new(1))
        .await
        .unwrap();
    assert!(
        matches!(
            again,
            AppendOutcome::Duplicate { .. } | AppendOutcome::Conflict { .. }
        ),
        "{again:?}"
    );
    assert_eq!(log.last_position().await.unwrap(), before);
}

pub async fn invalid_ids_publish_nothing(fixture: &impl Fixture) {
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

/// A process that restarts, loads the case and sends a commit again with the commit id it
/// chose gets the first receipt back, and nothing is stored again, whether or not the log
/// still remembers the id.
pub async fn a_commit_id_sent_again_after_a_restart_returns_the_first_receipt(
    fixture: &impl Fixture,
) {
    resend_after_restart(fixture.log(), "resent", true).await;
}

/// [`a_commit_id_sent_again_after_a_restart_returns_the_first_receipt`] on any log, including
/// one that no longer remembers commit ids (`dedup` false: JetStream after its duplicate
/// window).
pub async fn resend_after_restart<L: EventLog + Clone>(log: L, name: &str, dedup: bool) {
    let workspace = Workspace::new(log.clone());
    let (mut first, _) = workspace
        .create(case(name), [Mutation::set_key("n", 0)])
        .await
        .unwrap();
    let meta = meta();
    first.buffer(Mutation::IncrementStepCount);
    let landed = workspace
        .commit_with_meta(&mut first, meta.clone())
        .await
        .unwrap();
    let before = log.last_position().await.unwrap();

    // Another process loads the case, which holds the commit, and sends it again.
    let mut second = workspace.load(&case(name)).await.unwrap();
    second.buffer(Mutation::IncrementStepCount);
    let again = workspace
        .commit_with_meta(&mut second, meta.clone())
        .await
        .unwrap();
    assert_eq!(again, landed);
    assert_eq!(
        log.last_position().await.unwrap(),
        before,
        "nothing stored again"
    );
    assert_eq!(second.case().buffered(), 0);
    assert_eq!(second.case().state(), first.case().state());

    // The writer itself sends it again while the log remembers the id: the duplicate names an
    // event the case already holds.
    if dedup {
        first.buffer(Mutation::IncrementStepCount);
        let again = workspace.commit_with_meta(&mut first, meta).await.unwrap();
        assert_eq!(again, landed);
        assert_eq!(log.last_position().await.unwrap(), before);
        assert_eq!(first.case().buffered(), 0);
    }
}
