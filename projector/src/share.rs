//! [`Shared`]: projector processes sharing the partitions of the cases, each partition folded
//! by one process at a time, handed over when its process dies.
//!
//! The processes meet in a KV bucket of leases whose entries expire after `lease` unless
//! written again: `member.<id>` says a process is alive, `partition.<index>` which process
//! folds that partition. Every round a process writes its member key, renews its partitions'
//! keys with compare-and-set on their revisions, takes free partitions up to its share (the
//! partitions divided by the live members, rounded up), gives back those over it, and folds
//! one batch of each partition it holds. A process that dies stops renewing: within `lease`
//! its keys expire and the others take its partitions, their consumers going on from the last
//! acknowledged event.
//!
//! Correctness does not rest on the leases: a process that stalls past its lease while
//! another takes its partition writes views with compare-and-set, so one of the two writes
//! fails and its batch comes back, and events at or below a view's position are skipped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::TryStreamExt;
use wfstate_events::{JetStreamLog, LogError, LogErrorKind};

use crate::ProjectorError;
use crate::jetstream::{JetStreamProjector, ProjectorConfig, ProjectorStats};
use crate::nats::failed;
use crate::partition::Partition;

/// How processes share the partitions. Start from [`ShareConfig::new`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ShareConfig {
    /// How many partitions the cases are spread over (the same for every process).
    pub partitions: u32,
    /// How long a lease lasts without being renewed: a dead process's partitions are taken
    /// over within about this long. Rounds must take less (a batch, at most).
    pub lease: Duration,
    /// The KV bucket of leases.
    pub bucket: String,
    /// This process's id among the members (unique per process).
    pub member: String,
}

impl ShareConfig {
    /// `partitions` partitions, leases of 5 s in `WFSTATE_LEASES`, and a member id made of
    /// the host name, the process id and a random suffix.
    pub fn new(partitions: u32) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
        let suffix = wfstate_store::CommitId::generate().to_string();
        let member: String = format!("{host}-{}-{}", std::process::id(), &suffix[..8])
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        ShareConfig {
            partitions: partitions.max(1),
            lease: Duration::from_secs(5),
            bucket: "WFSTATE_LEASES".into(),
            member,
        }
    }
}

