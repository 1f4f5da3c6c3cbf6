//! One conformance suite, written once and run against every backend (JetStream on a real
//! nats-server, with and without partitions, the embedded SQLite log, and the in-memory log): commit and receipt, dedup,
//! conflicts, lost-ack retries, commits in doubt, history, follow, invalid ids, and the
//! client's answers to faults injected on a script; the projector's idempotence and
//! quarantine on the backends that have one; export and import between the backends.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers stop the test at the first setup error"
)]

mod commits;
mod doubt;
mod faults;
mod fixtures;
mod projection;
mod reads;
mod transfer;

/// Runs each check, `module::function(&fixture)`, on each backend named.
macro_rules! conformance {
    ($backend:ident: $fixture:ident => $($module:ident :: $check:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let fixture = crate::fixtures::$fixture::start().await;
                    crate::$module::$check(&fixture).await;
                }
            )*
        }
    };
}

/// Every check of the log and the client, on one backend.
macro_rules! log_checks {
    ($backend:ident: $fixture:ident) => {
        conformance!($backend: $fixture =>
            commits::commit_and_receipt,
            commits::a_dropped_commit_is_in_doubt_not_forgotten,
            commits::refusals_keep_their_own_kind,
            commits::dedup,
            commits::conflict_between_two_writers,
            commits::lost_acknowledgement_retry,
            commits::atomic_batches,
            commits::invalid_ids_publish_nothing,
            commits::a_commit_id_sent_again_after_a_restart_returns_the_first_receipt,
            reads::history_read,
            reads::follow_from_a_position,
            reads::long_replay,
            transfer::import_resumes_where_it_stopped,
            faults::a_conflict_without_a_position_is_resolved_by_reading_the_case,
            faults::a_lost_or_failed_append_is_retried_to_one_event,
            faults::a_commit_is_found_after_the_log_forgot_its_id,
            faults::a_commit_in_doubt_is_resolved_by_the_next_commit,
            faults::a_duplicate_that_cannot_be_read_is_in_doubt_not_failed,
            faults::a_seeded_mix_of_faults_loses_and_doubles_nothing,
            doubt::a_refresh_settles_the_commit_in_doubt_before_folding_past_it,
            doubt::a_refresh_returns_the_receipt_of_a_commit_in_doubt_that_landed,
            doubt::a_commit_id_the_handle_committed_returns_its_first_receipt,
            doubt::a_commit_the_handle_holds_is_not_failed_by_a_read_that_lags,
        );
    };
}

log_checks!(jetstream: JetStream);
log_checks!(jetstream_partitioned: Partitioned);
log_checks!(embedded: Embedded);
log_checks!(memory: Memory);

conformance!(jetstream_projector: JetStream =>
    projection::projector_idempotence_and_quarantine,
    projection::verify_compares_each_view_at_its_own_position,
    projection::lost_views_are_rebuilt_and_retried_cases_folded_again,
);
conformance!(jetstream_partitioned_projector: Partitioned =>
    projection::projector_idempotence_and_quarantine,
    projection::verify_compares_each_view_at_its_own_position,
    projection::lost_views_are_rebuilt_and_retried_cases_folded_again,
);
conformance!(embedded_projector: Embedded =>
    projection::projector_idempotence_and_quarantine,
    projection::verify_compares_each_view_at_its_own_position,
    projection::lost_views_are_rebuilt_and_retried_cases_folded_again,
);
