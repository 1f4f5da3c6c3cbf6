//! What workers and the auditor write down, one JSON object per line, each line written with
//! one `write` call so that a process killed with SIGKILL leaves whole lines behind (the last
//! one at most cut, and then skipped on reading).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// One line of a worker's or the auditor's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Record {
    /// A commit with the worker's own commit id is about to be sent: what a new process
    /// needs to send it again (the case, and the ctx key and value it sets). A transaction's
    /// (adding one to the case's `n`) is written down too, and not sent again by a new
    /// process: its outcome is the stream's.
    Intent {
        /// The commit id.
        id: String,
        /// The case.
        case: String,
        /// The ctx key set.
        key: String,
        /// Its value.
        value: u64,
        /// The commit's clock, kept for every resend.
        at: u64,
        /// A transaction adding one to `n`.
        #[serde(default)]
        transact: bool,
    },
    /// A commit acknowledged, with what its receipt says.
    Ack {
        /// The commit id.
        id: String,
        /// The case.
        case: String,
        /// The case's version after it.
        version: u64,
        /// SHA-256 of the stored payload, hex.
        hash: String,
        /// When the acknowledgement arrived, ms since the epoch.
        at: u64,
        /// Sent again by a new process after the first one was killed.
        resent: bool,
    },
    /// A commit whose outcome is unknown (the commit is in doubt).
    Unknown {
        /// The commit id.
        id: String,
        /// The case.
        case: String,
        /// When, ms since the epoch.
        at: u64,
    },
    /// An unknown outcome resolved by the worker.
    Resolved {
        /// The commit id.
        id: String,
        /// Whether the commit landed.
        landed: bool,
        /// When, ms since the epoch.
        at: u64,
    },
    /// A call that failed: for a commit (`id`), the client said nothing of it was stored,
    /// and the worker will not send it again (a retry gets a new commit id). A failed read
    /// has no commit id.
    Failed {
        /// The commit that failed, if it was one.
        #[serde(default)]
        id: Option<String>,
        /// What failed.
        error: String,
        /// When, ms since the epoch.
        at: u64,
    },
    /// The auditor's progress: every event up to this position was checked.
    Audited {
        /// The last position checked.
        position: u64,
    },
    /// A problem the auditor found.
    Problem {
        /// The case.
        case: String,
        /// The problem's code.
        code: String,
        /// In words.
        detail: String,
    },
}

/// Now, in ms since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// Appends records to a file.
pub struct Recorder(File);

impl Recorder {
    /// Opens `path` for appending (creating it).
    pub fn open(path: &Path) -> std::io::Result<Recorder> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(Recorder)
    }

    /// Writes one record as one line.
    ///
    /// # Panics
    /// When the file cannot be written: the run's results would be incomplete.
    pub fn write(&mut self, record: &Record) {
        let mut line = serde_json::to_vec(record).expect("a record serializes");
        line.push(b'\n');
        self.0
            .write_all(&line)
            .expect("write a record to the run's directory");
    }
}

/// Every whole record in `path` (none when it does not exist).
///
/// # Panics
/// When the file exists but cannot be read.
pub fn read(path: &Path) -> Vec<Record> {
    let Ok(file) = File::open(path) else {
        return Vec::new();
    };
    BufReader::new(file)
        .lines()
        .map(|line| line.expect("read a record file"))
        .filter_map(|line| serde_json::from_str(&line).ok())
        .collect()
}