/// One process's part of the shared projection.
pub struct Shared {
    log: JetStreamLog,
    base: ProjectorConfig,
    config: ShareConfig,
    leases: kv::Store,
    /// The partitions held: each one's projector and its lease key's revision.
    held: BTreeMap<u32, (JetStreamProjector, u64)>,
    /// The counters of partitions given back or lost, kept in the totals.
    past: ProjectorStats,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .field("held", &self.held.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn partition_key(index: u32) -> String {
    format!("partition.{index}")
}

impl Shared {
    /// Joins the processes sharing the partitions; `base` names the projectors (each
    /// partition's consumer is `<base.name>-<index>-of-<partitions>`) and their sizes.
    ///
    /// # Errors
    /// [`ProjectorError::Log`] when the server does not answer or refuses.
    pub async fn open(
        log: &JetStreamLog,
        mut base: ProjectorConfig,
        config: ShareConfig,
    ) -> Result<Self, ProjectorError> {
        // A dead process's unacknowledged batch comes back to the partition's next holder
        // after the acknowledgement wait: kept to two leases, the hand-over stays bounded.
        base.ack_wait = base.ack_wait.min(config.lease * 2);
        let context = log.context();
        let leases = match context.get_key_value(&config.bucket).await {
            Ok(leases) => leases,
            Err(_) => context
                .create_key_value(kv::Config {
                    bucket: config.bucket.clone(),
                    history: 1,
                    max_age: config.lease,
                    storage: async_nats::jetstream::stream::StorageType::Memory,
                    num_replicas: log.replicas(),
                    ..kv::Config::default()
                })
                .await
                .map_err(|e| failed(&format!("creating KV bucket {}", config.bucket), e))?,
        };
        Ok(Shared {
            log: log.clone(),
            base,
            config,
            leases,
            held: BTreeMap::new(),
            past: ProjectorStats::default(),
        })
    }

    /// The partitions this process holds now.
    pub fn held(&self) -> Vec<u32> {
        self.held.keys().copied().collect()
    }

    /// One round: say this process is alive, renew, take or give back partitions, and fold
    /// one batch of each partition held. Returns the events folded.
    ///
    /// # Errors
    /// [`ProjectorError`] when the server fails; the partitions held stay held until their
    /// leases run out.
    pub async fn round(&mut self) -> Result<usize, ProjectorError> {
        let member_key = format!("member.{}", self.config.member);
        self.leases
            .put(&member_key, Vec::new().into())
            .await
            .map_err(|e| failed("writing this process's member key", e))?;
        self.renew().await;
        let share = self.share().await?;
        while self.held.len() > share
            && let Some((index, (projector, revision))) = self.held.pop_last()
        {
            Box::pin(self.give_back(index, projector, revision)).await;
        }
        if self.held.len() < share {
            Box::pin(self.take(share)).await?;
        }
        let mut events = 0;
        for (projector, _) in self.held.values_mut() {
            events += projector.run_batch().await?;
        }
        Ok(events)
    }

    /// Renews every lease held; a partition whose lease was lost is dropped.
    async fn renew(&mut self) {
        let mut lost = Vec::new();
        for (index, (_, revision)) in &mut self.held {
            let value = self.config.member.clone().into_bytes().into();
            match self
                .leases
                .update(partition_key(*index), value, *revision)
                .await
            {
                Ok(renewed) => *revision = renewed,
                Err(error) => {
                    tracing::warn!(partition = index, "lost the lease: {error}");
                    lost.push(*index);
                }
            }
        }
        for index in lost {
            if let Some((projector, _)) = self.held.remove(&index) {
                self.keep_counts(&projector.stats());
            }
        }
    }

    /// This process's share: the partitions divided by the live members, rounded up. The
    /// members are counted from the bucket's stream info (one subject per member key): one
    /// request, where listing the keys would make a consumer each round.
    async fn share(&self) -> Result<usize, ProjectorError> {
        let filter = format!("$KV.{}.member.>", self.config.bucket);
        let members = self
            .leases
            .stream
            .info_with_subjects(&filter)
            .await
            .map_err(|e| failed("counting the members", e))?
            .try_fold(0_usize, |count, _| futures::future::ready(Ok(count + 1)))
            .await
            .map_err(|e| failed("counting the members", e))?
            .max(1);
        Ok(usize::try_from(self.config.partitions)
            .unwrap_or(usize::MAX)
            .div_ceil(members))
    }

    /// Takes free partitions until this process holds `share`.
    async fn take(&mut self, share: usize) -> Result<(), ProjectorError> {
        for index in 0..self.config.partitions {
            if self.held.len() >= share {
                break;
            }
            if self.held.contains_key(&index) {
                continue;
            }
            let value = self.config.member.clone().into_bytes().into();
            let Ok(revision) = self.leases.create(partition_key(index), value).await else {
                // Another process holds it.
                continue;
            };
            let mut config = self.base.clone();
            config.partition = Some(Partition {
                index,
                count: self.config.partitions,
            });
            let projector = JetStreamProjector::open(&self.log, config).await?;
            tracing::info!(partition = index, "took a partition");
            self.held.insert(index, (projector, revision));
        }
        Ok(())
    }

    async fn give_back(&mut self, index: u32, projector: JetStreamProjector, revision: u64) {
        self.keep_counts(&projector.stats());
        if let Err(error) = Box::pin(projector.release()).await {
            tracing::warn!(partition = index, "releasing a partition: {error}");
        }
        if let Err(error) = self
            .leases
            .delete_expect_revision(partition_key(index), Some(revision))
            .await
        {
            tracing::warn!(partition = index, "giving back a partition: {error}");
        }
    }

    /// Gives back every partition held, for a clean stop: the others take them at once.
    ///
    /// # Errors
    /// [`ProjectorError::Log`] when the member key cannot be deleted; the partitions are
    /// given back still, or expire.
    pub async fn leave(mut self) -> Result<(), ProjectorError> {
        for (index, (projector, revision)) in std::mem::take(&mut self.held) {
            self.give_back(index, projector, revision).await;
        }
        self.leases
            .delete(format!("member.{}", self.config.member))
            .await
            .map_err(|e| {
                ProjectorError::Log(
                    LogError::new(LogErrorKind::Unavailable, "leaving the members").with_source(e),
                )
            })
    }

    fn keep_counts(&self, stats: &ProjectorStats) {
        for (past, now) in [
            (&self.past.applied, &stats.applied),
            (&self.past.skipped, &stats.skipped),
            (&self.past.quarantined, &stats.quarantined),
            (&self.past.held, &stats.held),
            (&self.past.rebuilt, &stats.rebuilt),
        ] {
            past.fetch_add(now.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    /// Events applied by this process so far, in every partition it held.
    pub fn applied(&self) -> u64 {
        self.past.applied.load(Ordering::Relaxed)
            + self
                .held
                .values()
                .map(|(projector, _)| projector.stats().applied.load(Ordering::Relaxed))
                .sum::<u64>()
    }

    /// The counters of the partitions held now, one per partition.
    pub fn stats(&self) -> Vec<(u32, Arc<ProjectorStats>)> {
        self.held
            .iter()
            .map(|(index, (projector, _))| (*index, projector.stats()))
            .collect()
    }
}
