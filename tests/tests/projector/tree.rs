//! The log's signed tree on JetStream: checkpoints that extend each other, a receipt proven
//! in the newest, and checkpoints slipped into the checkpoints stream around wfstate (signed
//! by another key; signed by the trusted key over a forked tree) each reported with its code.

use wfstate_events::Workspace;
use wfstate_projector::{JetStreamTree, TreeRecord, TreeStore, audit_tree, checkpoint, prove};
use wfstate_store::checkpoint::{Checkpoint, SignerKey};
use wfstate_store::{Code, Hash, Mutation, Position, Version, merkle};
use wfstate_tests::NatsServer;

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_extend_each_other_and_forged_ones_are_named() {
    let server = NatsServer::start().await;
    let log = connect(server.url()).await;
    let workspace = Workspace::new(log.clone());
    let mut handles = Vec::new();
    for n in 0..3 {
        let (mut handle, _) = workspace
            .create(case(&format!("c{n}")), [Mutation::set_key("n", n)])
            .await
            .unwrap();
        for _ in 0..4 {
            handle.buffer(Mutation::IncrementStepCount);
            workspace.commit(&mut handle).await.unwrap();
        }
        handles.push(handle);
    }
    let tree = JetStreamTree::open(&log, true).await.unwrap();
    let key = SignerKey::new("test-log", [3; 32]).unwrap();
    checkpoint(&log, &tree, &key, "wfstate/test").await.unwrap();
    handles[1].buffer(Mutation::IncrementStepCount);
    workspace.commit(&mut handles[1]).await.unwrap();
    checkpoint(&log, &tree, &key, "wfstate/test").await.unwrap();
    assert_eq!(tree.size().await.unwrap(), (16, Position::new(16)));

    let clean = audit_tree(&log, &tree, &[key.verifier()]).await.unwrap();
    assert_eq!((clean.checkpoints, clean.events), (2, 16));
    assert!(clean.problems.is_empty(), "{:?}", clean.problems);

    let proven = prove(&log, &tree, &case("c1"), Version::new(6))
        .await
        .unwrap();
    assert_eq!(
        (proven.receipt.position, proven.leaf),
        (Position::new(16), 15)
    );
    let root = wfstate_store::checkpoint::open(&proven.checkpoint, &[key.verifier()])
        .unwrap()
        .root;
    let leaf = merkle::leaf_hash(&proven.receipt.event_hash.0);
    merkle::verify_inclusion(&proven.proof, 16, &root, 15, &leaf).unwrap();

    // Another process's append from a stale size is refused: nothing is appended twice.
    let stale = TreeRecord {
        position: Position::new(99),
        hashes: vec![Hash::of(b"stale")],
    };
    assert!(tree.append(3, vec![stale]).await.is_err());
    assert_eq!(tree.size().await.unwrap().0, 16);

    // Slipped in around wfstate: one signed by another key, one signed by the trusted key
    // over a forked tree of the same size.
    let other = SignerKey::new("test-log", [4; 32]).unwrap();
    let forked = Checkpoint {
        origin: "wfstate/test".into(),
        size: 16,
        root: Hash::of(b"a forked tree"),
        time_ms: 1,
    };
    tree.publish(16, other.sign(&forked)).await.unwrap();
    tree.publish(16, key.sign(&forked)).await.unwrap();
    let audit = audit_tree(&log, &tree, &[key.verifier()]).await.unwrap();
    let codes: Vec<Code> = audit.problems.iter().map(|problem| problem.code).collect();
    assert_eq!(
        codes,
        [
            Code::CheckpointKeyUnknown,
            Code::CheckpointInconsistent,
            Code::HistoryRewritten
        ],
        "{:?}",
        audit.problems
    );
}
