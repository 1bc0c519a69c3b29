//! The `elysiactl` binary: parse the command line and hand each command to
//! its module in `elysiactl::cli`, which validates the args, calls the
//! library and decides the exit status.

use std::process::ExitCode;

use clap::Parser;

use elysiactl::cli::{
    self,
    args::{Cli, Command, IndexCommand, WalCommand},
};
use elysiactl::exit::Exit;

fn main() -> ExitCode {
    let args = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return cli::parse_error(&e).into(),
    };
    // Everything elysiactl creates (WAL, spool, local index, lock) is for
    // its owner only; the metrics file is made world-readable on purpose.
    // SAFETY: umask only sets this process's file-creation mask.
    unsafe {
        libc::umask(0o077);
    }
    dispatch(args).into()
}

fn dispatch(args: Cli) -> Exit {
    match args.command {
        Command::Index { command } => match command {
            IndexCommand::Sync(a) => cli::sync::run(*a),
            IndexCommand::Failures(a) => cli::failures::run(a),
            IndexCommand::Export(a) => cli::export::run(a),
            IndexCommand::Verify(a) => cli::verify::run(a),
        },
        Command::Wal {
            command: WalCommand::Inspect(a),
        } => cli::inspect::run(a),
        Command::Changes(a) => cli::changes::run(a),
        Command::Completions { shell } => cli::completions(shell),
        Command::Search(a) => cli::search::run(a),
    }
}
