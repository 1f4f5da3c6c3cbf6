//! (4b): keeping the log's signed tree over the same events as the projector of (4), in the
//! same run: what `project --checkpoint-key` adds to a projector.

use serde_json::json;
use wfstate_events::JetStreamLog;
use wfstate_projector::{JetStreamTree, checkpoint};
use wfstate_store::checkpoint::SignerKey;

use crate::figure::{Figure, Reporter, finish, phase_start};
use crate::{BenchError, bench_error};

/// Extends a new tree over every event of the run and signs one checkpoint; reports it next to
/// the projector's figure.
pub(crate) async fn tree_upkeep(
    log: &JetStreamLog,
    projector: &Figure,
    reporter: &mut Reporter<'_>,
) -> Result<(), BenchError> {
    let tree = JetStreamTree::open(log, true).await?;
    let key = SignerKey::new("bench", [7; 32]).map_err(bench_error)?;
    let started = phase_start();
    let note = checkpoint(log, &tree, &key, "wfstate/bench").await?;
    let size: usize = note
        .lines()
        .nth(1)
        .and_then(|size| size.parse().ok())
        .unwrap_or(0);
    let ours = finish(started, size, Vec::new());
    let value = ours.rate() / projector.rate();
    reporter.lines.push(format!(
        "(4b) the log's tree kept over {size} events, and signed"
    ));
    reporter.lines.push(ours.line("tree"));
    reporter.lines.push(format!(
        "  ratio     {value:.2} of (4) projector (no target: the tree's own upkeep)"
    ));
    reporter.report.insert(
        "tree".into(),
        json!({"wfstate": ours.json(), "ratio_to_4": value}),
    );
    Ok(())
}

/// The streams the tree of `log` keeps, deleted with the run's.
pub(crate) fn tree_streams(log: &JetStreamLog) -> [String; 2] {
    let name = log.stream_name();
    [format!("{name}_TREE"), format!("{name}_CHECKPOINTS")]
}
