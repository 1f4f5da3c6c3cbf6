//! Reading views: `show` and `verify`, which bring the views up to date first where they may,
//! and read them as the projector left them where the store refuses these rights.

use futures::TryStreamExt;
use serde_json::json;
use wfstate_events::LogErrorKind;
use wfstate_projector::{
    Projector, ProjectorError, Replayed, StateChecks, Until, ViewSource, replay_to, replay_with,
    verify, verify_all,
};
use wfstate_store::{CaseId, Position};

use crate::backend::Backend;
use crate::commands::{case_id, print_json};
use crate::error::{BAD_INPUT, CHECK_FAILED, CliError};
use crate::output::{state_json, state_text};
use crate::progress::Progress;
use crate::stdout::{out, out_raw};

/// The projector, caught up.
async fn caught_up<L: Backend>(log: &L) -> Result<L::Projector, ProjectorError> {
    let mut projector = log.projector().await?;
    projector.catch_up().await?;
    Ok(projector)
}

/// Whether the store refused a projector these rights: then the views are read as they are.
pub(crate) fn refused(error: &ProjectorError) -> bool {
    matches!(error, ProjectorError::Log(error) if error.kind() == LogErrorKind::PermissionDenied)
}

/// The views, brought up to date first where these rights allow, else as the projector left
/// them (said on stderr, `doing` naming the command's work).
pub async fn current<L: Backend>(log: &L, doing: &str) -> Result<L::Views, CliError> {
    match caught_up(log).await {
        Ok(_) => {}
        Err(error) if refused(&error) => eprintln!(
            "wfstate: {doing} the views as the projector left them: this store may not be \
             written with these rights ({error})"
        ),
        Err(error) => return Err(error.into()),
    }
    Ok(log.views().await?)
}

/// Prints a case's view, or a replay of its history with `checks`.
pub async fn show<L: Backend>(
    log: &L,
    id: &CaseId,
    replayed: Option<StateChecks>,
    json: bool,
) -> Result<u8, CliError> {
    let (state, position, quarantine) = if let Some(checks) = replayed {
        // The case's version is its count of events: the bar's length.
        let total = log
            .last_event(id)
            .await?
            .and_then(|last| wfstate_store::Event::decode(&last.payload).ok())
            .map(|event| event.version.get());
        let (counted, _progress) = Progress::start(log, "replaying", total, json);
        let replayed = replay_with(&counted, id, None, checks).await?;
        (replayed.state, replayed.position, None)
    } else {
        let view = match caught_up(log).await {
            Ok(projector) => projector.view(id).await?,
            Err(error) if refused(&error) => {
                eprintln!(
                    "wfstate: showing the view as the projector left it: this store may not be \
                     written with these rights ({error})"
                );
                log.views().await?.view(id).await?
            }
            Err(error) => return Err(error.into()),
        };
        let view = view.ok_or_else(|| CliError::case_not_found(id))?;
        (view.state, view.position, view.quarantine)
    };
    if json {
        print_json(&state_json(&state, position, quarantine.as_ref()));
    } else {
        out_raw!("{}", state_text(&state, position, quarantine.as_ref()));
    }
    Ok(0)
}

/// The case as it was at `until`, replayed from its history: a version past its last, or an
/// instant before its first event, is an error that says so.
pub async fn replayed_at<L: Backend>(
    log: &L,
    id: &CaseId,
    until: Until,
) -> Result<Replayed, CliError> {
    let replayed = match replay_to(log, id, until).await {
        Ok(replayed) => replayed,
        Err(ProjectorError::CaseNotFound(_)) if let Until::Time(ms) = until => {
            return Err(before_creation(log, id, ms).await?);
        }
        Err(error) => return Err(error.into()),
    };
    if let Until::Version(version) = until
        && replayed.state.version != version
    {
        return Err(CliError::not_found(format!(
            "case {id} has {} version(s): version {version} is past its last; `wfstate \
             history {id}` lists them",
            replayed.state.version
        )));
    }
    Ok(replayed)
}

/// Prints the case as it was at `until`, replayed from its history.
pub async fn show_at<L: Backend>(
    log: &L,
    id: &CaseId,
    until: Until,
    json: bool,
) -> Result<u8, CliError> {
    let replayed = replayed_at(log, id, until).await?;
    if json {
        print_json(&state_json(&replayed.state, replayed.position, None));
    } else {
        out_raw!("{}", state_text(&replayed.state, replayed.position, None));
    }
    Ok(0)
}

