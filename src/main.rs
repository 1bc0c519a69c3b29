//! The `elysiactl` binary: parse the command line, build a validated
//! configuration, call the library, map the outcome to an exit code.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use elysiactl::sync::{self, Input, OnError};
use elysiactl::target::weaviate::{WeaviateConfig, WeaviateTarget};
use elysiactl::target::{local::LocalIndex, Target};

#[derive(Parser)]
#[command(
    name = "elysiactl",
    version,
    about = "Apply a change manifest to a search index, crash-safely and resumably",
    long_about = "elysiactl applies a JSON Lines change manifest (add / update / delete / rename per file) \
to a search index in batches. Every batch outcome goes to a CRC-checked write-ahead log in the state dir, \
so a run killed at any instant resumes exactly where it was on the next start.\n\n\
Exit codes: 0 all applied, 1 finished with failed items, 2 usage or input error, 3 fatal (state saved).",
    after_help = "Example:\n  elysiactl index sync --input changes.jsonl --root /opt/pdi/Enterprise\n  elysiactl index sync --status"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The index: sync a manifest into it, export it.
    Index {
        #[command(subcommand)]
        command: IndexCommand,
    },
    /// The write-ahead log.
    Wal {
        #[command(subcommand)]
        command: WalCommand,
    },
    /// Write the change manifest: every repository's changes since its last applied commit.
    #[command(
        after_help = "Examples:\n  elysiactl changes --root /opt/pdi/Enterprise --pull --output /tmp/changes.jsonl\n  elysiactl changes --root /opt/pdi/Enterprise --output /tmp/c.jsonl && elysiactl index sync --input /tmp/c.jsonl --root /opt/pdi/Enterprise\n\nExit codes: 0 every repository processed, 1 some failed (manifest still written), 2 usage, 3 fatal.\nSee docs/changes.md."
    )]
    Changes(elysiactl::changes::ChangesArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "Example:\n  elysiactl completions bash > /etc/bash_completion.d/elysiactl"
    )]
    Completions { shell: clap_complete::Shell },
    /// Search the local index: best matches with repo/path and a snippet.
    #[command(
        after_help = "Examples:\n  elysiactl search 'parse_config' --limit 5\n  elysiactl search 'repo:ServiceB \"fn post(\"'\n\nWords match the file content and the words of the repo-relative path (split at\nevery non-alphanumeric character, any case); repo:NAME and path:REL/PATH match\nexactly. A query that does not parse is an error (exit 2): quote code in \"...\"."
    )]
    Search {
        /// Query: words are ANDed; "a phrase"; repo:NAME, path:REL/PATH, size:BYTES.
        query: String,
        /// Hits to print, best first.
        #[arg(long, default_value_t = 10)]
        limit: usize,
        /// The state dir whose local index is searched.
        #[arg(long, env = "ELYSIACTL_STATE_DIR")]
        state_dir: Option<PathBuf>,
        /// One JSON object per hit.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum IndexCommand {
    /// Apply a change manifest (or show sync health with --status).
    #[command(
        after_help = "Examples:\n  elysiactl index sync --input /tmp/changes.jsonl --root /opt/pdi/Enterprise\n  git-producer | elysiactl index sync --input - --root .\n  elysiactl index sync --status"
    )]
    Sync(Box<SyncArgs>),
    /// List failed lines not yet applied: manifest, line, byte offset, path, reason, attempts.
    #[command(
        after_help = "Examples:\n  elysiactl index failures\n  elysiactl index failures --json | jq -r .path\n\nA line failed in 5 runs of its manifest is a dead letter: listed, no longer retried\nuntil `elysiactl index sync --retry-failed`."
    )]
    Failures {
        #[arg(long, env = "ELYSIACTL_STATE_DIR")]
        state_dir: Option<PathBuf>,
        /// One JSON object per failed line.
        #[arg(long)]
        json: bool,
    },
    /// Print every indexed object as JSON Lines: id, repo, path, contentSha256.
    #[command(
        after_help = "Example:\n  elysiactl index export --state-dir /var/lib/elysiactl > objects.jsonl"
    )]
    Export {
        #[arg(long, env = "ELYSIACTL_STATE_DIR")]
        state_dir: Option<PathBuf>,
        #[command(flatten)]
        target: TargetArgs,
    },
}

