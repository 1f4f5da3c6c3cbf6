//! The stream: opened, or created with the store's configuration, and checked.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use super::codes::{api_error_of, api_failure, request_kind};
use super::config::{JetStreamConfig, partition_transform};
use super::connect::{Refused, Violations, violation};
use crate::error::{LogError, LogErrorKind};

/// Opens the configured stream and checks it, or creates it when it does not exist and the
/// configuration allows. A cluster that is forming or has lost a server may not answer or
/// place the stream yet (no meta leader, a peer not yet heard from): that is retried until
/// `connect_timeout` has passed.
pub(crate) async fn open_stream(
    context: &jetstream::Context,
    config: &JetStreamConfig,
    replicas: usize,
    violations: &Violations,
) -> Result<stream::Stream, LogError> {
    let deadline = tokio::time::Instant::now() + config.connect_timeout;
    loop {
        match open_stream_once(context, config, replicas, violations).await {
            Err(error) if error.is_retryable() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            opened => return opened,
        }
    }
}

async fn open_stream_once(
    context: &jetstream::Context,
    config: &JetStreamConfig,
    replicas: usize,
    violations: &Violations,
) -> Result<stream::Stream, LogError> {
    let api = format!("$JS.API.STREAM.INFO.{}", config.stream);
    let stream = match context.get_stream(&config.stream).await {
        Ok(stream) => stream,
        Err(error) => {
            let code = match error.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(e) => Some(e.error_code().0),
                _ => None,
            };
            if code != Some(jetstream::ErrorCode::STREAM_NOT_FOUND.0) {
                let what = format!("reading stream {} on {}", config.stream, config.urls);
                return Err(
                    violation(violations, Refused::Exact(&api), &what).unwrap_or_else(|| {
                        let request = request_kind(&error);
                        api_error_of(&what, code, request, error)
                    }),
                );
            }
            if !config.create_stream {
                return Err(LogError::new(
                    LogErrorKind::Config,
                    format!(
                        "stream {} does not exist on {}: no store here to read, and this \
                         connection does not create one; a writer creates it (`wfstate create`)",
                        config.stream, config.urls
                    ),
                ));
            }
            create_stream(context, config, replicas, violations).await?
        }
    };
    check_stream(&stream.cached_info().config, config, replicas)?;
    Ok(stream)
}

/// Creates the configured stream.
async fn create_stream(
    context: &jetstream::Context,
    config: &JetStreamConfig,
    replicas: usize,
    violations: &Violations,
) -> Result<stream::Stream, LogError> {
    context
        .create_stream(config.stream_config(replicas))
        .await
        .map_err(|error| {
            let what = format!(
                "creating stream {} with {replicas} replica(s) on {}",
                config.stream, config.urls
            );
            let create = format!("$JS.API.STREAM.CREATE.{}", config.stream);
            violation(violations, Refused::Exact(&create), &what).unwrap_or_else(|| {
                let code = match error.kind() {
                    jetstream::context::CreateStreamErrorKind::JetStream(e) => {
                        Some(e.error_code().0)
                    }
                    _ => None,
                };
                let request = match error.kind() {
                    // A cluster still electing its meta leader answers nothing yet.
                    jetstream::context::CreateStreamErrorKind::TimedOut => {
                        Some(jetstream::context::RequestErrorKind::TimedOut)
                    }
                    _ => request_kind(&error),
                };
                let refused = api_failure(code, request);
                let what = if matches!(refused, LogErrorKind::TimedOut | LogErrorKind::Unavailable)
                {
                    what
                } else {
                    format!(
                        "{what} (a cluster needs at least as many servers with \
                         JetStream; --replicas or WFSTATE_REPLICAS asks for another number)"
                    )
                };
                api_error_of(&what, code, request, error)
            })
        })
}

/// Refuses a stream that could drop, lose or fail to serve case events, saying what to change.
pub(crate) fn check_stream(
    actual: &stream::Config,
    wanted: &JetStreamConfig,
    replicas: usize,
) -> Result<(), LogError> {
    let mut problems = Vec::new();
    let subject = format!("{}.*", wanted.subject_prefix);
    if !actual.subjects.iter().any(|s| s == &subject) {
        problems.push(format!(
            "subjects {:?} must include {subject:?}",
            actual.subjects
        ));
    }
    if actual.retention != stream::RetentionPolicy::Limits {
        problems.push("retention must be limits (interest and work-queue retention delete events once consumed)".to_owned());
    }
    if actual.max_messages > 0 || actual.max_bytes > 0 || actual.max_messages_per_subject > 0 {
        problems.push("max_msgs, max_bytes and max_msgs_per_subject must be unlimited (-1): a limit drops old events".to_owned());
    }
    if actual.max_age > Duration::ZERO {
        problems.push(format!(
            "max_age must be 0 (unlimited), not {:?}: an age limit drops old events",
            actual.max_age
        ));
    }
    if actual.storage != stream::StorageType::File {
        problems.push(
            "storage must be file: memory storage loses every event when the server restarts"
                .to_owned(),
        );
    }
    if !actual.deny_delete || !actual.deny_purge {
        problems.push(
            "deny_delete and deny_purge must be true: deleted events break every case's chain"
                .to_owned(),
        );
    }
    if !actual.allow_direct {
        problems.push("allow_direct must be true: cases are read with direct gets".to_owned());
    }
    if actual.num_replicas < replicas {
        problems.push(format!(
            "it has {} replica(s), fewer than the {replicas} asked for: raise them (nats stream \
             edit {} --replicas {replicas}) or ask for {} (--replicas, WFSTATE_REPLICAS)",
            actual.num_replicas, actual.name, actual.num_replicas
        ));
    }
    if actual.sealed {
        problems.push("the stream is sealed and takes no new events".to_owned());
    }
    match (stream_partitions(actual, &wanted.subject_prefix), wanted.partitions) {
        (Err(problem), _) => problems.push(problem),
        (Ok(has), Some(asked)) if has != Some(asked) => problems.push(format!(
            "it has {}, not the {asked} asked for: partitions are fixed when a stream is              created; ask for what it has, or create another stream",
            has.map_or("no partitions".to_owned(), |n| format!("{n} partitions"))
        )),
        _ => {}
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(LogError::new(
            LogErrorKind::Config,
            format!(
                "stream {} could lose case events: {}; update the stream or use another stream \
                 name",
                actual.name,
                problems.join("; ")
            ),
        ))
    }
}

