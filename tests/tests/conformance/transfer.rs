//! Export and import between the backends, resumed imports, and refused files.

use wfstate_events::{EventLog, Workspace};
use wfstate_projector::{Projector, audit_all, export, import, verify};
use wfstate_store::{CaseId, Hash, Mutation, Receipt};

use crate::fixtures::{Embedded, Fixture, JetStream, ProjectorFixture, case};

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

/// The items of an export file but its trailer: its header, then one record per event.
fn cbor_items(path: &std::path::Path) -> Vec<ciborium::Value> {
    let bytes = std::fs::read(path).unwrap();
    let mut input = bytes.as_slice();
    let mut items = Vec::new();
    while !input.is_empty() {
        items.push(ciborium::from_reader::<ciborium::Value, _>(&mut input).unwrap());
    }
    let trailer = items.pop().unwrap();
    assert_eq!(
        trailer.as_map().unwrap()[0].0.as_text(),
        Some("trailer"),
        "an export ends with its trailer"
    );
    items
}

/// Writes `items` as an export file, with the trailer that makes it whole: a file made to
/// hold what the test needs, as if `wfstate export` had written it.
fn write_items(path: &std::path::Path, items: &[ciborium::Value]) {
    let mut bytes = Vec::new();
    for item in items {
        ciborium::into_writer(item, &mut bytes).unwrap();
    }
    let trailer = ciborium::Value::Map(vec![
        ("trailer".into(), "wfstate-export".into()),
        ("events".into(), (items.len() as u64 - 1).into()),
        (
            "sha256".into(),
            ciborium::Value::Bytes(wfstate_store::Hash::of(&bytes).0.to_vec()),
        ),
    ]);
    ciborium::into_writer(&trailer, &mut bytes).unwrap();
    std::fs::write(path, bytes).unwrap();
}

pub async fn import_resumes_where_it_stopped(fixture: &impl Fixture) {
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
    assert_eq!((event.case_id.as_str(), event.version.get()), ("x1", 1));
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
        .map(|p| (p.position.get(), p.case_id.as_str(), p.code.as_str()))
        .collect();
    // The clock is part of the state (created_at_ms), so the altered event fails its own state
    // hash, and the next event no longer links to it.
    assert_eq!(
        found,
        [(2, "x1", "state_hash_mismatch"), (3, "x1", "broken_chain")]
    );
    assert_eq!(target.log().last_position().await.unwrap(), 0);
}
