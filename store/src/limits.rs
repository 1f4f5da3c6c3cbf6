//! [`Limits`]: the bounds every commit is checked against, each with a clear error.

/// Bounds on one commit. The defaults suit a JetStream server with the default 1 MiB
/// `max_payload`; the event log lowers `event_size_max_bytes` to what its server accepts.
/// Start from [`Limits::default`] and set the fields that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// The most mutations one batch may hold.
    pub batch_mutations_max: usize,
    /// The largest encoded event, in bytes.
    pub event_size_max_bytes: usize,
    /// The longest ctx key, in bytes of UTF-8.
    pub key_length_max_bytes: usize,
    /// The longest writer id, in bytes of UTF-8.
    pub writer_length_max_bytes: usize,
    /// The deepest nesting of arrays and maps inside one value.
    pub value_depth_max: usize,
    /// The largest case state a commit may leave, in bytes of its canonical encoding (the
    /// one its state hash is taken over). The projector keeps each case's state in one view,
    /// which a JetStream server stores in one message: the default leaves room under the
    /// default 1 MiB `max_payload`.
    pub state_size_max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            batch_mutations_max: 4096,
            event_size_max_bytes: 1024 * 1024,
            key_length_max_bytes: 256,
            writer_length_max_bytes: 256,
            // CBOR decoders (ciborium among them) stop at 256 levels and JSON parsers at 128:
            // a deeper value could be committed but never read back.
            value_depth_max: 100,
            state_size_max_bytes: 512 * 1024,
        }
    }
}

impl Limits {
    /// No bounds: for folding events that a writer already checked under its own limits.
    pub fn unbounded() -> Self {
        Limits {
            batch_mutations_max: usize::MAX,
            event_size_max_bytes: usize::MAX,
            key_length_max_bytes: usize::MAX,
            writer_length_max_bytes: usize::MAX,
            value_depth_max: usize::MAX,
            state_size_max_bytes: usize::MAX,
        }
    }
}
