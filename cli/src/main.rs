//! The `wfstate` command line. No command is available yet.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("wfstate: no commands are available yet in this build");
    ExitCode::from(2)
}
