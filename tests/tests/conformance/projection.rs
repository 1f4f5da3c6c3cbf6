//! The projector of each backend: idempotent on redelivery, quarantine of bad events, and
//! `verify` of its views while writers go on.

use wfstate_events::Workspace;
use wfstate_projector::{Projector, ProjectorError, View, ViewSource, verify, verify_all};
use wfstate_store::{CaseId, Mutation};

use crate::fixtures::{ProjectorFixture, case, inject};

pub async fn projector_idempotence_and_quarantine(fixture: &impl ProjectorFixture) {
    let workspace = Workspace::new(fixture.log());
    let mut cases = Vec::new();
    for n in 0..6 {
        let (mut handle, _) = workspace.create(case(&format!("p{n}")), []).await.unwrap();
        for _ in 0..10 {
            handle.buffer(Mutation::IncrementStepCount);
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

/// Views as a projector wrote them, one of them changed: a view that differs from its history.
struct Tampered(Vec<(CaseId, View)>);

impl ViewSource for Tampered {
    async fn view(&self, case_id: &CaseId) -> Result<Option<View>, ProjectorError> {
        Ok(self
            .0
            .iter()
            .find(|(id, _)| id == case_id)
            .map(|(_, view)| view.clone()))
    }

    async fn case_ids(&self) -> Result<Vec<CaseId>, ProjectorError> {
        Ok(self.0.iter().map(|(id, _)| id.clone()).collect())
    }
}

/// `verify` compares each view with its case's history up to the view's own position: commits
/// made after the projector's last batch (a writer that goes on) are no mismatch, and a view
/// that differs from its history still is.
pub async fn verify_compares_each_view_at_its_own_position(fixture: &impl ProjectorFixture) {
    let workspace = Workspace::new(fixture.log());
    let mut handles = Vec::new();
    for n in 0..3 {
        let (handle, _) = workspace
            .create(case(&format!("v{n}")), [Mutation::set_key("n", 0)])
            .await
            .unwrap();
        handles.push(handle);
    }
    let cases: Vec<CaseId> = handles.iter().map(|h| h.case().id().clone()).collect();
    let mut projector = fixture.projector().await;
    projector.catch_up().await.unwrap();
    // Commits the projector has not seen yet.
    for handle in &mut handles {
        handle.buffer(Mutation::IncrementStepCount);
        workspace.commit(handle).await.unwrap();
    }
    let mismatches = verify(&fixture.log(), &projector, &cases).await.unwrap();
    assert!(mismatches.is_empty(), "{mismatches:?}");

    // A writer that commits in a loop while the projector and verify run.
    let writer = {
        let workspace = workspace.clone();
        let mut handle = handles.pop().unwrap();
        tokio::spawn(async move {
            for _ in 0..200 {
                handle.buffer(Mutation::IncrementStepCount);
                workspace.commit(&mut handle).await.unwrap();
            }
        })
    };
    for _ in 0..10 {
        projector.catch_up().await.unwrap();
        let mismatches = verify(&fixture.log(), &projector, &cases).await.unwrap();
        assert!(mismatches.is_empty(), "{mismatches:?}");
        let verified = verify_all(&fixture.log(), &projector).await.unwrap();
        assert!(verified.mismatches.is_empty(), "{verified:?}");
        assert_eq!(verified.cases, 3);
    }
    writer.await.unwrap();

    let mut views = Vec::new();
    for case_id in &cases {
        let mut view = projector.view(case_id).await.unwrap().unwrap();
        if *case_id == case("v0") {
            view.state.step_count += 1;
        }
        views.push((case_id.clone(), view));
    }
    let tampered = Tampered(views.clone());
    let mismatches = verify(&fixture.log(), &tampered, &cases).await.unwrap();
    let bad: Vec<&str> = mismatches.iter().map(|m| m.case_id.as_str()).collect();
    assert_eq!(bad, ["v0"], "{mismatches:?}");
    assert!(
        mismatches[0].detail.contains("state hash"),
        "{mismatches:?}"
    );
    let verified = verify_all(&fixture.log(), &tampered).await.unwrap();
    assert_eq!(verified.mismatches, mismatches);

    // One pass finds every kind of mismatch: a view past its case's history, another last
    // event hash, a quarantined view.
    views[1].1.position = wfstate_store::Position::new(views[1].1.position.get() + 1_000_000);
    views[2].1.last_event_hash = wfstate_store::Hash::of(b"another event");
    let mut halted = views[0].1.clone();
    halted.quarantine = Some(wfstate_projector::Quarantine {
        position: halted.position,
        code: wfstate_store::Code::Undecodable,
        reason: "marked by the test".into(),
        held: 0,
        last_held: halted.position,
    });
    views.push((case("halted"), halted));
    let tampered = Tampered(views);
    let verified = verify_all(&fixture.log(), &tampered).await.unwrap();
    let expected = [
        ("halted", "quarantined"),
        ("v0", "state hash"),
        ("v1", "no event there"),
        ("v2", "last event hash"),
    ];
    assert_eq!(verified.mismatches.len(), expected.len(), "{verified:?}");
    for (mismatch, (case_id, words)) in verified.mismatches.iter().zip(expected) {
        assert_eq!(mismatch.case_id.as_str(), case_id, "{verified:?}");
        assert!(mismatch.detail.contains(words), "{verified:?}");
    }
}

/// A view lost around the projector (a deleted key or row) is rebuilt from its case's history
/// when the case's next event comes, instead of waiting for events folded long ago; a halted
/// case is folded again from its first event by `retry`, halting again only at an event that
/// still does not apply.
pub async fn lost_views_are_rebuilt_and_retried_cases_folded_again(
    fixture: &impl ProjectorFixture,
) {
    let workspace = Workspace::new(fixture.log());
    let mut handles = Vec::new();
    for name in ["lost", "halted", "bad"] {
        let (mut handle, _) = workspace
            .create(case(name), [Mutation::set_key("n", 0)])
            .await
            .unwrap();
        handle.buffer(Mutation::IncrementStepCount);
        workspace.commit(&mut handle).await.unwrap();
        handles.push(handle);
    }
    let garbage = inject(&fixture.log(), "bad", b"\x00garbage").await;
    let mut projector = fixture.projector().await;
    projector.catch_up().await.unwrap();

    fixture.delete_view("lost").await;
    let mut lost = handles.remove(0);
    lost.buffer(Mutation::IncrementStepCount);
    workspace.commit(&mut lost).await.unwrap();
    projector.catch_up().await.unwrap();
    let view = projector.view(&case("lost")).await.unwrap().unwrap();
    assert_eq!(&view.state, lost.case().state(), "rebuilt from its history");
    assert!(view.is_healthy());
    let stats = projector.stats();
    assert_eq!(stats.rebuilt.load(std::sync::atomic::Ordering::Relaxed), 1);

    // A view that does not decode (damaged, another schema) is rebuilt and written over.
    fixture.put_view("lost", b"\xff not a view").await;
    lost.buffer(Mutation::IncrementStepCount);
    workspace.commit(&mut lost).await.unwrap();
    projector.catch_up().await.unwrap();
    let view = projector.view(&case("lost")).await.unwrap().unwrap();
    assert_eq!(
        &view.state,
        lost.case().state(),
        "rebuilt over the damaged view"
    );
    assert_eq!(stats.rebuilt.load(std::sync::atomic::Ordering::Relaxed), 2);

    // A case halted by mistake (a reader that could not decode an event that is fine, say):
    // retry folds it again and it is healthy.
    let mut marked = projector.view(&case("halted")).await.unwrap().unwrap();
    marked.quarantine = Some(wfstate_projector::Quarantine {
        position: marked.position,
        code: wfstate_store::Code::Undecodable,
        reason: "marked by the test".into(),
        held: 3,
        last_held: marked.position,
    });
    fixture.put_view("halted", &marked.encode()).await;
    let retried = projector.retry(&case("halted")).await.unwrap().unwrap();
    assert!(retried.is_healthy(), "{retried:?}");
    assert_eq!(&retried.state, handles[0].case().state());
    assert_eq!(
        projector.view(&case("halted")).await.unwrap(),
        Some(retried)
    );

    // A case whose event still does not apply is halted there again, and its quarantined
    // event is recorded once.
    let retried = projector.retry(&case("bad")).await.unwrap().unwrap();
    assert_eq!(retried.quarantine.map(|q| q.position), Some(garbage));
    assert_eq!(&retried.state, handles[1].case().state());
    let records = projector.quarantined().await.unwrap();
    let positions: Vec<_> = records.iter().map(|r| r.position).collect();
    assert_eq!(positions, [garbage]);
    assert_eq!(projector.retry(&case("none")).await.unwrap(), None);

    let all: Vec<CaseId> = ["lost", "halted"].into_iter().map(case).collect();
    let mismatches = verify(&fixture.log(), &projector, &all).await.unwrap();
    assert!(mismatches.is_empty(), "{mismatches:?}");
}
