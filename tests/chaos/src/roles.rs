//! The projector and the auditor, each run as a process of its own for the whole run (so that
//! the projector can be killed mid-batch); both start over after any error.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use wfstate_projector::{JetStreamProjector, ProjectorConfig, audit_follow};

use crate::connect_log;
use crate::record::{Record, Recorder, now_ms};

/// The longest a projector or auditor process runs past the run's deadline: the suite stops
/// them itself once their work is checked.
const OVERTIME_MS: u64 = 10 * 60 * 1000;

/// The arguments of the projector and the auditor.
#[derive(Debug, clap::Args)]
pub struct RoleArgs {
    /// The cluster's client URLs.
    #[arg(long)]
    pub urls: String,
    /// The run's deadline, ms since the epoch.
    #[arg(long)]
    pub until: u64,
    /// The record file (the auditor's progress and problems).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The projector's configuration: the defaults, with a short acknowledgement wait so that a
/// batch held by a killed projector comes back within seconds.
pub fn projector_config() -> ProjectorConfig {
    let mut config = ProjectorConfig::default();
    config.ack_wait = Duration::from_secs(5);
    config
}

/// Projects batch after batch until killed.
pub async fn project(args: RoleArgs) {
    crate::exit_with_the_suite();
    let log = connect_log(&args.urls, args.until).await;
    while now_ms() < args.until + OVERTIME_MS {
        let mut projector = match JetStreamProjector::open(&log, projector_config()).await {
            Ok(projector) => projector,
            Err(error) => {
                eprintln!("projector: open: {error}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        while now_ms() < args.until + OVERTIME_MS {
            match projector.run_batch().await {
                Ok(_) => {}
                Err(error) => {
                    eprintln!("projector: {error}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    break;
                }
            }
        }
    }
}

/// Follows the stream with an auditor (`audit --follow`) until killed, writing each problem
/// and, four times a second, the last position checked.
pub async fn follow(args: RoleArgs) {
    crate::exit_with_the_suite();
    let log = connect_log(&args.urls, args.until).await;
    let out = args.out.expect("the auditor's record file");
    let recorder = Arc::new(Mutex::new(
        Recorder::open(&out).expect("open the auditor's record"),
    ));
    let position = Arc::new(AtomicU64::new(0));
    {
        let (recorder, position) = (Arc::clone(&recorder), Arc::clone(&position));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let position = position.load(Ordering::SeqCst);
                recorder
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .write(&Record::Audited { position });
            }
        });
    }
    while now_ms() < args.until + OVERTIME_MS {
        // Each attempt starts from the first event with a new auditor: the chains are checked
        // whole, and progress counts from zero again.
        position.store(0, Ordering::SeqCst);
        let followed = audit_follow(
            &log,
            |receipt| position.store(receipt.position.get(), Ordering::SeqCst),
            |problem| {
                recorder
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .write(&Record::Problem {
                        case: problem.case_id.clone(),
                        code: problem.code.to_string(),
                        detail: problem.detail.clone(),
                    });
            },
        )
        .await;
        if let Err(error) = followed {
            eprintln!("auditor: {error}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