#[derive(Subcommand)]
enum WalCommand {
    /// Dump every WAL record; --verify checks the log and exits 3 on corruption.
    #[command(
        after_help = "Examples:\n  elysiactl wal inspect --state-dir /var/lib/elysiactl\n  elysiactl wal inspect /var/lib/elysiactl/wal/00000000000000000001.wal --json\n  elysiactl wal inspect --verify"
    )]
    Inspect {
        /// A segment file or WAL directory (instead of --state-dir).
        file: Option<PathBuf>,
        #[arg(long, env = "ELYSIACTL_STATE_DIR", conflicts_with = "file")]
        state_dir: Option<PathBuf>,
        /// One JSON object per record.
        #[arg(long)]
        json: bool,
        /// Only check; exit 3 if any record before the tail is damaged.
        #[arg(long)]
        verify: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum OnErrorArg {
    Continue,
    Stop,
    Retry,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum LogFormatArg {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum TargetArg {
    Local,
    Weaviate,
}

/// Which index, for `index sync` and `index export`.
#[derive(clap::Args)]
struct TargetArgs {
    /// Where the index is (default: weaviate when a Weaviate URL is set, else local).
    #[arg(long, value_enum)]
    target: Option<TargetArg>,
    #[arg(long, env = "ELYSIACTL_WEAVIATE_URL")]
    weaviate_url: Option<String>,
    #[arg(long, default_value = "SRC_ENTERPRISE__")]
    collection: String,
    /// Vectorizer module for a collection this run creates (e.g. text2vec-openai).
    #[arg(long)]
    vectorizer: Option<String>,
    /// Batches in flight to the target (Weaviate).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    concurrency: u64,
    /// Per-request timeout to the target, seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

impl TargetArgs {
    fn kind(&self) -> TargetArg {
        match self.target {
            Some(t) => t,
            None if self.weaviate_url.is_some() => TargetArg::Weaviate,
            None => TargetArg::Local,
        }
    }

    /// Which index this is, as the state dir records it.
    fn identity(&self) -> elysiactl::wal::TargetIdentity {
        let (kind, server, collection) = match (self.kind(), &self.weaviate_url) {
            (TargetArg::Weaviate, Some(url)) => (
                "weaviate",
                elysiactl::target::weaviate::client::redact_url(url)
                    .trim_end_matches('/')
                    .to_string(),
                self.collection.clone(),
            ),
            (TargetArg::Weaviate, None) => ("weaviate", String::new(), self.collection.clone()),
            (TargetArg::Local, _) => ("local", String::new(), String::new()),
        };
        elysiactl::wal::TargetIdentity {
            kind: kind.into(),
            server,
            collection,
            chunk_size: 0,
        }
    }

    /// A function that opens the target (called once the state dir is locked).
    #[allow(clippy::type_complexity)]
    fn opener(
        &self,
        state_dir: PathBuf,
    ) -> Result<Box<dyn Fn() -> Result<Box<dyn Target>, elysiactl::target::Error>>, String> {
        match (self.kind(), &self.weaviate_url) {
            (TargetArg::Weaviate, None) => {
                Err("--target weaviate needs --weaviate-url URL (or ELYSIACTL_WEAVIATE_URL)".into())
            }
            (TargetArg::Weaviate, Some(url)) => {
                let cfg = WeaviateConfig::from_env(
                    url.clone(),
                    self.collection.clone(),
                    self.vectorizer.clone(),
                    Duration::from_secs(self.timeout.max(1)),
                    self.concurrency as usize,
                );
                // A bad URL or collection is a usage error, found before the
                // state dir is touched.
                cfg.validate().map_err(|e| e.to_string())?;
                Ok(Box::new(move || -> Result<Box<dyn Target>, _> {
                    Ok(Box::new(WeaviateTarget::new(cfg.clone())?))
                }))
            }
            (TargetArg::Local, _) => Ok(Box::new(move || -> Result<Box<dyn Target>, _> {
                Ok(Box::new(LocalIndex::open(&state_dir)?))
            })),
        }
    }
}

#[derive(clap::Args)]
struct SyncArgs {
    /// The manifest (JSON Lines); '-' reads stdin (spooled into the state dir first).
    #[arg(long, required_unless_present_any = ["status", "retry_failed"])]
    input: Option<String>,
    /// Print the JSON health document and exit 0.
    #[arg(long)]
    status: bool,
    /// Where the WAL, lock and local index live.
    #[arg(long, env = "ELYSIACTL_STATE_DIR")]
    state_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// What to do with an item that still fails after retries.
    #[arg(long, value_enum, default_value = "continue")]
    on_error: OnErrorArg,
    /// Transient-failure retries per item.
    #[arg(long, default_value_t = 3)]
    max_retries: u32,
    /// Manual recovery: start at line N (1-based); earlier lines count as done.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    from_line: Option<u64>,
    /// Source root (repeatable); files outside every root are never read. Default: the current directory.
    #[arg(long)]
    root: Vec<PathBuf>,
    #[command(flatten)]
    target: TargetArgs,
    /// Parse and plan; write nothing (neither index nor WAL).
    #[arg(long)]
    dry_run: bool,
    /// Larger files are not indexed.
    #[arg(long, default_value_t = 1 << 20)]
    max_file_size: u64,
    /// Prometheus textfile to write at the end of the run.
    #[arg(long)]
    metrics_file: Option<PathBuf>,
    /// Drop the unapplied lines of an earlier manifest that is gone or changed (recorded in the WAL).
    #[arg(long)]
    abandon_pending: bool,
    /// No per-batch progress lines (and no progress bar).
    #[arg(long, short)]
    quiet: bool,
    /// Retry every outstanding failed line of every known manifest still present,
    /// dead letters included (with or without --input).
    #[arg(long)]
    retry_failed: bool,
    /// Progress and events as text lines, or one JSON object per line.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormatArg,
    /// First retry backoff in milliseconds (doubles per attempt, full jitter).
    #[arg(long, default_value_t = 200, hide = true)]
    retry_base_ms: u64,
}

/// The state dir, absolute and without `.` parts, whatever form it was
/// given in (what the WAL records of it, such as spool paths, is then the
/// same from run to run).
fn state_dir(given: Option<PathBuf>) -> PathBuf {
    let dir = given.unwrap_or_else(|| {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".elysiactl")
    });
    std::path::absolute(&dir).unwrap_or(dir)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    // Everything elysiactl creates (WAL, spool, local index, lock) is for
    // its owner only; the metrics file is made world-readable on purpose.
    // SAFETY: umask only sets this process's file-creation mask.
    unsafe {
        libc::umask(0o077);
    }
    ExitCode::from(run(cli))
}

fn run(cli: Cli) -> u8 {
    let mut stdout = std::io::stdout().lock();
    match cli.command {
        Command::Index {
            command: IndexCommand::Sync(args),
        } => sync_cmd(args),
        Command::Changes(args) => changes_cmd(args),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "elysiactl", &mut stdout);
            0
        }
        Command::Index {
            command:
                IndexCommand::Failures {
                    state_dir: sd,
                    json,
                },
        } => match failures_of(&state_dir(sd)) {
            Ok(list) => {
                for f in &list {
                    let line = if json {
                        f.to_string()
                    } else {
                        format!(
                            "{}:{} (byte {}) {}/{} [{}; {} attempt(s){}] {}",
                            f["manifest"].as_str().unwrap_or_default(),
                            f["line"],
                            f["offset"],
                            f["repo"].as_str().unwrap_or_default(),
                            f["path"].as_str().unwrap_or_default(),
                            f["kind"].as_str().unwrap_or_default(),
                            f["attempts"],
                            if f["dead_letter"] == true {
                                ", dead letter"
                            } else {
                                ""
                            },
                            f["reason"].as_str().unwrap_or_default(),
                        )
                    };
                    if writeln!(stdout, "{line}").is_err() {
                        return 3;
                    }
                }
                if !json && list.is_empty() {
                    let _ = writeln!(stdout, "no failed lines");
                }
                0
            }
            Err((code, e)) => {
                eprintln!("elysiactl: {e}");
                code
            }
        },
        Command::Index {
            command:
                IndexCommand::Export {
                    state_dir: sd,
                    target,
                },
        } => match export(&target, state_dir(sd)) {
            Ok(objs) => {
                for o in objs {
                    if let Ok(line) = serde_json::to_string(&o) {
                        if writeln!(stdout, "{line}").is_err() {
                            return 3;
                        }
                    }
                }
                0
            }
            Err((code, e)) => {
                eprintln!("elysiactl: {e}");
                code
            }
        },
        Command::Wal {
            command:
                WalCommand::Inspect {
                    file,
                    state_dir: sd,
                    json,
                    verify,
                },
        } => {
            let path = file.unwrap_or_else(|| state_dir(sd));
            elysiactl::cli::inspect::inspect(&path, json, verify, &mut stdout).unwrap_or(3)
        }
        Command::Search {
            query,
            limit,
            state_dir: sd,
            json,
        } => match elysiactl::target::local::search(&state_dir(sd), &query, limit) {
            Ok(hits) => {
                for h in hits {
                    let line = if json {
                        serde_json::to_string(&h).unwrap_or_default()
                    } else {
                        format!("{}/{}  ({:.2})\n    {}", h.repo, h.path, h.score, h.snippet)
                    };
                    if writeln!(stdout, "{line}").is_err() {
                        return 3;
                    }
                }
                0
            }
            Err(e) => {
                eprintln!("elysiactl: {e}");
                e.exit_code()
            }
        },
    }
}

fn changes_cmd(a: elysiactl::changes::ChangesArgs) -> u8 {
    let mut stderr = std::io::stderr().lock();
    let sd = state_dir(a.state_dir.clone());
    let bases = match sync::applied_changesets(&sd) {
        Ok(applied) => applied
            .into_iter()
            .map(|(repo, c)| (repo, c.commit))
            .collect(),
        Err(e) => {
            let _ = writeln!(
                stderr,
                "elysiactl: reading applied commits from {}: {e}",
                sd.display()
            );
            return 3;
        }
    };
    let result = a.execute(bases, &mut stderr);
    if let Err(e) = &result {
        let _ = writeln!(stderr, "elysiactl: {e}");
    }
    elysiactl::changes::exit_code(&result) as u8
}

/// The failed lines of a state dir, or the exit code and message. A state
/// dir that does not exist is a mistyped path (exit 2), not "no failures".
fn failures_of(sd: &std::path::Path) -> Result<Vec<serde_json::Value>, (u8, String)> {
    match std::fs::metadata(sd) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err((2, format!("state dir {} is not a directory", sd.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err((
                2,
                format!(
                    "state dir {} does not exist: pass the --state-dir of your syncs",
                    sd.display()
                ),
            ))
        }
        Err(e) => return Err((3, format!("state dir {}: {e}", sd.display()))),
    }
    sync::status::failures(sd).map_err(|e| (3, e.to_string()))
}

/// Every object of the chosen index, or the exit code and message. The
/// local index is read without writing anything, so this works while a
/// sync runs and on a read-only state dir.
fn export(
    t: &TargetArgs,
    sd: PathBuf,
) -> Result<Vec<elysiactl::target::local::Exported>, (u8, String)> {
    if t.kind() == TargetArg::Local {
        return elysiactl::target::local::export(&sd).map_err(|e| (e.exit_code(), e.to_string()));
    }
    let open = t.opener(sd).map_err(|e| (2, e))?;
    let target = open().map_err(|e| (3, e.to_string()))?;
    target.export().map_err(|e| (3, e.to_string()))
}

fn sync_cmd(a: Box<SyncArgs>) -> u8 {
    let a = *a;
    let sd = state_dir(a.state_dir);
    if a.status {
        let doc = sync::status::status(&sd);
        let text = serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".into());
        // Exit 0 whatever the last run did; only failing to print is an error.
        return match writeln!(std::io::stdout().lock(), "{text}") {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("elysiactl: cannot write the status document: {e}");
                3
            }
        };
    }
    let input = match a.input.as_deref() {
        Some("-") => Some(Input::Stdin),
        Some(p) => Some(Input::File(PathBuf::from(p))),
        None => None,
    };
    let log_format = match a.log_format {
        LogFormatArg::Text => sync::LogFormat::Text,
        LogFormatArg::Json => sync::LogFormat::Json,
    };
    let progress_bar =
        !a.quiet && log_format == sync::LogFormat::Text && std::io::stderr().is_terminal();
    let target = a.target.kind();
    let roots = if a.root.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        a.root
    };
    let opts = sync::Options {
        input,
        state_dir: sd.clone(),
        batch_size: a.batch_size,
        on_error: match a.on_error {
            OnErrorArg::Continue => OnError::Continue,
            OnErrorArg::Stop => OnError::Stop,
            OnErrorArg::Retry => OnError::Retry,
        },
        max_retries: a.max_retries,
        from_line: a.from_line,
        roots,
        dry_run: a.dry_run,
        max_file_size: a.max_file_size,
        abandon_pending: a.abandon_pending,
        backoff: sync::Backoff {
            base: Duration::from_millis(a.retry_base_ms),
            cap: Duration::from_secs(30),
        },
        progress: !a.quiet,
        target_name: match target {
            TargetArg::Local => "local".into(),
            TargetArg::Weaviate => "weaviate".into(),
        },
        target: a.target.identity(),
        metrics_file: a.metrics_file,
        retry_failed: a.retry_failed,
        log_format,
        progress_bar,
    };
    let opener = match a.target.opener(sd) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("elysiactl: {e}");
            return 2;
        }
    };
    // Not locked for the run: the progress bar draws to stderr from its
    // own thread, and a lock held here would deadlock it on a terminal.
    let mut stderr = std::io::stderr();
    match sync::run(&opts, opener.as_ref(), &mut stderr) {
        Ok(report) => report.exit_code,
        Err(e) => {
            let code = e.exit_code();
            sync::emit_fatal(&mut stderr, log_format, &e.to_string(), code);
            code
        }
    }
}
