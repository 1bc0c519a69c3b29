//! `index export`: every object of the chosen index as JSON Lines. The local
//! index is read without writing anything, so this works while a sync runs
//! and on a read-only state dir.

use std::io::{self, Write};
use std::path::PathBuf;

use super::args::{ExportArgs, TargetArg, TargetArgs};
use super::target::TargetArgsError;
use crate::exit::Exit;
use crate::object::ChunkSize;
use crate::target::search::SearchError;
use crate::target::{self, local};

/// Why a read command (`index export`, `search`) could not answer.
#[derive(Debug, thiserror::Error)]
pub(super) enum Failure {
    #[error("{0}")]
    Local(#[from] local::ReadError),
    #[error("{0}")]
    Usage(#[from] TargetArgsError),
    #[error("{0}")]
    Target(#[from] target::Error),
    #[error("{0}")]
    Search(#[from] SearchError),
    /// stdout is gone (a closed pipe): nothing more to say, and nowhere to say it.
    #[error("{0}")]
    Stdout(io::Error),
}

pub fn run(args: ExportArgs) -> Exit {
    finish(&execute(
        &args.target,
        super::state_dir(args.state_dir),
        args.content,
    ))
}

/// The one place a read command says why it failed (one line on stderr)
/// and decides its exit: no index there, a bad query, or a mode the index
/// cannot do is a usage error; an index that cannot be read or answer
/// (I/O, unreachable, refused, unknown collection, GraphQL errors) is
/// fatal.
pub(super) fn finish(outcome: &Result<(), Failure>) -> Exit {
    if let Err(e) = outcome {
        if !matches!(e, Failure::Stdout(_)) {
            eprintln!("elysiactl: {e}");
        }
    }
    match outcome {
        Ok(()) => Exit::Ok,
        Err(Failure::Local(e)) => Exit::from_code(e.exit_code()),
        Err(Failure::Usage(_) | Failure::Search(SearchError::Usage(_))) => Exit::Usage,
        Err(Failure::Target(_) | Failure::Search(SearchError::Failed(_)) | Failure::Stdout(_)) => {
            Exit::Fatal
        }
    }
}

fn execute(t: &TargetArgs, sd: PathBuf, content: bool) -> Result<(), Failure> {
    let objects = objects(t, sd, content)?;
    let mut stdout = io::stdout().lock();
    for o in objects {
        if let Ok(line) = serde_json::to_string(&o) {
            writeln!(stdout, "{line}").map_err(Failure::Stdout)?;
        }
    }
    Ok(())
}

fn objects(t: &TargetArgs, sd: PathBuf, content: bool) -> Result<Vec<local::Exported>, Failure> {
    if t.kind() == TargetArg::Local {
        return Ok(local::export_with(&sd, content)?);
    }
    // Reading only: any chunk size opens the index.
    let open = t.opener(sd, ChunkSize::WHOLE_FILE)?;
    let target = open()?;
    Ok(target.export(content)?)
}
