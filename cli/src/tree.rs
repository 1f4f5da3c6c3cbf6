//! The log's signed tree from the command line: `checkpoint` (and its keys), `receipt
//! --proof`, and `audit --consistency`.

use std::io::Write;
use std::path::Path;

use serde_json::json;
use wfstate_projector::{CheckpointPolicy, audit_tree, checkpoint, prove};
use wfstate_store::checkpoint::{SignerKey, VerifierKey};
use wfstate_store::{CaseId, Version};

use crate::Command;
use crate::backend::Backend;
use crate::error::{CHECK_FAILED, CliError};
use crate::output::{receipt_json, receipt_text};
use crate::stdout::{out, out_raw};

/// When `project` signs checkpoints, with the key in `key`.
pub fn policy(
    key: &Path,
    origin: String,
    every: u64,
    seconds: u64,
) -> Result<CheckpointPolicy, CliError> {
    Ok(CheckpointPolicy {
        key: signer_in(Some(key))?,
        origin,
        every: every.max(1),
        interval: std::time::Duration::from_secs(seconds),
    })
}

/// What `checkpoint` was asked to do.
struct CheckpointArgs<'a> {
    key: Option<&'a Path>,
    origin: &'a str,
    new_key: Option<&'a str>,
    public_key: bool,
}

/// Runs `checkpoint`, `receipt` and `audit --consistency`.
pub async fn run<L: Backend>(log: &L, command: Command, json: bool) -> Result<u8, CliError> {
    match command {
        Command::Checkpoint {
            key,
            origin,
            new_key,
            public_key,
        } => {
            let args = CheckpointArgs {
                key: key.as_deref(),
                origin: &origin,
                new_key: new_key.as_deref(),
                public_key,
            };
            run_checkpoint(log, args, json).await
        }
        Command::Receipt { case, version, .. } => {
            let case = CaseId::new(&case)?;
            run_receipt(log, &case, version, json).await
        }
        Command::Audit { trust, .. } => run_consistency(log, &trust, json).await,
        // The caller hands over only the three commands above.
        _ => Err(CliError::bad_input(
            "only checkpoint, receipt and audit --consistency read the log's tree",
        )),
    }
}

/// The signing key in `file`.
fn signer_in(file: Option<&Path>) -> Result<SignerKey, CliError> {
    let Some(file) = file else {
        return Err(CliError::bad_input(
            "give the signing key: --key FILE or WFSTATE_SIGNING_KEY (a new one: \
             `wfstate checkpoint --new-key NAME --key FILE`)",
        ));
    };
    let text = std::fs::read_to_string(file).map_err(|error| {
        CliError::bad_input(format!(
            "cannot read the signing key {}: {error}",
            file.display()
        ))
    })?;
    SignerKey::parse(&text)
        .map_err(|error| CliError::bad_input(format!("{}: {error}", file.display())))
}

/// Writes a new signing key named `name` to `file` (readable by its owner only; an existing
/// file is kept) and returns it.
fn new_key(name: &str, file: &Path) -> Result<SignerKey, CliError> {
    let mut seed = [0; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| std::io::Read::read_exact(&mut random, &mut seed))
        .map_err(|error| {
            CliError::new(
                crate::error::UNAVAILABLE,
                format!("cannot read random bytes for a key (/dev/urandom): {error}"),
            )
        })?;
    let key = SignerKey::new(name, seed).map_err(|error| CliError::bad_input(error.to_string()))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut out = options.open(file).map_err(|error| {
        CliError::bad_input(format!(
            "cannot create the key file {}: {error} (an existing key is never overwritten)",
            file.display()
        ))
    })?;
    writeln!(out, "{}", key.encode()).map_err(|error| {
        CliError::bad_input(format!(
            "cannot write the key file {}: {error}",
            file.display()
        ))
    })?;
    Ok(key)
}

