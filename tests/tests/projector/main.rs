//! Guards the projector, replay and audit against a real nats-server: views equal replays
//! under concurrent random commits and projector crashes; bad events published around the
//! store are quarantined with their position and reason while other cases go on; the
//! projector never stalls on a halted case or a missing view (`stalls`); audit finds broken
//! chains and works with read-only credentials (`audit`).
#![expect(
    clippy::unwrap_used,
    reason = "test helpers stop the test at the first setup error"
)]

mod audit;
mod roles;
mod stalls;
mod tree;
mod views;

use std::time::Duration;

use bytes::Bytes;
use wfstate_events::{JetStreamConfig, JetStreamLog};
use wfstate_projector::ProjectorConfig;
use wfstate_store::{CaseId, Mutation, ScopeId, TokenId, TokenStatus, Value};

/// A commit by `log`'s credentials is refused as permission denied (a refused request is
/// known after the retry deadline of 3 s at most).
pub(crate) async fn assert_cannot_commit(log: &JetStreamLog) {
    let refused = wfstate_events::Workspace::new(log.clone())
        .with_retry(wfstate_events::RetryPolicy::default().with_deadline(Duration::from_secs(3)))
        .create(case("intruder"), [Mutation::set_key("x", 1)])
        .await
        .unwrap_err();
    assert_eq!(
        refused.kind(),
        wfstate_events::CommitErrorKind::PermissionDenied,
        "{refused}"
    );
}

pub(crate) fn case(id: &str) -> CaseId {
    CaseId::new(id).unwrap()
}

pub(crate) async fn connect(url: &str) -> JetStreamLog {
    JetStreamLog::connect(&JetStreamConfig::new(url))
        .await
        .unwrap()
}

pub(crate) fn quick_projector() -> ProjectorConfig {
    let mut config = ProjectorConfig::default();
    config.batch = 64;
    config.ack_wait = Duration::from_secs(1);
    config.fetch_wait = Duration::from_millis(100);
    config
}

/// A small deterministic generator, so a failing run can be repeated from its seed.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

pub(crate) fn seed() -> u64 {
    let seed = std::env::var("WFSTATE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::UNIX_EPOCH
                .elapsed()
                .map_or(1, |d| u64::from(d.subsec_nanos()) ^ d.as_secs())
                | 1
        });
    eprintln!("WFSTATE_SEED={seed}");
    seed
}

/// Buffers a random, valid step of a workflow on `case`.
pub(crate) fn random_step(case: &mut wfstate_events::Draft<'_>, rng: &mut Rng, n: u64) {
    let state = case.state().clone();
    case.buffer(Mutation::set_key(
        format!("k{}", rng.below(8)),
        Value::from(rng.below(1000)),
    ));
    match rng.below(4) {
        0 => {
            case.buffer(Mutation::add_token(
                TokenId::new(format!("t{n}")).unwrap(),
                0,
                ScopeId::root(),
                Value::Null,
            ));
        }
        1 => {
            let active = state
                .tokens
                .values()
                .find(|token| token.status == TokenStatus::Active);
            if let Some(token) = active {
                let id = token.id.clone();
                case.update_token(id, |token| {
                    token.ip += 1;
                    token.status = TokenStatus::Complete;
                });
            }
        }
        _ => {
            case.buffer(Mutation::IncrementStepCount);
        }
    }
}

/// Publishes raw bytes to a case subject, around the store.
pub(crate) async fn publish_raw(log: &JetStreamLog, case_id: &str, payload: Vec<u8>) -> u64 {
    log.context()
        .publish(format!("wfstate.case.{case_id}"), Bytes::from(payload))
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence
}