/// Why a case has no state at `ms`: it did not exist yet, or not at all.
async fn before_creation<L: Backend>(log: &L, id: &CaseId, ms: u64) -> Result<CliError, CliError> {
    let mut events = log.history(id, Position::ZERO).await?;
    let Some(first) = events.try_next().await? else {
        return Ok(CliError::case_not_found(id));
    };
    let created = wfstate_store::Event::decode(&first.payload).map_or_else(
        |_| "later".to_owned(),
        |event| crate::time::format_ms(event.committed_at_ms),
    );
    Ok(CliError::bad_input(format!(
        "case {id} was created at {created}, after --at-time {}; give a later time",
        crate::time::format_ms(ms)
    )))
}

/// Verifies the views of `ids` (every case with a view for `None`); returns how many were
/// verified and the mismatches.
async fn verify_views<L: Backend, V: ViewSource>(
    log: &L,
    views: &V,
    ids: Option<&[CaseId]>,
    json: bool,
) -> Result<(usize, Vec<wfstate_projector::Mismatch>), CliError> {
    Ok(match ids {
        // One read of the log in order, not one history per case.
        None => {
            let total = log.last_position().await?.get();
            let (counted, _progress) = Progress::start(log, "verifying", Some(total), json);
            let verified = verify_all(&counted, views).await?;
            (verified.cases, verified.mismatches)
        }
        Some(ids) => (ids.len(), verify(log, views, ids).await?),
    })
}

pub async fn verify_cases<L: Backend>(
    log: &L,
    all: bool,
    cases: &[String],
    json: bool,
) -> Result<u8, CliError> {
    let ids = if all {
        None
    } else if cases.is_empty() {
        return Err(CliError::new(
            BAD_INPUT,
            "name the cases to verify, or give --all",
        ));
    } else {
        Some(
            cases
                .iter()
                .map(|case| case_id(case))
                .collect::<Result<Vec<_>, _>>()?,
        )
    };
    // A case the log has never seen is a typo or another store, not a mismatch.
    for id in ids.iter().flatten() {
        let mut events = log.history(id, Position::ZERO).await?;
        if events.try_next().await?.is_none() {
            return Err(CliError::case_not_found(id));
        }
    }
    let (count, mismatches) = match caught_up(log).await {
        Ok(projector) => verify_views(log, &projector, ids.as_deref(), json).await?,
        // A reader that may not write (an auditor) verifies the views as they are: each
        // against its history up to its own position, which needs no catch-up.
        Err(error) if refused(&error) => {
            eprintln!(
                "wfstate: verifying the views as the projector left them: this store may not \
                 be written with these rights ({error})"
            );
            verify_views(log, &log.views().await?, ids.as_deref(), json).await?
        }
        Err(error) => return Err(error.into()),
    };
    for mismatch in &mismatches {
        if json {
            print_json(&json!({"case_id": mismatch.case_id.as_str(), "mismatch": mismatch.detail}));
        } else {
            eprintln!(
                "wfstate: MISMATCH {}: {}",
                mismatch.case_id, mismatch.detail
            );
        }
    }
    if json {
        let names: Vec<&str> = mismatches.iter().map(|m| m.case_id.as_str()).collect();
        let mut summary = json!({
            "verified": count,
            "mismatches": mismatches.len(),
            "mismatched_cases": names,
            "clean": mismatches.is_empty(),
        });
        // Named cases each get their result.
        if let Some(ids) = &ids {
            summary["cases"] = ids
                .iter()
                .map(|id| {
                    let detail = mismatches
                        .iter()
                        .find(|m| &m.case_id == id)
                        .map(|m| &m.detail);
                    json!({"case_id": id.as_str(), "ok": detail.is_none(), "mismatch": detail})
                })
                .collect();
        }
        print_json(&summary);
    } else {
        out!(
            "verified {count} case(s): {} mismatch(es)",
            mismatches.len()
        );
    }
    Ok(if mismatches.is_empty() {
        0
    } else {
        CHECK_FAILED
    })
}
