//! [`Position`] and [`Version`]: where an event is in the log, and how many commits a case has
//! had. Two different counts, kept apart by type: a case's positions are not contiguous (other
//! cases' events sit between them), its versions are.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! count {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize,
            Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(u64);

        impl $name {
            /// Before the first: the log or the case is empty.
            pub const ZERO: $name = $name(0);

            /// The count `value`.
            pub const fn new(value: u64) -> Self {
                $name(value)
            }

            /// The count as a number.
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl From<u64> for $name {
            fn from(value: u64) -> Self {
                $name(value)
            }
        }

        impl From<$name> for u64 {
            fn from(value: $name) -> u64 {
                value.0
            }
        }

        impl PartialEq<u64> for $name {
            fn eq(&self, other: &u64) -> bool {
                self.0 == *other
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

count!(
    /// An event's position in the log: its JetStream stream sequence, or the embedded log's
    /// row number. Positions start at 1 and only grow; [`Position::ZERO`] means "before the
    /// first event" (the expected position of a case's first commit).
    Position
);

count!(
    /// How many commits a case has had: 1 after its first, then one more each; stored in every
    /// event. [`Version::ZERO`] is a case before its first commit.
    Version
);

impl Version {
    /// The version of the case's next commit.
    #[must_use]
    pub const fn next(self) -> Version {
        Version(self.0 + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_serialize_as_their_number() {
        assert_eq!(serde_json::to_string(&Position::new(7)).unwrap(), "7");
        assert_eq!(
            serde_json::from_str::<Version>("3").unwrap(),
            Version::new(3)
        );
        assert_eq!(Version::ZERO.next().next(), 2);
        assert_eq!(Position::from(9).to_string(), "9");
    }
}
