//! Everything the command line prints on stdout goes through [`write()`]: a reader that closed
//! the pipe (`wfstate history CASE | head -5`) ends the command quietly with the status a
//! process stopped by SIGPIPE has (141), and a failed write (a full disk) is a message, not a
//! panic. Once a command's change is stored ([`stored`]), a failed write ends it with
//! [`crate::error::DONE_UNWRITTEN`] instead: never a status that says nothing was done.

use std::io::Write;
use std::sync::Mutex;

/// The exit status of a command whose reader closed its output: 128 + SIGPIPE, as a shell
/// reports a process the signal stopped.
pub const CLOSED: u8 = 141;

/// What the command stored, once it has: said when its output cannot be written.
static STORED: Mutex<Option<String>> = Mutex::new(None);

/// The command's change is stored (`what`, in words): from now on a failure to print ends it
/// with [`crate::error::DONE_UNWRITTEN`], naming what was stored.
pub fn stored(what: impl Into<String>) {
    if let Ok(mut stored) = STORED.lock() {
        *stored = Some(what.into());
    }
}

/// What the command stored, if it has.
fn stored_already() -> Option<String> {
    STORED.lock().ok().and_then(|stored| stored.clone())
}

/// Ends the process: the output could not be written (`error`), after the change was stored.
fn exit_stored(what: &str, error: &std::io::Error) -> ! {
    // stderr may be gone too: nothing more can be said then, and the status says it.
    let _ = writeln!(
        std::io::stderr(),
        "wfstate: done: {what}; but the output could not be written ({error}); do not run the \
         command again to get it: `wfstate history` shows what is stored"
    );
    std::process::exit(i32::from(crate::error::DONE_UNWRITTEN));
}

/// Writes a line to stderr; a stderr that cannot be written is not a reason to panic.
pub fn say(text: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// Writes `text` to stdout and flushes it. Ends the process when the output is gone (the
/// reader has what it wanted, and nothing the command would still print can reach anyone),
/// and when it cannot be written (status 2, as a full disk elsewhere); once the command's
/// change is stored, both end it with status 5 (done, unwritten).
pub fn write(text: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    let written = stdout.write_fmt(text).and_then(|()| stdout.flush());
    let Err(error) = written else {
        return;
    };
    if let Some(what) = stored_already() {
        exit_stored(&what, &error);
    }
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(i32::from(CLOSED));
    }
    say(format_args!(
        "wfstate: cannot write the output: {error}; free space or write elsewhere"
    ));
    std::process::exit(i32::from(crate::error::BAD_INPUT));
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
