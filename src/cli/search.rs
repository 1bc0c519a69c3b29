//! `search`: the best matches of the local index, with repo/path and a snippet.

use std::io::{self, Write};

use super::args::SearchArgs;
use crate::exit::Exit;
use crate::target::local::{self, Hit};

#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{0}")]
    Read(#[from] local::ReadError),
    /// stdout is gone (a closed pipe): nothing more to say, and nowhere to say it.
    #[error("{0}")]
    Stdout(io::Error),
}

pub fn run(args: SearchArgs) -> Exit {
    let sd = super::state_dir(args.state_dir);
    let outcome = execute(&sd, &args.query, args.limit, args.json);
    if let Err(e @ Failure::Read(_)) = &outcome {
        eprintln!("elysiactl: {e}");
    }
    exit(&outcome)
}

fn execute(sd: &std::path::Path, query: &str, limit: usize, json: bool) -> Result<(), Failure> {
    let hits = local::search(sd, query, limit)?;
    let mut stdout = io::stdout().lock();
    for h in hits {
        let line = if json {
            serde_json::to_string(&h).unwrap_or_default()
        } else {
            text(&h)
        };
        writeln!(stdout, "{line}").map_err(Failure::Stdout)?;
    }
    Ok(())
}

fn text(h: &Hit) -> String {
    format!(
        "{}/{}:{}-{}  ({:.2})\n    {}",
        h.repo, h.path, h.start_line, h.end_line, h.score, h.snippet
    )
}

/// The one place `search` decides its exit: a bad query or no index is a
/// usage error, an index that cannot be read is fatal.
fn exit(outcome: &Result<(), Failure>) -> Exit {
    match outcome {
        Ok(()) => Exit::Ok,
        Err(Failure::Read(e)) => Exit::from_code(e.exit_code()),
        Err(Failure::Stdout(_)) => Exit::Fatal,
    }
}
