//! The projector never stalls: a bad event in the middle of a case's history halts that case
//! (its later events are held, acknowledged and counted) while every other case goes on; a
//! view that is missing (a deleted key, a recreated bucket) is rebuilt from the case's history
//! instead of waiting forever for events acknowledged long ago. Each `catch_up` runs under a
//! one-minute guard: a projector that loops fails the test instead of hanging it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use wfstate_events::{EventLog as _, Workspace};
use wfstate_projector::{JetStreamProjector, Projector, ViewSource, replay, verify};
use wfstate_store::{Event, Mutation, Version};
use wfstate_tests::NatsServer;

use crate::{case, connect, publish_raw, quick_projector};

const NO_STALL: Duration = Duration::from_mins(1);

async fn catch_up(projector: &mut JetStreamProjector) {
    tokio::time::timeout(NO_STALL, projector.catch_up())
        .await
        .expect("catch_up returns: the projector does not stall")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_event_mid_history_halts_its_case_and_no_other() {
    let server = NatsServer::start().await;
    let log = connect(server.url()).await;
    let workspace = Workspace::new(log.clone());
    let (mut bad, _) = workspace
        .create(case("bad"), [Mutation::set_key("n", 1)])
        .await
        .unwrap();
    bad.buffer(Mutation::IncrementStepCount);
    workspace.commit(&mut bad).await.unwrap();
    let (mut other, _) = workspace
        .create(case("other"), [Mutation::set_key("n", 1)])
        .await
        .unwrap();
    let good = log.last_event(&case("bad")).await.unwrap().unwrap().payload;
    // Version 3 is garbage (a writer of another format); versions 4 and 5 decode and come
    // after it, so each looks ahead of the view that stopped at version 2.
    let garbage = publish_raw(&log, "bad", b"\xff not an event".to_vec()).await;
    let mut later = Vec::new();
    for version in [4, 5] {
        let mut event = Event::decode(&good).unwrap();
        event.version = Version::new(version);
        event.commit_id = wfstate_store::CommitId::generate();
        later.push(publish_raw(&log, "bad", event.encode()).await);
    }
    for _ in 0..3 {
        other.buffer(Mutation::IncrementStepCount);
        workspace.commit(&mut other).await.unwrap();
    }

    let mut projector = JetStreamProjector::open(&log, quick_projector())
        .await
        .unwrap();
    catch_up(&mut projector).await;

    let view = projector.view(&case("other")).await.unwrap().unwrap();
    assert_eq!(
        &view.state,
        other.case().state(),
        "the other case is current"
    );
    let halted = projector.view(&case("bad")).await.unwrap().unwrap();
    let quarantine = halted.quarantine.expect("the bad case is halted");
    assert_eq!(quarantine.position.get(), garbage);
    assert_eq!(quarantine.held, 2, "both later events are held");
    assert_eq!(quarantine.last_held.get(), later[1]);
    assert_eq!(
        halted.state.version.get(),
        2,
        "it keeps its last good state"
    );
    assert_eq!(projector.stats().held.load(Ordering::Relaxed), 2);
    let records = projector.quarantined().await.unwrap();
    let positions: Vec<u64> = records.iter().map(|r| r.position.get()).collect();
    assert_eq!(positions, [garbage], "only the bad event is quarantined");

    // Delivered again (a second projector on new buckets and consumer), nothing is counted
    // twice and nothing waits.
    let mut config = quick_projector();
    config.name = "again".into();
    config.views_bucket = "AGAIN_VIEWS".into();
    config.quarantine_bucket = "AGAIN_Q".into();
    let mut again = JetStreamProjector::open(&log, config).await.unwrap();
    catch_up(&mut again).await;
    catch_up(&mut again).await;
    let view = again.view(&case("bad")).await.unwrap().unwrap();
    assert_eq!(view.quarantine.map(|q| q.held), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_view_is_rebuilt_from_the_history() {
    let server = NatsServer::start().await;
    let log = connect(server.url()).await;
    let workspace = Workspace::new(log.clone());
    let (mut handle, _) = workspace
        .create(case("deleted"), [Mutation::set_key("n", 1)])
        .await
        .unwrap();
    for _ in 0..3 {
        handle.buffer(Mutation::IncrementStepCount);
        workspace.commit(&mut handle).await.unwrap();
    }
    let config = quick_projector();
    let mut projector = JetStreamProjector::open(&log, config.clone())
        .await
        .unwrap();
    catch_up(&mut projector).await;
    let views = log
        .context()
        .get_key_value(&config.views_bucket)
        .await
        .unwrap();
    views.delete("deleted").await.unwrap();

    for _ in 0..2 {
        handle.buffer(Mutation::IncrementStepCount);
        workspace.commit(&mut handle).await.unwrap();
    }
    let mut projector = JetStreamProjector::open(&log, config).await.unwrap();
    catch_up(&mut projector).await;
    let view = projector.view(&case("deleted")).await.unwrap().unwrap();
    assert_eq!(&view.state, handle.case().state());
    let replayed = replay(&log, &case("deleted"), None).await.unwrap();
    assert_eq!(view.position, replayed.position);
    assert_eq!(projector.stats().rebuilt.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_in_a_recreated_bucket_are_rebuilt_from_the_history() {
    let server = NatsServer::start().await;
    let log = connect(server.url()).await;
    let workspace = Workspace::new(log.clone());
    let mut handles = Vec::new();
    for n in 0..4 {
        let (handle, _) = workspace
            .create(case(&format!("r{n}")), [Mutation::set_key("n", 1)])
            .await
            .unwrap();
        handles.push(handle);
    }
    let config = quick_projector();
    let mut projector = JetStreamProjector::open(&log, config.clone())
        .await
        .unwrap();
    catch_up(&mut projector).await;
    drop(projector);
    log.context()
        .delete_key_value(&config.views_bucket)
        .await
        .unwrap();

    for handle in &mut handles {
        handle.buffer(Mutation::IncrementStepCount);
        workspace.commit(handle).await.unwrap();
    }
    // Opening makes the bucket again; the consumer is past the cases' first events.
    let mut projector = JetStreamProjector::open(&log, config).await.unwrap();
    catch_up(&mut projector).await;
    let cases: Vec<_> = handles.iter().map(|h| h.case().id().clone()).collect();
    let mismatches = verify(&log, &projector, &cases).await.unwrap();
    assert!(mismatches.is_empty(), "{mismatches:?}");
    for handle in &handles {
        let view = projector.view(handle.case().id()).await.unwrap().unwrap();
        assert_eq!(&view.state, handle.case().state());
    }
}

/// A writer learns at commit time that a case's state would pass its limit; a writer that
/// raised the limit past what the server takes in one message gets its commits stored, and
/// the projector halts that case with `state_too_large` while every other case goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_larger_than_a_view_halts_its_case_and_no_other() {
    let server = NatsServer::start().await;
    let log = connect(server.url()).await;
    let blob = |n: u64| Mutation::set_key(format!("blob{n}"), "x".repeat(300 * 1024));
    let workspace = Workspace::new(log.clone());
    let (mut bounded, _) = workspace.create(case("bounded"), [blob(0)]).await.unwrap();
    bounded.buffer(blob(1));
    let refused = workspace.commit(&mut bounded).await.unwrap_err();
    assert_eq!(refused.kind(), wfstate_events::CommitErrorKind::TooLarge);
    assert!(
        refused.to_string().contains("state_size_max_bytes"),
        "{refused}"
    );
    bounded.rollback();

    let mut raised = wfstate_store::Limits::default();
    raised.state_size_max_bytes = 8 * 1024 * 1024;
    let unbounded = Workspace::new(log.clone()).with_limits(raised);
    let (mut large, _) = unbounded.create(case("large"), [blob(0)]).await.unwrap();
    for n in 1..4 {
        large.buffer(blob(n));
        unbounded.commit(&mut large).await.unwrap();
    }
    let (mut other, _) = workspace
        .create(case("other"), [Mutation::set_key("n", 1)])
        .await
        .unwrap();
    other.buffer(Mutation::IncrementStepCount);
    workspace.commit(&mut other).await.unwrap();
    large.buffer(Mutation::IncrementStepCount);
    unbounded.commit(&mut large).await.unwrap();

    let mut projector = JetStreamProjector::open(&log, quick_projector())
        .await
        .unwrap();
    catch_up(&mut projector).await;
    let view = projector.view(&case("other")).await.unwrap().unwrap();
    assert_eq!(
        &view.state,
        other.case().state(),
        "the other case is current"
    );
    let view = projector.view(&case("bounded")).await.unwrap().unwrap();
    assert_eq!(&view.state, bounded.case().state());
    let halted = projector.view(&case("large")).await.unwrap().unwrap();
    let quarantine = halted.quarantine.expect("the large case is halted");
    assert_eq!(quarantine.code, wfstate_store::Code::StateTooLarge);
    assert!(
        quarantine.reason.contains("max_payload"),
        "{}",
        quarantine.reason
    );
    let records = projector.quarantined().await.unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].case_id, "large");
}
