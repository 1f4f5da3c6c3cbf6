//! One run and the suite of runs: the cluster, the processes, the faults on their schedule,
//! then healing, and the checks.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use wfstate_events::{JetStreamConfig, JetStreamLog, LogErrorKind, Workspace};
use wfstate_projector::{JetStreamProjector, Projector, audit_all, verify};
use wfstate_store::Mutation;
use wfstate_tests::NatsCluster;

use crate::record::{self, Record, now_ms};
use crate::report::{self, Injected, RunOutcome};
use crate::schedule::{self, Fault, Planned};
use crate::{cases, check};

/// Nodes in the cluster.
const NODES: usize = 3;
/// How long past the run's deadline the workers may take to resolve their commits in doubt
/// and exit before they are killed.
const WORKERS_EXIT_WITHIN: Duration = Duration::from_secs(45);
/// The longest wait for the auditor to reach the end of the stream, or for the projector to
/// catch up, after the run.
const CATCH_UP_WITHIN: Duration = Duration::from_mins(3);

/// A suite of runs.
pub struct Suite {
    /// How many runs.
    pub runs: u64,
    /// How long each run commits.
    pub run_for: Duration,
    /// The suite's seed.
    pub seed: u64,
    /// Worker processes per run.
    pub workers: usize,
    /// The directory of the runs' records.
    pub out: PathBuf,
}

/// A process of the run, killed (by its id) when dropped.
struct Process(Child);

