//! The commands, over any backend.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use wfstate_events::{LogErrorKind, Workspace};
use wfstate_projector::{
    CheckpointPolicy, Projector, ProjectorConfig, ProjectorError, Quarantine, QuarantineRecord,
    ShareConfig, Shared, StateChecks, Until, audit_all, audit_case, audit_follow,
    audit_follow_case, checkpoint_if_due,
};
use wfstate_store::{CaseId, CommitId, Hash, Mutation, Value, Version};

use crate::Command;
use crate::backend::Backend;
use crate::error::{CHECK_FAILED, CliError};
use crate::output::{receipt_json, receipt_text};
use crate::progress::Progress;
use crate::stdout::out;

pub(crate) fn print_json(value: &serde_json::Value) {
    out!("{value}");
}

pub(crate) fn print_receipt(receipt: &wfstate_store::Receipt, json: bool) {
    if json {
        print_json(&receipt_json(receipt));
    } else {
        out!("{}", receipt_text(receipt));
    }
}

pub(crate) fn case_id(text: &str) -> Result<CaseId, CliError> {
    Ok(CaseId::new(text)?)
}

pub async fn run<L: Backend>(log: &L, command: Command, json: bool) -> Result<u8, CliError> {
    Box::pin(dispatch(log, command, json))
        .await
        .map_err(|error| error.looked_in(&log.name()))
}

async fn dispatch<L: Backend>(log: &L, command: Command, json: bool) -> Result<u8, CliError> {
    let workspace = Workspace::new(log.clone());
    match command {
        Command::Create { id, ctx, commit_id } => {
            create(&workspace, id, ctx, commit_id, json).await
        }
        Command::Commit(args) => crate::commit::commit(log, &args, json).await,
        Command::Show {
            case,
            replay: fresh,
            at_version,
            at_time,
        } => {
            let id = case_id(&case)?;
            if let Some(version) = at_version {
                return crate::views::show_at(
                    log,
                    &id,
                    Until::Version(Version::new(version)),
                    json,
                )
                .await;
            }
            if let Some(text) = at_time {
                let ms = crate::time::parse_instant("--at-time", &text)?;
                return crate::views::show_at(log, &id, Until::Time(ms), json).await;
            }
            let checks = fresh.then_some(StateChecks::Sampled);
            crate::views::show(log, &id, checks, json).await
        }
        Command::Diff { case, from, to } => crate::diff::run(log, &case, from, to, json).await,
        Command::Replay { case, strict } => {
            let checks = if strict {
                StateChecks::Every
            } else {
                StateChecks::Sampled
            };
            crate::views::show(log, &case_id(&case)?, Some(checks), json).await
        }
        Command::List(args) => crate::list::list(log, &args, json).await,
        Command::History(args) => crate::history::history(log, &args, json).await,
        command @ (Command::Audit {
            consistency: true, ..
        }
        | Command::Checkpoint { .. }
        | Command::Receipt { .. }) => crate::tree::run(log, command, json).await,
        Command::Audit {
            case,
            follow,
            expect_head,
            ..
        } => audit(log, case, follow, expect_head, json).await,
        Command::Project { retry, .. } if !retry.is_empty() => retry_cases(log, &retry, json).await,
        Command::Project {
            follow,
            checkpoint_key,
            checkpoint_every,
            checkpoint_seconds,
            origin,
            ..
        } => {
            let policy = checkpoint_key
                .map(|key| crate::tree::policy(&key, origin, checkpoint_every, checkpoint_seconds))
                .transpose()?;
            project(log, follow, policy.as_ref(), json).await
        }
        Command::Verify { all, cases } => crate::views::verify_cases(log, all, &cases, json).await,
        command @ (Command::Export { .. } | Command::Import { .. }) => {
            crate::transfer::run(log, command, json).await
        }
        Command::Demo(args) => crate::demo::run(log, &args, json).await,
        Command::Serve(args) => crate::serve::run(log, &args, json).await,
        #[cfg(feature = "bench")]
        Command::Bench(_) => unreachable!("bench is dispatched before a backend is chosen"),
    }
}

