//! `changes`: [`ChangesArgs`] into the library's [`ChangesOptions`], the
//! bases read from the sync's state dir, the manifest written where
//! `--output` says, and the exit.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use super::args::ChangesArgs;
use crate::changes::{self, ChangesOptions, ChangesReport, Output};
use crate::exit::Exit;
use crate::report;
use crate::sync;

impl ChangesArgs {
    /// Options for [`changes::run`], with the bases read from the state dir
    /// by the caller (`sync::applied_changesets`).
    pub fn options(&self, bases: BTreeMap<String, String>) -> ChangesOptions {
        let mut o = ChangesOptions::new(self.roots.clone());
        o.bases = bases;
        o.pull = self.pull;
        o.jobs = usize::from(self.jobs);
        o.prune_missing = !self.keep_missing;
        o
    }

    /// `--output`: `-` is stdout, anything else a file replaced atomically.
    pub fn output(&self) -> Output {
        if self.output.as_os_str() == "-" {
            Output::Stdout
        } else {
            Output::File(self.output.clone())
        }
    }

    /// Run and write the manifest where `--output` says
    /// ([`changes::write_manifest`]).
    pub fn execute(
        &self,
        bases: BTreeMap<String, String>,
        log: &mut dyn Write,
    ) -> Result<ChangesReport, changes::Error> {
        changes::write_manifest(&self.options(bases), &self.output(), log)
    }
}

#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("reading applied commits from {}: {source}", state_dir.display())]
    Bases {
        state_dir: PathBuf,
        source: sync::Error,
    },
    #[error("{0}")]
    Changes(#[from] changes::Error),
}

pub fn run(args: ChangesArgs) -> Exit {
    let format = args.log_format.into();
    let mut stderr = std::io::stderr().lock();
    let mut log = report::Lines::new(&mut stderr, format);
    let outcome = execute(&args, &mut log);
    let exit = exit(&outcome);
    if let Err(e) = &outcome {
        let _ = writeln!(log, "[FATAL] {e}");
    }
    drop(log);
    exit
}

fn execute(args: &ChangesArgs, log: &mut dyn Write) -> Result<ChangesReport, Failure> {
    let sd = super::state_dir(args.state_dir.clone());
    let bases = sync::applied_changesets(&sd)
        .map_err(|source| Failure::Bases {
            state_dir: sd,
            source,
        })?
        .into_iter()
        .map(|(repo, c)| (repo, c.commit))
        .collect();
    Ok(args.execute(bases, log)?)
}

/// The one place `changes` decides its exit: 1 when some repository failed
/// (the manifest is still written), 2 when the roots or flags are wrong.
fn exit(outcome: &Result<ChangesReport, Failure>) -> Exit {
    match outcome {
        Ok(r) if r.any_failed() => Exit::Partial,
        Ok(_) => Exit::Ok,
        Err(Failure::Changes(e)) if e.is_usage() => Exit::Usage,
        Err(Failure::Bases { .. } | Failure::Changes(_)) => Exit::Fatal,
    }
}
