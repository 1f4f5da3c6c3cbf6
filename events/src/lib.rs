//! The event log of wfstate: event log backends and the commit client. Not built yet: this crate holds no code so far.
