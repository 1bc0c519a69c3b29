//! The `elysiactl changes` command line, ready to be flattened into the
//! binary's clap subcommand enum, and the glue from it to [`super::run`]:
//! output to stdout or an atomically replaced file, and the exit code.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;

use super::output::AtomicFile;
use super::{run, ChangesOptions, ChangesReport, Error};

/// `elysiactl changes --root DIR [--output FILE|-] [--state-dir DIR] [--pull] [--jobs N]`
#[derive(Debug, Clone, clap::Args)]
pub struct ChangesArgs {
    /// Directory whose direct children are git repositories (repeatable).
    #[arg(long = "root", value_name = "DIR", required = true)]
    pub roots: Vec<PathBuf>,
    /// Where to write the manifest; `-` is stdout. A file is replaced
    /// atomically, so the sync never reads half a manifest.
    #[arg(long, value_name = "FILE|-", default_value = "-")]
    pub output: PathBuf,
    /// The sync's state dir: each repository's base is the commit whose
    /// changes the sync last fully applied.
    #[arg(long, value_name = "DIR", env = "ELYSIACTL_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Fast-forward each repository from its upstream before diffing.
    #[arg(long)]
    pub pull: bool,
    /// Repositories pulled at once.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: u16,
    /// Do not prune repositories that have a base but are no longer under
    /// any root (for runs that cover only some of a state dir's roots).
    #[arg(long)]
    pub keep_missing: bool,
}

/// Exit codes as in SPEC.md.
pub const EXIT_OK: i32 = 0;
pub const EXIT_SOME_FAILED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_FATAL: i32 = 3;

impl ChangesArgs {
    /// Options for [`run`], with the bases read from the state dir by the
    /// caller (`sync::applied_changesets`).
    pub fn options(&self, bases: BTreeMap<String, String>) -> ChangesOptions {
        let mut o = ChangesOptions::new(self.roots.clone());
        o.bases = bases;
        o.pull = self.pull;
        o.jobs = usize::from(self.jobs);
        o.prune_missing = !self.keep_missing;
        o
    }

    /// Run and write the manifest where `--output` says. A file is
    /// published even when some repositories failed (their lines are simply
    /// absent or incomplete, and their bases do not advance); it is not
    /// published when the run fails as a whole.
    pub fn execute(
        &self,
        bases: BTreeMap<String, String>,
        log: &mut dyn Write,
    ) -> Result<ChangesReport, Error> {
        let opts = self.options(bases);
        if self.output.as_os_str() == "-" {
            let stdout = io::stdout();
            let mut out = io::BufWriter::with_capacity(1 << 16, stdout.lock());
            let report = run(&opts, &mut out, log)?;
            out.flush().map_err(Error::Output)?;
            Ok(report)
        } else {
            let mut file = AtomicFile::create(&self.output).map_err(Error::Output)?;
            let report = run(&opts, &mut file, log)?;
            file.commit().map_err(Error::Output)?;
            Ok(report)
        }
    }
}

/// The process exit code for the outcome of [`ChangesArgs::execute`].
pub fn exit_code(result: &Result<ChangesReport, Error>) -> i32 {
    match result {
        Ok(r) if r.any_failed() => EXIT_SOME_FAILED,
        Ok(_) => EXIT_OK,
        Err(e) if e.is_usage() => EXIT_USAGE,
        Err(_) => EXIT_FATAL,
    }
}