async fn create<L: Backend>(
    workspace: &Workspace<L>,
    id: Option<String>,
    ctx: Option<String>,
    commit_id: Option<CommitId>,
    json: bool,
) -> Result<u8, CliError> {
    let meta = crate::commit::meta(workspace, commit_id);
    // Without an id, the case is named after its first commit: the same command run again
    // with the same commit id names the same case.
    let id = match id {
        Some(id) => case_id(&id)?,
        None => case_id(&meta.commit_id.to_string())?,
    };
    let mut handle = workspace.new_case(id.clone());
    if let Some(ctx) = ctx {
        let value: Value = serde_json::from_str(&ctx)
            .map_err(|e| CliError::bad_input(format!("invalid --ctx JSON: {e}")))?;
        if !matches!(value, Value::Map(_)) {
            return Err(CliError::bad_input(format!(
                "--ctx must be a JSON object, not {}",
                value.type_name()
            )));
        }
        handle.buffer(Mutation::SetCtx { ctx: value });
    }
    let receipt = workspace.commit_with_meta(&mut handle, meta).await?;
    crate::stdout::stored(format!(
        "case {id} is created (commit {})",
        receipt.commit_id
    ));
    if json {
        print_json(&receipt_json(&receipt));
    } else {
        out!("{id}");
    }
    Ok(0)
}

async fn audit<L: Backend>(
    log: &L,
    case: Option<String>,
    follow: bool,
    expect_head: Option<String>,
    json: bool,
) -> Result<u8, CliError> {
    let print_receipt = |receipt: &wfstate_store::Receipt| print_receipt(receipt, json);
    if follow {
        let print_problem = |problem: &wfstate_projector::Problem| {
            if json {
                print_json(&json!({"problem": problem}));
            } else {
                out!(
                    "BROKEN {} at position {} ({}): {}",
                    problem.case_id,
                    problem.position,
                    problem.code,
                    problem.detail
                );
            }
        };
        match case {
            Some(case) => {
                audit_follow_case(log, &case_id(&case)?, print_receipt, print_problem).await?;
            }
            None => audit_follow(log, print_receipt, print_problem).await?,
        }
        return Ok(0);
    }
    let report = if let Some(case) = case {
        let head = expect_head
            .map(|hex| {
                Hash::from_hex(&hex).map_err(|e| CliError::bad_input(format!("--expect-head: {e}")))
            })
            .transpose()?;
        let id = case_id(&case)?;
        let report = audit_case(log, &id, head, print_receipt).await?;
        if report.events == 0 {
            return Err(CliError::case_not_found(id));
        }
        report
    } else {
        let total = log.last_position().await?.get();
        let (counted, _progress) = Progress::start(log, "auditing", Some(total), json);
        audit_all(&counted, print_receipt).await?
    };
    for problem in &report.problems {
        if json {
            print_json(&json!({"problem": problem}));
        } else {
            eprintln!(
                "wfstate: BROKEN {} at position {} ({}): {}",
                problem.case_id, problem.position, problem.code, problem.detail
            );
        }
    }
    if json {
        print_json(&json!({"audited": {
            "events": report.events,
            "cases": report.cases,
            "problems": report.problems.len(),
            "clean": report.is_clean(),
        }}));
    } else {
        eprintln!(
            "audited {} events of {} cases: {} problem(s)",
            report.events,
            report.cases,
            report.problems.len()
        );
    }
    Ok(if report.is_clean() { 0 } else { CHECK_FAILED })
}

/// The halted cases among those of `quarantined`: each case's view and its quarantine.
async fn halted<P: Projector>(
    projector: &P,
    quarantined: &[QuarantineRecord],
) -> Result<Vec<(CaseId, Quarantine)>, CliError> {
    let mut ids: Vec<CaseId> = quarantined
        .iter()
        .filter_map(|record| CaseId::new(&record.case_id).ok())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut halted = Vec::new();
    for id in ids {
        if let Some(quarantine) = projector.view(&id).await?.and_then(|view| view.quarantine) {
            halted.push((id, quarantine));
        }
    }
    Ok(halted)
}

fn halted_json(halted: &[(CaseId, Quarantine)]) -> serde_json::Value {
    halted
        .iter()
        .map(|(id, q)| {
            json!({
                "case": id.as_str(),
                "position": q.position,
                "code": q.code.as_str(),
                "reason": q.reason,
                "held": q.held,
            })
        })
        .collect()
}

fn print_halted(id: &CaseId, q: &Quarantine) {
    out!(
        "halted case {id} at position {} ({}), {} later event(s) held: {}",
        q.position,
        q.code,
        q.held,
        q.reason
    );
}

