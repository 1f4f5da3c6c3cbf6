//! [`Cases`]: what a pass over the whole log keeps per case, with a bounded number of cases
//! in memory and the others in a temporary file. An audit of every case, an export or a
//! verify then takes the same memory for a million cases as for ten thousand; cases touched
//! again soon after (the usual order of a log: a case's events close together in time) stay
//! in memory.

use std::collections::HashMap;
use std::path::PathBuf;

use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;
use serde::de::DeserializeOwned;
use wfstate_events::{LogError, LogErrorKind};

use crate::ProjectorError;

/// Cases kept in memory by default.
pub const CASES_IN_MEMORY: usize = 10_000;

/// Per-case values of type `T`, at most `limit` of them in memory.
pub(crate) struct Cases<T> {
    live: HashMap<String, Slot<T>>,
    /// Ticks once per access: a slot's last tick says how recently it was used.
    clock: u64,
    limit: usize,
    /// The cases moved out of memory: a private temporary SQLite file, deleted when closed.
    spill: Option<Connection>,
    /// Distinct cases seen.
    known: usize,
}

struct Slot<T> {
    value: T,
    used: u64,
}

impl<T> std::fmt::Debug for Cases<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cases")
            .field("live", &self.live.len())
            .field("known", &self.known)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl<T> Default for Cases<T> {
    fn default() -> Self {
        Cases::new(CASES_IN_MEMORY)
    }
}

fn spill_error(what: &str) -> impl FnOnce(rusqlite::Error) -> ProjectorError + '_ {
    move |error| {
        ProjectorError::Log(LogError::from_storage(
            &PathBuf::from("the temporary file of cases moved out of memory"),
            what,
            error,
        ))
    }
}

impl<T> Cases<T> {
    /// Keeps at most `limit` cases (at least 2) in memory.
    pub(crate) fn new(limit: usize) -> Self {
        Cases {
            live: HashMap::new(),
            clock: 0,
            limit: limit.max(2),
            spill: None,
            known: 0,
        }
    }

    /// Distinct cases seen.
    pub(crate) fn len(&self) -> usize {
        self.known
    }

    /// Cases in memory now.
    #[cfg(test)]
    pub(crate) fn in_memory(&self) -> usize {
        self.live.len()
    }
}

impl<T: Serialize + DeserializeOwned> Cases<T> {
    /// The value of `key`, from memory or from the file, if it was seen.
    ///
    /// # Errors
    /// [`ProjectorError::Log`] when the temporary file cannot be written or read.
    pub(crate) fn get(&mut self, key: &str) -> Result<Option<&mut T>, ProjectorError> {
        self.slot(key, None::<fn() -> T>)
    }

    /// The value of `key`: from memory, else from the file, else made by `make` (a new case).
    ///
    /// # Errors
    /// [`ProjectorError::Log`] when the temporary file cannot be written or read.
    pub(crate) fn get_or_insert_with(
        &mut self,
        key: &str,
        make: impl FnOnce() -> T,
    ) -> Result<&mut T, ProjectorError> {
        Ok(self
            .slot(key, Some(make))?
            .expect("a value is made when there is none"))
    }

    fn slot(
        &mut self,
        key: &str,
        make: Option<impl FnOnce() -> T>,
    ) -> Result<Option<&mut T>, ProjectorError> {
        self.clock += 1;
        let used = self.clock;
        if !self.live.contains_key(key) {
            let value = match (self.unspill(key)?, make) {
                (Some(value), _) => value,
                (None, Some(make)) => {
                    self.known += 1;
                    make()
                }
                (None, None) => return Ok(None),
            };
            if self.live.len() >= self.limit {
                self.evict()?;
            }
            self.live.insert(key.to_owned(), Slot { value, used });
        }
        let slot = self.live.get_mut(key).expect("present or inserted above");
        slot.used = used;
        Ok(Some(&mut slot.value))
    }

