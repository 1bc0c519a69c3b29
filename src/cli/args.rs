//! The command line as parsed: clap derive structs, nothing checked beyond
//! what clap checks. Each command's module turns its args into the library's
//! validated options ([`super::sync`], [`super::target`], [`super::changes`]).
//! Every doc comment and attribute here is the `--help` users read.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::object::ChunkSize;

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
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
    Changes(ChangesArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "Example:\n  elysiactl completions bash > /etc/bash_completion.d/elysiactl"
    )]
    Completions { shell: clap_complete::Shell },
    /// Search the index (local, or Weaviate when a URL is set): one hit per file with its lines and a snippet.
    #[command(
        after_help = "Examples:\n  elysiactl search 'parse_config' --limit 5\n  elysiactl search 'repo:ServiceB \"fn post(\"'\n  elysiactl search 'retry backoff' --repo ServiceA --path src/\n  elysiactl search 'how are retries delayed' --weaviate-url http://localhost:8080 --mode hybrid --alpha 0.7\n\nExit codes: 0 answered (even with no hits), 2 usage (bad query, no local index, a mode the index cannot do), 3 the index cannot be read (Weaviate: unreachable, refused, unknown collection, GraphQL errors).\n\nLocal words match the file content and the words of the repo-relative path (split at\nevery non-alphanumeric character, any case); repo:NAME and path:REL/PATH match\nexactly. A query that does not parse is an error (exit 2): quote code in \"...\"."
    )]
    Search(SearchArgs),
}

#[derive(Subcommand)]
pub enum IndexCommand {
    /// Apply a change manifest (or show sync health with --status).
    #[command(
        after_help = "Examples:\n  elysiactl index sync --input /tmp/changes.jsonl --root /opt/pdi/Enterprise\n  git-producer | elysiactl index sync --input - --root .\n  elysiactl index sync --status"
    )]
    Sync(Box<SyncArgs>),
    /// List failed lines not yet applied: manifest, line, byte offset, path, reason, attempts.
    #[command(
        after_help = "Examples:\n  elysiactl index failures\n  elysiactl index failures --json | jq -r .path\n\nA line failed in 5 runs of its manifest is a dead letter: listed, no longer retried\nuntil `elysiactl index sync --retry-failed`."
    )]
    Failures(FailuresArgs),
    /// Print every indexed object as JSON Lines: id, repo, path, contentSha256.
    #[command(
        after_help = "Example:\n  elysiactl index export --state-dir /var/lib/elysiactl > objects.jsonl"
    )]
    Export(ExportArgs),
    /// Compare the live index with the disk: missing, extra and stale files; --repair makes them equal.
    #[command(
        after_help = "Examples:\n  elysiactl index verify --root /opt/pdi/Enterprise\n  elysiactl index verify --root /srv/src --repo ServiceA --json\n  elysiactl index verify --root /srv/src --repair"
    )]
    Verify(VerifyArgs),
}

#[derive(Subcommand)]
pub enum WalCommand {
    /// Dump every WAL record; --verify checks the log and exits 3 on corruption.
    #[command(
        after_help = "Examples:\n  elysiactl wal inspect --state-dir /var/lib/elysiactl\n  elysiactl wal inspect /var/lib/elysiactl/wal/00000000000000000001.wal --json\n  elysiactl wal inspect --verify"
    )]
    Inspect(InspectArgs),
}

// The structs of the subcommands carry no doc comment of their own: the
// variant's is the subcommand's description.