async fn run_checkpoint<L: Backend>(
    log: &L,
    args: CheckpointArgs<'_>,
    json: bool,
) -> Result<u8, CliError> {
    if let Some(name) = args.new_key {
        let Some(file) = args.key else {
            return Err(CliError::bad_input(
                "--new-key writes the key to --key FILE: give it",
            ));
        };
        let key = new_key(name, file)?;
        let verifier = key.verifier().encode();
        if json {
            out!("{}", json!({"key_file": file, "verifier_key": verifier}));
        } else {
            eprintln!(
                "wfstate: wrote a new signing key to {}; give auditors its verifier key:",
                file.display()
            );
            out!("{verifier}");
        }
        return Ok(0);
    }
    let key = signer_in(args.key)?;
    if args.public_key {
        let verifier = key.verifier().encode();
        if json {
            out!("{}", json!({"verifier_key": verifier}));
        } else {
            out!("{verifier}");
        }
        return Ok(0);
    }
    let tree = log.tree(true).await?;
    let note = checkpoint(log, &tree, &key, args.origin).await?;
    crate::stdout::stored("the checkpoint is signed and kept");
    if json {
        out!("{}", json!({"checkpoint": note}));
    } else {
        out_raw!("{note}");
    }
    Ok(0)
}

/// The receipt of `case` at `version` with its inclusion proof and the newest checkpoint, as
/// `receipt --json` prints it.
pub async fn proven_receipt<L: Backend>(
    log: &L,
    case: &CaseId,
    version: u64,
) -> Result<serde_json::Value, CliError> {
    let tree = log.tree(false).await?;
    let proven = prove(log, &tree, case, Version::new(version)).await?;
    let proof: Vec<String> = proven
        .proof
        .iter()
        .map(wfstate_store::Hash::to_hex)
        .collect();
    Ok(json!({
        "receipt": receipt_json(&proven.receipt),
        "leaf_index": proven.leaf,
        "inclusion_proof": proof,
        "checkpoint": proven.checkpoint,
    }))
}

async fn run_receipt<L: Backend>(
    log: &L,
    case: &CaseId,
    version: u64,
    json: bool,
) -> Result<u8, CliError> {
    if json {
        out!("{}", proven_receipt(log, case, version).await?);
        return Ok(0);
    }
    let tree = log.tree(false).await?;
    let proven = prove(log, &tree, case, Version::new(version)).await?;
    let proof: Vec<String> = proven
        .proof
        .iter()
        .map(wfstate_store::Hash::to_hex)
        .collect();
    {
        out!("{}", receipt_text(&proven.receipt));
        out!("leaf {} proof {}", proven.leaf, proof.join(" "));
        out_raw!("{}", proven.checkpoint);
    }
    Ok(0)
}

/// The trusted keys of `--trust` (each a key, or several comma-separated).
fn trusted(keys: &[String]) -> Result<Vec<VerifierKey>, CliError> {
    let keys: Vec<VerifierKey> = keys
        .iter()
        .flat_map(|keys| keys.split(','))
        .filter(|key| !key.trim().is_empty())
        .map(|key| {
            VerifierKey::parse(key).map_err(|e| CliError::bad_input(format!("--trust: {e}")))
        })
        .collect::<Result<_, _>>()?;
    if keys.is_empty() {
        return Err(CliError::bad_input(
            "--consistency checks signatures: give the keys to trust with --trust KEY or \
             WFSTATE_TRUSTED_KEYS (`wfstate checkpoint --public-key` prints one)",
        ));
    }
    Ok(keys)
}

async fn run_consistency<L: Backend>(
    log: &L,
    trust: &[String],
    json: bool,
) -> Result<u8, CliError> {
    let keys = trusted(trust)?;
    let tree = log.tree(false).await?;
    let audit = audit_tree(log, &tree, &keys).await?;
    for problem in &audit.problems {
        if json {
            out!("{}", json!({"problem": problem}));
        } else {
            out!(
                "CHECKPOINT of {} events ({}): {}",
                problem.size,
                problem.code,
                problem.detail
            );
        }
    }
    if json {
        out!(
            "{}",
            json!({"checkpoints": audit.checkpoints, "events": audit.events, "problems": audit.problems.len()})
        );
    } else if audit.problems.is_empty() {
        out!(
            "{} checkpoint(s) over {} events: each signed by a trusted key, extending the one \
             before, and rebuilt from the log",
            audit.checkpoints,
            audit.events
        );
    } else {
        out!(
            "{} checkpoint(s) over {} events: {} problem(s)",
            audit.checkpoints,
            audit.events,
            audit.problems.len()
        );
    }
    Ok(if audit.problems.is_empty() {
        0
    } else {
        CHECK_FAILED
    })
}