impl Process {
    /// Starts this binary with `args`; its stderr goes to `log`. Its stdin is a pipe held
    /// here: when the suite dies, the process sees it close and exits.
    fn start(args: &[String], log: &Path) -> Process {
        let exe = std::env::current_exe().expect("the suite's own binary");
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open a process log");
        let child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("start a process of the suite");
        Process(child)
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    fn exited(&mut self) -> bool {
        !matches!(self.0.try_wait(), Ok(None))
    }

    /// Why the process ended on its own, if it did and not with success.
    fn failed(&mut self) -> Option<String> {
        match self.0.try_wait() {
            Ok(Some(status)) if !status.success() => Some(format!("exited with {status}")),
            Ok(_) => None,
            Err(error) => Some(format!("cannot be waited for: {error}")),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How to start the run's processes.
struct Spawner {
    dir: PathBuf,
    urls: String,
    until: u64,
    seed: u64,
}

/// The run's processes.
struct Processes {
    spawner: Spawner,
    projector: Process,
    auditor: Process,
    workers: Vec<Process>,
}

impl Processes {
    fn start(spawner: Spawner, workers: usize) -> Processes {
        Processes {
            projector: spawner.projector(),
            auditor: spawner.role("follow", &spawner.dir.join("auditor.jsonl")),
            workers: (0..workers)
                .map(|worker| spawner.worker(worker, false))
                .collect(),
            spawner,
        }
    }
}

impl Spawner {
    fn role(&self, role: &str, out: &Path) -> Process {
        let args = [
            role.to_owned(),
            "--urls".into(),
            self.urls.clone(),
            "--until".into(),
            self.until.to_string(),
            "--out".into(),
            out.display().to_string(),
        ];
        Process::start(&args, &self.dir.join(format!("{role}.log")))
    }

    fn projector(&self) -> Process {
        self.role("project", &self.dir.join("projector.jsonl"))
    }

    fn worker(&self, worker: usize, recover: bool) -> Process {
        let mut args = vec![
            "worker".to_owned(),
            "--urls".into(),
            self.urls.clone(),
            "--id".into(),
            worker.to_string(),
            "--out".into(),
            worker_file(&self.dir, worker).display().to_string(),
            "--until".into(),
            self.until.to_string(),
            "--seed".into(),
            // A replacement gets other choices than the worker it replaces.
            (self.seed ^ (worker as u64 + 1).wrapping_mul(0x9E37_79B9) ^ u64::from(recover))
                .to_string(),
        ];
        if recover {
            args.push("--recover".into());
        }
        Process::start(&args, &self.dir.join(format!("worker-{worker}.log")))
    }
}

fn worker_file(dir: &Path, worker: usize) -> PathBuf {
    dir.join(format!("worker-{worker}.jsonl"))
}

impl Suite {
    /// Runs every run, prints each one's outcome and the table over all; `true` when every
    /// check of every run passed.
    pub async fn run(&self) -> bool {
        std::fs::create_dir_all(&self.out).expect("create the records directory");
        let mut outcomes = Vec::new();
        for run in 0..self.runs {
            // Run 0 uses the suite's seed itself, so `--seed <a run's seed> --runs 1` replays
            // that run's schedule.
            let seed = if run == 0 {
                self.seed
            } else {
                schedule::run_seed(self.seed, run)
            };
            let dir = self.out.join(format!("run-{seed}"));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create a run's directory");
            let outcome = Box::pin(self.one(run, seed, &dir)).await;
            println!("{}", outcome.summary());
            outcomes.push(outcome);
        }
        let table = report::table(&outcomes);
        println!("\n{table}");
        let summary = self.out.join("summary.md");
        let lines: Vec<String> = outcomes.iter().map(RunOutcome::summary).collect();
        std::fs::write(&summary, format!("{}\n\n{table}\n", lines.join("\n")))
            .expect("write the summary");
        println!("records and summary in {}", self.out.display());
        outcomes.iter().all(RunOutcome::passed)
    }

    async fn one(&self, run: u64, seed: u64, dir: &Path) -> RunOutcome {
        let plan = schedule::plan(seed, self.run_for, NODES, self.workers);
        println!(
            "run {} of {}: seed {seed}, {} s, {} workers, {} faults planned:",
            run + 1,
            self.runs,
            self.run_for.as_secs(),
            self.workers,
            plan.len()
        );
        for planned in &plan {
            println!("  {planned}");
        }
        let (mut cluster, log) = Box::pin(start_cluster()).await;
        let urls = cluster.urls();

        let started = now_ms();
        let until = started + u64::try_from(self.run_for.as_millis()).unwrap_or(u64::MAX);
        let spawner = Spawner {
            dir: dir.to_owned(),
            urls: urls.clone(),
            until,
            seed,
        };
        let mut processes = Processes::start(spawner, self.workers);
        let mut injected = Vec::new();
        for planned in &plan {
            tokio::time::sleep(planned.gap).await;
            injected.push(inject(planned, &mut cluster, &mut processes, &log).await);
        }
        if let Some(left) = until.checked_sub(now_ms()) {
            tokio::time::sleep(Duration::from_millis(left)).await;
        }
        let ended = now_ms();

        // Workers resolve what is in doubt and exit; the cluster is healed whole meanwhile.
        cluster.heal();
        for node in 0..NODES {
            cluster.resume(node);
        }
        tokio::task::block_in_place(|| cluster.wait_ready());
        let mut process_failures = wait_for_workers(&mut processes.workers).await;

        let last = last_sequence(&log).await;
        let auditor_problems = wait_for_auditor(dir, last).await;
        // Both run until they are stopped: one that ended on its own failed.
        for (name, process) in [
            ("the auditor", &mut processes.auditor),
            ("the projector", &mut processes.projector),
        ] {
            if process.exited() {
                let why = process.failed().unwrap_or_else(|| "exited".into());
                process_failures.push(format!("{name} {why} before the run's end"));
            }
            process.kill();
        }
        let mismatches = Box::pin(project_and_verify(&log)).await;
        let audit = audit_all(&log, |_| {})
            .await
            .expect("the audit reads the whole stream");

        let client = async_nats::ConnectOptions::new()
            .connect(
                urls.split(',')
                    .map(|url| url.parse().expect("a server URL"))
                    .collect::<Vec<async_nats::ServerAddr>>(),
            )
            .await
            .expect("the checker connects");
        let contents = check::read_stream(client, log.stream_name(), log.subject_prefix()).await;
        let records: Vec<Record> = (0..self.workers)
            .flat_map(|worker| record::read(&worker_file(dir, worker)))
            .collect();
        report::analyze(report::RunInput {
            seed,
            started_ms: started,
            ended_ms: ended,
            injected,
            records,
            contents,
            audit_problems: audit.problems.iter().map(|p| format!("{p:?}")).collect(),
            auditor_problems,
            mismatches,
            process_failures,
        })
    }
}

/// A new partitionable cluster with the stream and the run's cases.
async fn start_cluster() -> (NatsCluster, JetStreamLog) {
    let cluster = NatsCluster::start_partitionable(NODES);
    let mut config = JetStreamConfig::new(cluster.urls());
    config.request_timeout = Duration::from_secs(5);
    // A new cluster can be healthy before its meta leader answers stream requests: a request
    // that timed out is asked again, six times at most.
    let mut attempts = 0;
    let log = loop {
        attempts += 1;
        match JetStreamLog::connect(&config).await {
            Ok(log) => break log,
            Err(error) if error.kind() == LogErrorKind::TimedOut && attempts < 6 => {
                eprintln!("making the stream: {error}; asking again");
            }
            Err(error) => panic!("the stream is made on the new cluster: {error}"),
        }
    };
    assert_eq!(log.replicas(), NODES, "an R3 stream");
    let setup = Workspace::new(log.clone()).with_writer("chaos-setup");
    let (hot, cold) = cases();
    for case in hot.iter().chain(&cold) {
        setup
            .create(case.clone(), [Mutation::set_key("n", 0)])
            .await
            .expect("the run's cases are made before any fault");
    }
    (cluster, log)
}

/// Injects one fault, holds it, heals it; returns what it was and what it hit. A fault's
/// start is taken once its target is known; a leader fault whose leader is not known hits the
/// planned node and is reported as what it was (a node kill, an isolation); a node that is
/// not running is reported, and nothing is counted as injected.
async fn inject(
    planned: &Planned,
    cluster: &mut NatsCluster,
    processes: &mut Processes,
    log: &JetStreamLog,
) -> Injected {
    let hold = planned.hold;
    let leading = match planned.fault {
        Fault::LeaderKill | Fault::Partition | Fault::NodeKill | Fault::Pause => {
            leader(cluster, log).await
        }
        _ => None,
    };
    let (fault, node) = match (planned.fault, leading) {
        (Fault::LeaderKill, Some(leader)) => (Fault::LeaderKill, leader),
        // A node kill that hits the leader is a leader kill.
        (Fault::NodeKill, Some(leader)) if leader == planned.target => (Fault::LeaderKill, leader),
        (Fault::LeaderKill | Fault::NodeKill, _) => (Fault::NodeKill, planned.target),
        (Fault::Partition, Some(leader)) => (Fault::Partition, leader),
        (Fault::Partition | Fault::Isolation, _) => (Fault::Isolation, planned.target),
        (fault, _) => (fault, planned.target),
    };
    let role = match leading {
        Some(leader) if leader == node => "the stream leader",
        Some(_) => "a follower",
        None => "no leader known",
    };
    let start_ms = now_ms();
    let mut hit = true;
    let detail = match fault {
        Fault::LeaderKill | Fault::NodeKill => {
            hit = cluster.kill(node);
            if hit {
                tokio::time::sleep(hold).await;
            }
            tokio::task::block_in_place(|| cluster.restart(node));
            format!("{role}, node {node}")
        }
        Fault::Pause => {
            hit = cluster.pause(node);
            if hit {
                tokio::time::sleep(hold).await;
                cluster.resume(node);
            }
            format!("{role}, node {node}")
        }
        Fault::Partition | Fault::Isolation => {
            cluster.isolate(node);
            tokio::time::sleep(hold).await;
            cluster.heal();
            format!("node {node} cut off ({role})")
        }
        Fault::SlowLink => {
            for other in (0..NODES).filter(|other| *other != node) {
                cluster.slow_link(other, node, Duration::from_millis(500));
            }
            tokio::time::sleep(hold).await;
            cluster.heal();
            format!("routes into node {node}")
        }
        Fault::RollingRestart => {
            for node in 0..NODES {
                tokio::task::block_in_place(|| cluster.restart(node));
            }
            "nodes 0, 1, 2".into()
        }
        Fault::WorkerKill => {
            let worker = planned.target;
            processes.workers[worker].kill();
            processes.workers[worker] = processes.spawner.worker(worker, true);
            format!("worker {worker}")
        }
        Fault::ProjectorKill => {
            processes.projector.kill();
            processes.projector = processes.spawner.projector();
            "the projector".into()
        }
    };
    let detail = if hit {
        detail
    } else {
        format!("{detail}: it was not running, nothing was injected")
    };
    Injected {
        fault,
        detail,
        hit,
        start_ms,
        end_ms: now_ms(),
    }
}

/// The node that leads the stream now, if one does: asked for at most about five seconds.
async fn leader(cluster: &NatsCluster, log: &JetStreamLog) -> Option<usize> {
    for _ in 0..8 {
        let asked = tokio::time::timeout(Duration::from_millis(500), async {
            let mut stream = log.context().get_stream(log.stream_name()).await.ok()?;
            stream.info().await.ok()?.cluster.clone()?.leader
        })
        .await;
        if let Ok(Some(name)) = asked
            && let Some(node) = (0..cluster.size()).find(|&node| cluster.name(node) == name)
        {
            return Some(node);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Waits for the workers to exit; returns how each one that did not exit with success failed.
async fn wait_for_workers(workers: &mut [Process]) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + WORKERS_EXIT_WITHIN;
    while tokio::time::Instant::now() < deadline && !workers.iter_mut().all(Process::exited) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut failures = Vec::new();
    for (n, worker) in workers.iter_mut().enumerate() {
        if !worker.exited() {
            failures.push(format!(
                "worker {n} had not exited {} s after the run's end",
                WORKERS_EXIT_WITHIN.as_secs()
            ));
        } else if let Some(why) = worker.failed() {
            failures.push(format!("worker {n} {why}"));
        }
        worker.kill();
    }
    failures
}

async fn last_sequence(log: &JetStreamLog) -> u64 {
    for _ in 0..60 {
        if let Ok(mut stream) = log.context().get_stream(log.stream_name()).await
            && let Ok(info) = stream.info().await
        {
            return info.state.last_sequence;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("the healed cluster does not answer stream info within 30 s");
}

/// Waits until the auditor has checked every event up to `last`; returns the problems it
/// reported.
///
/// # Panics
/// When it does not get there in time: it has stalled.
async fn wait_for_auditor(dir: &Path, last: u64) -> Vec<String> {
    let file = dir.join("auditor.jsonl");
    let deadline = tokio::time::Instant::now() + CATCH_UP_WITHIN;
    loop {
        let records = record::read(&file);
        let reached = records
            .iter()
            .rev()
            .find_map(|record| match record {
                Record::Audited { position } => Some(*position),
                _ => None,
            })
            .unwrap_or(0);
        if reached >= last {
            return records
                .into_iter()
                .filter_map(|record| match record {
                    Record::Problem { case, code, detail } => {
                        Some(format!("{case}: {code}: {detail}"))
                    }
                    _ => None,
                })
                .collect();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the auditor stalled at position {reached} of {last}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Catches the projector up (a new one on the killed one's durable consumer) and compares
/// every case's view with its replay.
async fn project_and_verify(log: &JetStreamLog) -> Vec<String> {
    let mut projector = JetStreamProjector::open(log, crate::roles::projector_config())
        .await
        .expect("the projector opens on the healed cluster");
    tokio::time::timeout(CATCH_UP_WITHIN, projector.catch_up())
        .await
        .expect("the projector catches up within three minutes")
        .expect("the projector catches up");
    let (hot, cold) = cases();
    let all: Vec<_> = hot.into_iter().chain(cold).collect();
    verify(log, &projector, &all)
        .await
        .expect("views and replays can be read")
        .into_iter()
        .map(|mismatch| format!("{}: {}", mismatch.case_id, mismatch.detail))
        .collect()
}
