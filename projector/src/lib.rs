//! Views, replay and audit of wfstate. Not built yet: this crate holds no code so far.
