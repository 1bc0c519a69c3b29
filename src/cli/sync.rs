//! `index sync`: [`SyncArgs`] validated into [`sync::Options`] and a target
//! opener, the run, and its exit. `--status` prints the health document.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use super::args::{LogFormatArg, OnErrorArg, SyncArgs};
use super::target::{Opener, TargetArgsError};
use crate::exit::Exit;
use crate::sync::{self, Input, LogFormat, OnError};
use crate::wal::TargetIdentity;

/// A sync ready to run: the library's options and the target to open.
pub struct ValidSync {
    pub options: sync::Options,
    pub open: Opener,
}

impl SyncArgs {
    /// The options of the run (everything defaulted and resolved here, in
    /// one place), or the usage error that stops it before the state dir is
    /// touched.
    pub fn validate(self, state_dir: PathBuf) -> Result<ValidSync, TargetArgsError> {
        let input = match self.input.as_deref() {
            Some("-") => Some(Input::Stdin),
            Some(p) => {
                let path = PathBuf::from(p);
                if let Err(source) = std::fs::metadata(&path) {
                    return Err(TargetArgsError::ManifestUnreadable { path, source });
                }
                Some(Input::File(path))
            }
            None => None,
        };
        let log_format = LogFormat::from(self.log_format);
        let progress_bar =
            !self.quiet && log_format == LogFormat::Text && std::io::stderr().is_terminal();
        let roots = if self.root.is_empty() {
            vec![PathBuf::from(".")]
        } else {
            self.root
        };
        let options = sync::Options {
            input,
            state_dir: state_dir.clone(),
            batch_size: self.batch_size,
            on_error: match self.on_error {
                OnErrorArg::Continue => OnError::Continue,
                OnErrorArg::Stop => OnError::Stop,
                OnErrorArg::Retry => OnError::Retry,
            },
            max_retries: self.max_retries,
            rate_limit_patience: self.rate_limit_patience,
            from_line: self.from_line,
            roots,
            dry_run: self.dry_run,
            max_file_size: self.max_file_size,
            abandon_pending: self.abandon_pending,
            backoff: sync::Backoff {
                base: Duration::from_millis(self.retry_base_ms),
                cap: Duration::from_secs(30),
            },
            progress: !self.quiet,
            target_name: self.target.name().into(),
            target: TargetIdentity {
                chunk_size: self.chunk_size.get() as u64,
                ..self.target.identity()
            },
            chunk_size: self.chunk_size,
            rechunk: self.rechunk,
            metrics_file: self.metrics_file,
            retry_failed: self.retry_failed,
            log_format,
            progress_bar,
        };
        let open = self.target.opener(state_dir, self.chunk_size)?;
        Ok(ValidSync { options, open })
    }
}

impl From<LogFormatArg> for LogFormat {
    fn from(f: LogFormatArg) -> LogFormat {
        match f {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}

/// How `index sync` ended, short of a finished run.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{0}")]
    Usage(#[from] TargetArgsError),
    #[error("cannot write the status document: {0}")]
    Status(std::io::Error),
    #[error("{0}")]
    Run(#[from] sync::Error),
}

/// What `index sync` did: printed the status document, or ran.
enum Done {
    Status,
    Ran(Box<sync::Report>),
}

pub fn run(args: SyncArgs) -> Exit {
    let log_format = LogFormat::from(args.log_format);
    // Not locked for the run: the progress bar draws to stderr from its
    // own thread, and a lock held here would deadlock it on a terminal.
    let mut stderr = std::io::stderr();
    let outcome = execute(args, &mut stderr);
    let exit = exit(&outcome);
    if let Err(e) = &outcome {
        sync::emit_fatal(&mut stderr, log_format, &e.to_string(), exit.code());
    }
    exit
}

fn execute(args: SyncArgs, log: &mut dyn Write) -> Result<Done, Failure> {
    let sd = super::state_dir(args.state_dir.clone());
    if args.status {
        let doc = sync::status::status(&sd);
        let text = serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".into());
        writeln!(std::io::stdout().lock(), "{text}").map_err(Failure::Status)?;
        return Ok(Done::Status);
    }
    let valid = args.validate(sd)?;
    let report = sync::run(&valid.options, valid.open.as_ref(), log)?;
    Ok(Done::Ran(Box::new(report)))
}

/// The one place `index sync` decides its exit. `--status` exits 0 whatever
/// the last run did; only failing to print it is an error.
fn exit(outcome: &Result<Done, Failure>) -> Exit {
    match outcome {
        Ok(Done::Status) => Exit::Ok,
        Ok(Done::Ran(report)) => Exit::from_code(report.exit_code),
        Err(Failure::Usage(_)) => Exit::Usage,
        Err(Failure::Status(_)) => Exit::Fatal,
        Err(Failure::Run(e)) => Exit::from_code(e.exit_code()),
    }
}
