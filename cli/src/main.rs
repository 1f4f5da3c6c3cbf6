//! The `wfstate` command line: create, commit, show, history, audit, project, replay, verify,
//! export, import, and `demo`, the main job. It runs on the embedded log in `--data-dir` unless
//! a NATS URL is given.
//!
//! Exit codes: 0 success, 1 a check failed (verify, audit, demo), 2 bad input, 3 conflict,
//! 4 backend unavailable or an outcome not known yet, 5 done but the output could not be
//! written, 141 the reader closed the output. Errors are one line on stderr (validation
//! errors: one line each).

mod backend;
mod commands;
mod commit;
mod demo;
mod diff;
mod error;
mod help;
mod history;
mod list;
mod output;
mod progress;
mod serve;
mod stdout;
mod time;
mod transfer;
mod tree;
mod views;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::error::CliError;

// The store allocates and frees many small values per event (decoded mutations, state
// copies); mimalloc takes a measurable share of that off the commit, replay and projector
// paths (see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// wfstate: an event-sourced state store for workflow cases.
#[derive(Debug, Parser)]
#[command(name = "wfstate", version, about, after_help = help::EXIT_CODES)]
struct Cli {
    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// More logging on stderr (-v, -vv).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(flatten)]
    store: StoreArgs,
    #[command(subcommand)]
    command: Command,
}

/// Where the log is, and the credentials for a NATS server.
#[derive(Debug, Args)]
#[command(next_help_heading = "Store and connection (every command)")]
struct StoreArgs {
    /// NATS server URL(s), comma-separated; without it the embedded log is used.
    #[arg(long, env = "WFSTATE_NATS_URL", global = true)]
    nats: Option<String>,
    /// The JetStream stream of events; its cases' subjects are `<stream in lower case>.case.*`
    /// and its projector's buckets `<stream>_VIEWS` and `<stream>_QUARANTINE`.
    #[arg(
        long,
        env = "WFSTATE_STREAM",
        default_value = "WFSTATE",
        global = true,
        value_parser = stream_name
    )]
    stream: String,
    /// The embedded log's directory.
    #[arg(
        long,
        env = "WFSTATE_DATA_DIR",
        default_value = "./wfstate-data",
        global = true
    )]
    data_dir: PathBuf,
    /// NATS user (with --password).
    #[arg(long, env = "WFSTATE_USER", global = true)]
    user: Option<String>,
    /// NATS password.
    #[arg(long, env = "WFSTATE_PASSWORD", global = true, hide_env_values = true)]
    password: Option<String>,
    /// NATS token.
    #[arg(long, env = "WFSTATE_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// NATS credentials file.
    #[arg(long, env = "WFSTATE_CREDS", global = true)]
    creds: Option<PathBuf>,
    /// File holding an nkey seed.
    #[arg(long, env = "WFSTATE_NKEY", global = true)]
    nkey: Option<PathBuf>,
    /// CA certificate to trust (PEM).
    #[arg(long, env = "WFSTATE_TLS_CA", global = true)]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM), with --tls-key.
    #[arg(long, env = "WFSTATE_TLS_CERT", global = true)]
    tls_cert: Option<PathBuf>,
    /// Client certificate key (PEM).
    #[arg(long, env = "WFSTATE_TLS_KEY", global = true)]
    tls_key: Option<PathBuf>,
    /// The longest wait for the server, in seconds (fractions allowed: 0.5).
    #[arg(long, env = "WFSTATE_TIMEOUT", default_value = "5", global = true, value_parser = seconds)]
    timeout: std::time::Duration,
    /// Replicas of the stream and of the projector's buckets (default: 3 on a cluster, 1 on a
    /// single server); an existing stream or bucket with fewer is refused.
    #[arg(long, env = "WFSTATE_REPLICAS", global = true, value_parser = clap::value_parser!(u16).range(1..=5))]
    replicas: Option<u16>,
    /// Partitions of the stream, when wfstate creates it: the server stores each case's
    /// events under its partition, and `project --follow` processes share the partitions,
    /// each reading only its own. Fixed at creation; another count is refused.
    #[arg(long, env = "WFSTATE_STREAM_PARTITIONS", global = true, value_parser = clap::value_parser!(u32).range(1..=1024))]
    stream_partitions: Option<u32>,
}

