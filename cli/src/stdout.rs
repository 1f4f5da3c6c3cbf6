//! Everything the command line prints on stdout goes through [`write()`]: a reader that closed
//! the pipe (`wfstate history CASE | head -5`) ends the command quietly with the status a
//! process stopped by SIGPIPE has (141), and a failed write (a full disk) is a message, not a
//! panic.

use std::io::Write;

/// The exit status of a command whose reader closed its output: 128 + SIGPIPE, as a shell
/// reports a process the signal stopped.
pub const CLOSED: u8 = 141;

/// Writes `text` to stdout and flushes it. Ends the process when the output is gone (the
/// reader has what it wanted, and nothing the command would still print can reach anyone),
/// and when it cannot be written (status 2, as a full disk elsewhere).
pub fn write(text: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    let written = stdout.write_fmt(text).and_then(|()| stdout.flush());
    match written {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {
            std::process::exit(i32::from(CLOSED));
        }
        Err(error) => {
            eprintln!("wfstate: cannot write the output: {error}; free space or write elsewhere");
            std::process::exit(i32::from(crate::error::BAD_INPUT));
        }
    }
}

/// `println!` on stdout through [`write()`].
macro_rules! out {
    () => { $crate::stdout::write(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::stdout::write(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` on stdout through [`write()`].
macro_rules! out_raw {
    ($($arg:tt)*) => { $crate::stdout::write(format_args!($($arg)*)) };
}

pub(crate) use {out, out_raw};