#[derive(clap::Args)]
pub struct SyncArgs {
    /// The manifest (JSON Lines); '-' reads stdin (spooled into the state dir first).
    #[arg(long, required_unless_present_any = ["status", "retry_failed"])]
    pub input: Option<String>,
    /// Print the JSON health document and exit 0.
    #[arg(long)]
    pub status: bool,
    /// Where the WAL, lock and local index live.
    #[arg(long, env = "ELYSIACTL_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// What to do with an item that still fails after retries.
    #[arg(long, value_enum, default_value = "continue")]
    pub on_error: OnErrorArg,
    /// Transient-failure retries per item.
    #[arg(long, default_value_t = 3)]
    pub max_retries: u32,
    /// How long a batch may be rate limited by the embedding provider without a break before its throttled objects fail (transient: the next run retries them); rate limits do not use up --max-retries. 0s: rate limits are ordinary transient failures.
    #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = crate::util::parse_duration)]
    pub rate_limit_patience: std::time::Duration,
    /// Manual recovery: start at line N (1-based); earlier lines count as done.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub from_line: Option<u64>,
    /// Source root (repeatable); files outside every root are never read. Default: the current directory.
    #[arg(long)]
    pub root: Vec<PathBuf>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Parse and plan; write nothing (neither index nor WAL).
    #[arg(long)]
    pub dry_run: bool,
    /// Larger files are not indexed.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_file_size: u64,
    /// Largest chunk object in bytes (0: one object per file). Part of the index: a state dir keeps the size it was built with.
    #[arg(long, default_value = "4096", value_parser = parse_chunk_size)]
    pub chunk_size: ChunkSize,
    /// Re-chunk every file the index holds at --chunk-size (the way from another chunk size, or from an index of whole-file objects); resumable.
    #[arg(long)]
    pub rechunk: bool,
    /// Prometheus textfile to write at the end of the run.
    #[arg(long)]
    pub metrics_file: Option<PathBuf>,
    /// Drop the unapplied lines of an earlier manifest that is gone or changed (recorded in the WAL).
    #[arg(long)]
    pub abandon_pending: bool,
    /// No per-batch progress lines (and no progress bar).
    #[arg(long, short)]
    pub quiet: bool,
    /// Retry every outstanding failed line of every known manifest still present,
    /// dead letters included (with or without --input).
    #[arg(long)]
    pub retry_failed: bool,
    /// Progress and events as text lines, or one JSON object per line.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormatArg,
    /// First retry backoff in milliseconds (doubles per attempt, full jitter).
    #[arg(long, default_value_t = 200, hide = true)]
    pub retry_base_ms: u64,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum OnErrorArg {
    Continue,
    Stop,
    Retry,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormatArg {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum TargetArg {
    Local,
    Weaviate,
}

/// Which index, for `index sync` and `index export`.
#[derive(clap::Args)]
pub struct TargetArgs {
    /// Where the index is (default: weaviate when a Weaviate URL is set, else local).
    #[arg(long, value_enum)]
    pub target: Option<TargetArg>,
    #[arg(long, env = "ELYSIACTL_WEAVIATE_URL")]
    pub weaviate_url: Option<String>,
    #[arg(long, default_value = "SRC_ENTERPRISE__")]
    pub collection: String,
    /// Vectorizer module for a collection this run creates (e.g. text2vec-openai).
    #[arg(long)]
    pub vectorizer: Option<String>,
    /// Batches in flight to the target (Weaviate).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub concurrency: u64,
    /// Per-request timeout to the target, seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    #[arg(long, env = "ELYSIACTL_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Source root (repeatable): its directories are the repos. Default: the current directory.
    #[arg(long)]
    pub root: Vec<PathBuf>,
    /// Only this repo (repeatable).
    #[arg(long)]
    pub repo: Vec<String>,
    /// One JSON document with every count and the first paths of each kind.
    #[arg(long)]
    pub json: bool,
    /// Make the index equal the disk (through the sync's crash-safe path), then verify again.
    #[arg(long)]
    pub repair: bool,
    /// With --repair: print what it would change, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Larger files are not indexed (as `index sync`).
    #[arg(long, default_value_t = 1 << 20)]
    pub max_file_size: u64,
    /// The chunking to expect (default: the one the state dir records, else 4096).
    #[arg(long, value_parser = parse_chunk_size)]
    pub chunk_size: Option<ChunkSize>,
    /// Prometheus textfile with the drift counts and the verify's time, written atomically.
    #[arg(long)]
    pub metrics_file: Option<PathBuf>,
    /// No progress lines from a repair.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(clap::Args)]
pub struct FailuresArgs {
    #[arg(long, env = "ELYSIACTL_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// One JSON object per failed line.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct ExportArgs {
    #[arg(long, env = "ELYSIACTL_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Add each chunk's text (`content`) to its line.
    #[arg(long)]
    pub content: bool,
    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(clap::Args)]
pub struct InspectArgs {
    /// A segment file or WAL directory (instead of --state-dir).
    pub file: Option<PathBuf>,
    #[arg(long, env = "ELYSIACTL_STATE_DIR", conflicts_with = "file")]
    pub state_dir: Option<PathBuf>,
    /// One JSON object per record.
    #[arg(long)]
    pub json: bool,
    /// Only check; exit 3 if any record before the tail is damaged.
    #[arg(long)]
    pub verify: bool,
}

#[derive(clap::Args)]
pub struct SearchArgs {
    /// Query. Local: words are ANDed; "a phrase"; repo:NAME, path:REL/PATH, size:BYTES. Weaviate: plain text.
    pub query: String,
    /// Files to print (one hit per file, its best chunk), best first.
    #[arg(long, default_value_t = 10)]
    pub limit: usize,
    /// Only this repo (repeatable).
    #[arg(long)]
    pub repo: Vec<String>,
    /// Only files whose repo-relative path starts with PREFIX.
    #[arg(long, value_name = "PREFIX")]
    pub path: Option<String>,
    /// keyword (BM25), hybrid (BM25 and vectors, Weaviate), semantic (nearText, Weaviate).
    #[arg(long, value_enum, default_value = "keyword")]
    pub mode: SearchModeArg,
    /// Hybrid: the weight of the vector side, 0 (keyword only) to 1 (vectors only).
    #[arg(long, default_value_t = 0.5, value_parser = parse_alpha)]
    pub alpha: f64,
    /// The state dir whose local index is searched.
    #[arg(long, env = "ELYSIACTL_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// One JSON object per hit.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum SearchModeArg {
    Keyword,
    Hybrid,
    Semantic,
}

/// `--alpha`: a number from 0 to 1.
fn parse_alpha(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(a) if (0.0..=1.0).contains(&a) => Ok(a),
        _ => Err(format!("{s:?} is not a number from 0 to 1")),
    }
}

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
    /// Events on stderr as text lines, or one JSON object per line.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormatArg,
}

/// `--chunk-size`: 0, or at least [`ChunkSize::MIN`] bytes.
fn parse_chunk_size(s: &str) -> Result<ChunkSize, String> {
    s.parse::<ChunkSize>().map_err(|e| e.to_string())
}