/// A stream name: letters, digits, `_` and `-` (it names subjects and buckets too).
fn stream_name(text: &str) -> Result<String, String> {
    if text.is_empty()
        || text.len() > 32
        || !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(format!(
            "{text:?} is not a stream name: give 1 to 32 letters, digits, '_' or '-'"
        ));
    }
    Ok(text.to_owned())
}

/// A wait in seconds: a positive number, fractions allowed.
fn seconds(text: &str) -> Result<std::time::Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(seconds > 0.0 && seconds <= 86_400.0) {
        return Err(format!(
            "{text} is not a wait above 0 and at most 86400 seconds"
        ));
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a case (its first commit) and print its id.
    #[command(after_help = help::CREATE)]
    Create {
        /// The case id (default: the commit id, so that running the command again with
        /// --commit-id finds the same case).
        #[arg(long)]
        id: Option<String>,
        /// The initial ctx, a JSON object.
        #[arg(long)]
        ctx: Option<String>,
        /// The first commit's id, a UUID the caller chose (its idempotency key): run again
        /// with the same id, the command prints the case and stores nothing. Default: a new
        /// one, printed when the outcome is not known.
        #[arg(long, value_name = "ID", value_parser = commit::commit_id)]
        commit_id: Option<wfstate_store::CommitId>,
    },
    /// Commit the JSON mutations in FILE (or stdin) to CASE and print the receipt.
    #[command(after_help = commit::HELP)]
    Commit(commit::CommitArgs),
    /// Show a case's view (the projector catches up first), a fresh replay, or the case as it
    /// was at a version or an instant.
    #[command(after_help = help::SHOW)]
    Show {
        /// The case.
        case: String,
        /// Replay the case from its history instead of reading its view.
        #[arg(long)]
        replay: bool,
        /// The case as it was after version V, replayed from its history.
        #[arg(long, value_name = "V", conflicts_with_all = ["replay", "at_time"])]
        at_version: Option<u64>,
        /// The case as it was at T (RFC 3339, a date, or a span back from now like 2h): its
        /// events committed up to T, replayed.
        #[arg(long, value_name = "T", conflicts_with = "replay")]
        at_time: Option<String>,
    },
    /// What changed in a case between two versions: ctx keys, tokens, scopes, status and
    /// metadata (version 0 is the case before its first event).
    #[command(after_help = help::DIFF)]
    Diff {
        /// The case.
        case: String,
        /// The version to compare from.
        from: u64,
        /// The version to compare to.
        to: u64,
    },
    /// List the cases in the views, the most recently committed first.
    #[command(after_help = help::LIST)]
    List(list::ListArgs),
    /// A case's events: version, time, writer and what each changed (--json: one object a
    /// line, with the hashes).
    #[command(after_help = help::HISTORY)]
    History(history::HistoryArgs),
    /// Read receipts and verify every chain; exit 1 on a broken one.
    #[command(after_help = help::AUDIT)]
    Audit {
        /// Audit only this case (default: every case).
        case: Option<String>,
        /// Keep following new events.
        #[arg(long)]
        follow: bool,
        /// The head (event hash) the case's last event must have, from a writer's receipt.
        #[arg(long, requires = "case")]
        expect_head: Option<String>,
        /// Check the log's signed checkpoints instead: each signed by a trusted key (--trust),
        /// each extending the one before, and each root rebuilt from the log's events.
        #[arg(long, conflicts_with_all = ["case", "follow"])]
        consistency: bool,
        /// A verifier key to trust (NAME+KEYID+BASE64, from `checkpoint --public-key`);
        /// repeat, or separate with commas.
        #[arg(long, env = "WFSTATE_TRUSTED_KEYS", value_name = "KEY")]
        trust: Vec<String>,
    },
    /// Extend the log's Merkle tree over every event and sign a checkpoint of it; or make a
    /// signing key (--new-key), or print the verifier key of one (--public-key).
    #[command(after_help = help::CHECKPOINT)]
    Checkpoint {
        /// The signing key's file.
        #[arg(long, env = "WFSTATE_SIGNING_KEY", value_name = "FILE")]
        key: Option<PathBuf>,
        /// Which log the checkpoints are of: the same for every checkpoint of this log, and
        /// unique among logs.
        #[arg(long, env = "WFSTATE_LOG_ORIGIN", default_value = "wfstate")]
        origin: String,
        /// Write a new signing key named NAME to --key FILE and print its verifier key.
        #[arg(long, value_name = "NAME", conflicts_with = "public_key")]
        new_key: Option<String>,
        /// Print the verifier key of --key FILE.
        #[arg(long)]
        public_key: bool,
    },
    /// Print the receipt of CASE at --version, with the proof that its event is in the newest
    /// signed checkpoint.
    #[command(after_help = help::RECEIPT)]
    Receipt {
        /// The case.
        case: String,
        /// The version.
        #[arg(long)]
        version: u64,
        /// Print the inclusion proof and the checkpoint (the default; there is no other form).
        #[arg(long, default_value_t = true)]
        proof: bool,
    },
    /// Run the projector until it has caught up; report lag, halted cases and quarantined
    /// events.
    #[command(after_help = help::PROJECT)]
    Project {
        /// Keep projecting new events.
        #[arg(long)]
        follow: bool,
        /// Fold a halted case's view again from its first event (after a fix of its writer
        /// or of wfstate); exit 1 if it halts again. Repeat for several cases.
        #[arg(long, value_name = "CASE", conflicts_with = "follow")]
        retry: Vec<String>,
        /// With --follow on JetStream: share the cases with the other processes started
        /// with the same count, each partition folded by one process at a time and handed
        /// over within about 5 s when its process dies. Default: the stream's partitions
        /// (--stream-partitions), if it has them.
        #[arg(
            long,
            value_name = "P",
            requires = "follow",
            conflicts_with = "checkpoint_key"
        )]
        partitions: Option<u32>,
        /// Also extend the log's tree and sign a checkpoint with the key in FILE after
        /// --checkpoint-every new events, or --checkpoint-seconds after the newest checkpoint
        /// (one projector process signs: not with --partitions).
        #[arg(long, value_name = "FILE")]
        checkpoint_key: Option<PathBuf>,
        /// New events that call for a checkpoint.
        #[arg(
            long,
            value_name = "N",
            default_value_t = 10_000,
            requires = "checkpoint_key"
        )]
        checkpoint_every: u64,
        /// Seconds after the newest checkpoint when any new event calls for one.
        #[arg(
            long,
            value_name = "S",
            default_value_t = 60,
            requires = "checkpoint_key"
        )]
        checkpoint_seconds: u64,
        /// The checkpoints' origin line (as `checkpoint --origin`).
        #[arg(long, env = "WFSTATE_LOG_ORIGIN", default_value = "wfstate")]
        origin: String,
    },
    /// Rebuild a case from its history and print it.
    #[command(after_help = help::REPLAY)]
    Replay {
        /// The case.
        case: String,
        /// Check every event's state hash, not every 1,024th and the last: a divergence is
        /// then found at the event that caused it.
        #[arg(long)]
        strict: bool,
    },
    /// Replay cases from scratch up to their views' positions and compare; exit 1 on a
    /// mismatch.
    #[command(after_help = help::VERIFY)]
    Verify {
        /// Every case that has a view.
        #[arg(long, conflicts_with = "cases")]
        all: bool,
        /// The cases.
        cases: Vec<String>,
    },
    /// Write the whole log to FILE, verifying every chain; the file ends with a trailer that
    /// counts and hashes its content, and appears only once whole.
    #[command(after_help = help::EXPORT)]
    Export {
        /// The file; `-`: stdout.
        file: PathBuf,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Read a log from FILE into this store, verifying every chain first; a file without its
    /// trailer (cut short) or changed is refused.
    #[command(after_help = help::IMPORT)]
    Import {
        /// The file; `-`: stdin.
        file: PathBuf,
        /// The file, checked whole before the store is opened.
        #[arg(skip)]
        source: Option<transfer::Source>,
    },
    /// End-to-end figures next to raw baselines (JetStream phases need --nats).
    #[cfg(feature = "bench")]
    #[command(after_help = help::BENCH)]
    Bench(wfstate_bench::BenchArgs),
    /// The main job: concurrent workers drive workflow cases, then every case is replayed,
    /// verified and audited.
    /// A read-only web console and HTTP JSON API over the store, on loopback unless told
    /// otherwise.
    #[command(after_help = help::SERVE)]
    Serve(serve::ServeArgs),
    #[command(after_help = help::DEMO)]
    Demo(demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("WFSTATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("wfstate: cannot start the async runtime: {error}");
            return ExitCode::from(4);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            error.print();
            ExitCode::from(error.code)
        }
    }
}