    /// The first `Some` that `f` returns for a case and its value, those in memory first,
    /// then those in the file, one at a time.
    ///
    /// # Errors
    /// [`ProjectorError::Log`] when the temporary file cannot be read.
    pub(crate) fn find_map<R>(
        &self,
        mut f: impl FnMut(&str, &T) -> Option<R>,
    ) -> Result<Option<R>, ProjectorError> {
        if let Some(found) = self.live.iter().find_map(|(key, slot)| f(key, &slot.value)) {
            return Ok(Some(found));
        }
        let Some(spill) = &self.spill else {
            return Ok(None);
        };
        let mut statement = spill
            .prepare("SELECT key, value FROM cases")
            .map_err(spill_error("reading cases back"))?;
        let mut rows = statement
            .query([])
            .map_err(spill_error("reading cases back"))?;
        while let Some(row) = rows.next().map_err(spill_error("reading cases back"))? {
            let key: String = row.get(0).map_err(spill_error("reading cases back"))?;
            let bytes: Vec<u8> = row.get(1).map_err(spill_error("reading cases back"))?;
            if let Some(found) = f(&key, &decode(&key, &bytes)?) {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Moves the least recently used half of the cases in memory to the file.
    fn evict(&mut self) -> Result<(), ProjectorError> {
        let mut ages: Vec<(u64, String)> = self
            .live
            .iter()
            .map(|(key, slot)| (slot.used, key.clone()))
            .collect();
        let half = ages.len() / 2;
        ages.select_nth_unstable(half);
        let spill = match &mut self.spill {
            Some(spill) => spill,
            None => self.spill.insert(open_spill()?),
        };
        let transaction = spill
            .transaction()
            .map_err(spill_error("moving cases out of memory"))?;
        {
            let mut insert = transaction
                .prepare_cached("INSERT OR REPLACE INTO cases (key, value) VALUES (?1, ?2)")
                .map_err(spill_error("moving cases out of memory"))?;
            for (_, key) in &ages[..half] {
                let slot = self.live.remove(key).expect("listed from the map");
                let mut bytes = Vec::new();
                ciborium::into_writer(&slot.value, &mut bytes)
                    .expect("a case's value always encodes into a Vec");
                insert
                    .execute(rusqlite::params![key, bytes])
                    .map_err(spill_error("moving a case out of memory"))?;
            }
        }
        transaction
            .commit()
            .map_err(spill_error("moving cases out of memory"))
    }

    /// Takes `key`'s value out of the file, if it is there.
    fn unspill(&mut self, key: &str) -> Result<Option<T>, ProjectorError> {
        let Some(spill) = &self.spill else {
            return Ok(None);
        };
        let bytes: Option<Vec<u8>> = spill
            .prepare_cached("DELETE FROM cases WHERE key = ?1 RETURNING value")
            .and_then(|mut statement| statement.query_row([key], |row| row.get(0)).optional())
            .map_err(spill_error("reading a case back"))?;
        bytes.map(|bytes| decode(key, &bytes)).transpose()
    }
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, ProjectorError> {
    ciborium::from_reader(bytes).map_err(|error| {
        ProjectorError::Log(
            LogError::new(
                LogErrorKind::Unexpected,
                format!("a case moved out of memory ({key}) cannot be read back"),
            )
            .with_source(error),
        )
    })
}

fn open_spill() -> Result<Connection, ProjectorError> {
    // An empty name: a private temporary file, deleted when the connection closes.
    let connection = Connection::open("").map_err(spill_error("creating"))?;
    connection
        .execute_batch(
            "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
             CREATE TABLE cases (key TEXT PRIMARY KEY, value BLOB NOT NULL);",
        )
        .map_err(spill_error("creating"))?;
    Ok(connection)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_past_the_limit_go_to_the_file_and_come_back_unchanged() {
        let mut cases: Cases<(u64, String)> = Cases::new(4);
        for n in 0..100_u64 {
            let value = cases
                .get_or_insert_with(&format!("c{n}"), || (n, format!("case {n}")))
                .unwrap();
            value.0 += 1000;
            assert!(cases.live.len() <= 4, "{}", cases.live.len());
        }
        assert_eq!(cases.len(), 100);
        for n in (0..100_u64).rev() {
            let value = cases
                .get_or_insert_with(&format!("c{n}"), || panic!("c{n} was seen"))
                .unwrap();
            assert_eq!(value, &(n + 1000, format!("case {n}")));
        }
        assert_eq!(cases.len(), 100);
    }

    #[test]
    fn the_most_recently_used_cases_stay_in_memory() {
        let mut cases: Cases<u64> = Cases::new(4);
        for n in 0..4_u64 {
            cases.get_or_insert_with(&format!("c{n}"), || n).unwrap();
        }
        // c0 is used again; c4 makes room by moving out the two least recently used.
        cases.get_or_insert_with("c0", || 0).unwrap();
        cases.get_or_insert_with("c4", || 4).unwrap();
        let mut live: Vec<&str> = cases.live.keys().map(String::as_str).collect();
        live.sort_unstable();
        assert_eq!(live, ["c0", "c3", "c4"]);
    }
}
