//! The projector of each backend: idempotent on redelivery, and quarantine of bad events.

use wfstate_events::Workspace;
use wfstate_projector::{Projector, ViewSource, verify};
use wfstate_store::Mutation;

use crate::fixtures::{ProjectorFixture, case, inject};

pub async fn projector_idempotence_and_quarantine(fixture: &impl ProjectorFixture) {
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