async fn retry_cases<L: Backend>(log: &L, cases: &[String], json: bool) -> Result<u8, CliError> {
    let ids = cases
        .iter()
        .map(|case| case_id(case))
        .collect::<Result<Vec<_>, _>>()?;
    let mut projector = log.projector().await?;
    let mut results = Vec::new();
    for id in ids {
        let view = projector
            .retry(&id)
            .await?
            .ok_or_else(|| CliError::bad_input(format!("case {id} has no events to fold")))?;
        results.push((id, view));
        crate::stdout::stored("the views of the cases retried are written");
    }
    let still: Vec<(CaseId, Quarantine)> = results
        .iter()
        .filter_map(|(id, view)| Some((id.clone(), view.quarantine.clone()?)))
        .collect();
    if json {
        let healthy: Vec<_> = results
            .iter()
            .filter(|(_, view)| view.is_healthy())
            .map(|(id, view)| json!({"case": id.as_str(), "version": view.state.version.get()}))
            .collect();
        print_json(&json!({"healthy": healthy, "halted": halted_json(&still)}));
    } else {
        for (id, view) in &results {
            match &view.quarantine {
                None => out!(
                    "case {id} folded again: healthy at version {}",
                    view.state.version
                ),
                Some(q) => print_halted(id, q),
            }
        }
    }
    Ok(if still.is_empty() { 0 } else { CHECK_FAILED })
}

/// `project --follow --partitions P`: one of the processes sharing the partitions, until
/// interrupted (then it gives its partitions back).
pub async fn project_shared(
    log: &wfstate_events::JetStreamLog,
    partitions: u32,
    json: bool,
) -> Result<u8, CliError> {
    if partitions == 0 {
        return Err(CliError::bad_input("--partitions must be at least 1"));
    }
    let config = ShareConfig::new(partitions);
    let projector = ProjectorConfig::for_stream(log.stream_name());
    let mut shared = Shared::open(log, projector, config).await?;
    let mut reported = std::time::Instant::now();
    loop {
        tokio::select! {
            round = shared.round() => {
                match round {
                    Ok(_) => {}
                    // A lost race for a view (another process took the partition meanwhile)
                    // or a server that is away: the batch comes back, and the round is run
                    // again.
                    Err(ProjectorError::Log(error)) if matches!(
                        error.kind(),
                        LogErrorKind::Unavailable | LogErrorKind::TimedOut
                    ) => {
                        eprintln!("wfstate: {error}; trying again");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Err(error) => return Err(error.into()),
                }
            }
            _ = tokio::signal::ctrl_c() => {
                Box::pin(shared.leave()).await?;
                return Ok(0);
            }
        }
        if reported.elapsed() >= Duration::from_secs(1) {
            reported = std::time::Instant::now();
            if json {
                print_json(&json!({"held": shared.held(), "applied": shared.applied()}));
            } else {
                out!("held {:?}  applied {}", shared.held(), shared.applied());
            }
        }
    }
}

async fn project<L: Backend>(
    log: &L,
    follow: bool,
    checkpoints: Option<&CheckpointPolicy>,
    json: bool,
) -> Result<u8, CliError> {
    let mut projector = log.projector().await?;
    let tree = match checkpoints {
        Some(_) => Some(log.tree(true).await?),
        None => None,
    };
    loop {
        projector.catch_up().await?;
        crate::stdout::stored("the views are caught up");
        if let (Some(policy), Some(tree)) = (checkpoints, &tree)
            && let Some(note) = checkpoint_if_due(log, tree, policy).await?
        {
            let size = note.lines().nth(1).unwrap_or_default();
            if json {
                print_json(&json!({"checkpoint": note}));
            } else {
                out!("signed a checkpoint of {size} events");
            }
        }
        let stats = projector.stats();
        let lag = projector.lag().await?;
        let quarantined = projector.quarantined().await?;
        let halted = halted(&projector, &quarantined).await?;
        if json {
            print_json(&json!({
                "applied": stats.applied.load(Ordering::Relaxed),
                "skipped": stats.skipped.load(Ordering::Relaxed),
                "held": stats.held.load(Ordering::Relaxed),
                "rebuilt": stats.rebuilt.load(Ordering::Relaxed),
                "quarantined": quarantined,
                "halted": halted_json(&halted),
                "lag": lag,
            }));
        } else {
            out!(
                "applied {}  skipped {}  held {}  rebuilt {}  quarantined {}  lag {lag}",
                stats.applied.load(Ordering::Relaxed),
                stats.skipped.load(Ordering::Relaxed),
                stats.held.load(Ordering::Relaxed),
                stats.rebuilt.load(Ordering::Relaxed),
                quarantined.len()
            );
            for (id, quarantine) in &halted {
                print_halted(id, quarantine);
            }
            for record in &quarantined {
                out!(
                    "quarantined position {} case {} ({}): {}",
                    record.position,
                    record.case_id,
                    record.code,
                    record.reason
                );
            }
        }
        if !follow {
            return Ok(0);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
