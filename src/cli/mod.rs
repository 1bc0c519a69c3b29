//! The commands behind the thin binary. [`args`] is the command line as
//! clap parses it; each command has a module that validates its args into
//! the library's options, runs the library, prints, and decides the command's
//! [`Exit`](crate::exit::Exit) in one function from its typed outcome.

pub mod args;
pub mod changes;
pub mod export;
pub mod failures;
pub mod inspect;
pub mod search;
pub mod sync;
pub mod target;
pub mod verify;

use std::path::PathBuf;

use crate::exit::Exit;

/// The state dir, absolute and without `.` parts, whatever form it was
/// given in (what the WAL records of it, such as spool paths, is then the
/// same from run to run).
pub fn state_dir(given: Option<PathBuf>) -> PathBuf {
    let dir = given.unwrap_or_else(|| {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".elysiactl")
    });
    std::path::absolute(&dir).unwrap_or(dir)
}

/// `elysiactl completions SHELL`: the script on stdout.
pub fn completions(shell: clap_complete::Shell) -> Exit {
    use clap::CommandFactory;
    let mut stdout = std::io::stdout().lock();
    clap_complete::generate(shell, &mut args::Cli::command(), "elysiactl", &mut stdout);
    Exit::Ok
}

/// How a command line clap refused ends: `--help` and `--version` are
/// printed on stdout and succeed, anything else is a usage error.
pub fn parse_error(e: &clap::Error) -> Exit {
    let _ = e.print();
    if e.use_stderr() {
        Exit::Usage
    } else {
        Exit::Ok
    }
}