/// How many partitions a stream with the store's subjects stores its cases in, read from its
/// subject mapping (`None`: not partitioned); a mapping of another form is a problem, since
/// the store could not find the cases' events.
pub(crate) fn stream_partitions(
    actual: &stream::Config,
    prefix: &str,
) -> Result<Option<u32>, String> {
    let Some(transform) = &actual.subject_transform else {
        return Ok(None);
    };
    let count = transform
        .destination
        .strip_prefix(&format!("{prefix}.{{{{partition("))
        .and_then(|rest| rest.split_once(",1)}}"))
        .and_then(|(count, _)| count.parse::<u32>().ok())
        .filter(|count| *count > 0);
    match count {
        Some(count) if *transform == partition_transform(prefix, count) => Ok(Some(count)),
        _ => Err(format!(
            "its subject mapping {} -> {} is not one this store reads: remove it, or map \
             {prefix}.* to {prefix}.{{{{partition(P,1)}}}}.{{{{wildcard(1)}}}}",
            transform.source, transform.destination
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_created_stream_passes_its_own_check() {
        let config = JetStreamConfig::new("nats://127.0.0.1:4222");
        check_stream(&config.stream_config(1), &config, 1).unwrap();
    }

    #[test]
    fn streams_that_could_drop_events_are_refused_with_what_to_change() {
        let config = JetStreamConfig::new("nats://127.0.0.1:4222");
        let mut limited = config.stream_config(1);
        limited.max_messages_per_subject = 10;
        limited.max_age = Duration::from_mins(1);
        limited.storage = stream::StorageType::Memory;
        let error = check_stream(&limited, &config, 1).unwrap_err();
        assert_eq!(error.kind(), LogErrorKind::Config);
        let message = error.to_string();
        for expected in ["max_msgs_per_subject", "max_age", "memory storage"] {
            assert!(message.contains(expected), "{message}");
        }
        let mut interest = config.stream_config(1);
        interest.retention = stream::RetentionPolicy::Interest;
        assert!(check_stream(&interest, &config, 1).is_err());
    }

    #[test]
    fn a_stream_with_fewer_replicas_than_asked_for_is_refused() {
        let config = JetStreamConfig::new("nats://127.0.0.1:4222");
        let single = config.stream_config(1);
        check_stream(&single, &config, 1).unwrap();
        let error = check_stream(&single, &config, 3).unwrap_err();
        assert_eq!(error.kind(), LogErrorKind::Config);
        let message = error.to_string();
        assert!(
            message.contains("1 replica(s), fewer than the 3"),
            "{message}"
        );
        assert!(message.contains("--replicas 3"), "{message}");
        check_stream(&config.stream_config(3), &config, 3).unwrap();
    }

    #[test]
    fn partitions_are_read_from_the_mapping_and_fixed_at_creation() {
        let mut config = JetStreamConfig::new("nats://127.0.0.1:4222");
        let plain = config.stream_config(1);
        config.partitions = Some(4);
        let partitioned = config.stream_config(1);
        let prefix = &config.subject_prefix;
        assert_eq!(stream_partitions(&plain, prefix), Ok(None));
        assert_eq!(stream_partitions(&partitioned, prefix), Ok(Some(4)));
        check_stream(&partitioned, &config, 1).unwrap();

        // Asked of a stream made otherwise: refused, saying what it has.
        let error = check_stream(&plain, &config, 1).unwrap_err();
        assert!(
            error.to_string().contains("no partitions, not the 4"),
            "{error}"
        );
        config.partitions = Some(8);
        let error = check_stream(&partitioned, &config, 1).unwrap_err();
        assert!(
            error.to_string().contains("4 partitions, not the 8"),
            "{error}"
        );
        // Not asked: whatever the stream has.
        config.partitions = None;
        check_stream(&partitioned, &config, 1).unwrap();

        // A mapping the store could not read its cases through.
        let mut foreign = partitioned.clone();
        foreign.subject_transform = Some(stream::SubjectTransform {
            source: format!("{prefix}.*"),
            destination: format!("{prefix}.{{{{partition(4,1)}}}}.x.{{{{wildcard(1)}}}}"),
        });
        let error = check_stream(&foreign, &config, 1).unwrap_err();
        assert!(
            error.to_string().contains("is not one this store reads"),
            "{error}"
        );
    }

    /// The server's `{{partition}}` hash: 32-bit FNV-1a (offset 0x811c9dc5), modulo the
    /// count. Checked against a real server by the partitioned conformance suite.
    #[test]
    fn the_partition_of_a_case_is_the_servers() {
        use super::super::config::partition_of;
        assert_eq!(partition_of("", u32::MAX), 0x811c_9dc5);
        assert_eq!(partition_of("a", u32::MAX), 0xe40c_292c);
        assert_eq!(partition_of("order-17", 1), 0);
        assert!((0..1000).all(|n| partition_of(&format!("c{n}"), 7) < 7));
    }
}