/// What the command does with the store: a command that only reads opens the embedded file to
/// read only, so that a user who may only read the data directory can run it; `verify` and
/// `show` bring the views up to date first where they may write.
fn access(command: &Command) -> backend::Access {
    match command {
        Command::History(_)
        | Command::Replay { .. }
        | Command::Audit { .. }
        | Command::Receipt { .. }
        | Command::Export { .. }
        | Command::Diff { .. } => backend::Access::Read,
        Command::Show {
            replay,
            at_version,
            at_time,
            ..
        } if *replay || at_version.is_some() || at_time.is_some() => backend::Access::Read,
        Command::Verify { .. } | Command::List(_) | Command::Show { .. } | Command::Serve(_) => {
            backend::Access::WriteOrRead
        }
        _ => backend::Access::Write,
    }
}

/// The signal a write past the file size limit (`ulimit -f`) raises, on Linux.
#[cfg(unix)]
const SIGXFSZ: i32 = 25;

async fn run(mut cli: Cli) -> Result<u8, CliError> {
    // The demo keeps to a stream of its own on a server, unless told otherwise.
    if let Command::Demo(args) = &cli.command
        && cli
            .store
            .nats
            .as_ref()
            .is_some_and(|urls| !urls.trim().is_empty())
        && !args.into_main_stream
        && cli.store.stream == "WFSTATE"
    {
        demo::STREAM.clone_into(&mut cli.store.stream);
    }
    // An export over the embedded store, or an import of its own file, is refused before the
    // store is opened.
    if cli
        .store
        .nats
        .as_ref()
        .is_none_or(|urls| urls.trim().is_empty())
    {
        transfer::guard_store(&cli.store.data_dir, &cli.command)?;
    }
    // A bad file is refused before a store is opened, so that it creates none.
    if let Command::Import { file, source } = &mut cli.command {
        *source = Some(transfer::Source::checked(file)?);
    }
    // Past a file size limit, a write is then an error that removes the partial file, where
    // the signal's default action would end the process and leave it behind.
    #[cfg(unix)]
    let _file_size_limit = match &cli.command {
        Command::Export { .. } => {
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(SIGXFSZ)).ok()
        }
        _ => None,
    };
    let store = backend::open(&cli.store, access(&cli.command)).await?;
    #[cfg(feature = "bench")]
    if let Command::Bench(args) = &cli.command {
        let nats = match &store {
            backend::Store::JetStream(log) => Some(log.as_ref()),
            backend::Store::Embedded(_) => None,
        };
        let figures = Box::pin(wfstate_bench::run(nats, args, cli.json))
            .await
            .map_err(|error| CliError::new(error::UNAVAILABLE, error.to_string()))?;
        stdout::out!("{figures}");
        return Ok(0);
    }
    if let Command::Project {
        follow: true,
        partitions,
        ..
    } = &cli.command
    {
        let shared = match (&store, partitions) {
            (backend::Store::JetStream(log), Some(count)) => Some((log, *count)),
            (backend::Store::JetStream(log), None) => log.partitions().map(|count| (log, count)),
            (backend::Store::Embedded(_), Some(_)) => {
                return Err(CliError::bad_input(
                    "--partitions shares a JetStream stream between processes: give --nats",
                ));
            }
            (backend::Store::Embedded(_), None) => None,
        };
        if let Some((log, count)) = shared {
            return Box::pin(commands::project_shared(log, count, cli.json)).await;
        }
    }
    match store {
        backend::Store::Embedded(log) => Box::pin(commands::run(&log, cli.command, cli.json)).await,
        backend::Store::JetStream(log) => {
            Box::pin(commands::run(log.as_ref(), cli.command, cli.json)).await
        }
    }
}
