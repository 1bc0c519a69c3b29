//! The `git` CLI, driven as a subprocess, and decoders for its `-z` output.
//!
//! Only plumbing commands whose output is machine-stable are parsed
//! (`diff-tree --raw -z`, `ls-tree -z`, `rev-parse`); paths are taken as raw
//! bytes between NULs, so no porcelain quoting is ever involved. The decoders
//! work on byte slices and know nothing of processes, so they are unit-tested
//! directly.
//!
//! Every child runs with the environment that could redirect it to another
//! repository removed (`GIT_DIR` …), `GIT_CEILING_DIRECTORIES` set to the
//! root so a broken `.git` never makes git silently use an enclosing
//! repository, and `GIT_TERMINAL_PROMPT=0` so a cron job never hangs on a
//! password prompt. Credentials stay git's business (helpers, SSH agent).

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;

/// How much of a failing command's stderr is kept for the report.
const STDERR_KEEP: usize = 4096;

/// A git command that could not be run or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GitError {
    /// The `git` program could not be started at all.
    #[error("cannot run {program:?}: {source}")]
    Spawn {
        program: OsString,
        #[source]
        source: std::io::Error,
    },
    /// Reading the command's output failed.
    #[error("reading output of git {command}: {source}")]
    Io {
        command: String,
        #[source]
        source: std::io::Error,
    },
    /// git ran and exited non-zero.
    #[error("git {command} failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
    /// git's output did not have the documented shape.
    #[error("unexpected output from git {command}: {detail}")]
    Parse { command: String, detail: String },
}

impl GitError {
    /// Whether the git program itself is missing (fatal for the whole run,
    /// unlike a failure inside one repository).
    pub fn is_spawn(&self) -> bool {
        matches!(self, GitError::Spawn { .. })
    }
}

/// Runs git in one repository directory.
#[derive(Debug, Clone)]
pub struct Git {
    program: OsString,
    repo: PathBuf,
    ceiling: PathBuf,
}

/// Variables that would make git act on another repository than `-C DIR`.
const REDIRECTING_ENV: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_NAMESPACE",
    "GIT_COMMON_DIR",
    "GIT_PREFIX",
];

impl Git {
    /// `ceiling` is the directory above the repository (its root): git's
    /// repository discovery never goes above it.
    pub fn new(program: impl Into<OsString>, repo: &Path, ceiling: &Path) -> Self {
        Git {
            program: program.into(),
            repo: repo.to_path_buf(),
            ceiling: ceiling.to_path_buf(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.program);
        c.arg("-C").arg(&self.repo).args(args);
        for var in REDIRECTING_ENV {
            c.env_remove(var);
        }
        c.env("GIT_CEILING_DIRECTORIES", &self.ceiling)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        c
    }

    /// [`Self::command`] with stdout and stderr piped.
    fn piped(&self, args: &[&str]) -> Command {
        let mut c = self.command(args);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    }

    /// The error for a git that could not be started.
    fn spawn_failed(&self, source: std::io::Error) -> GitError {
        GitError::Spawn {
            program: self.program.clone(),
            source,
        }
    }

    fn describe(args: &[&str]) -> String {
        args.join(" ")
    }

    /// Run to completion; `Ok((status, stdout))` whatever the exit status.
    pub fn output_status(&self, args: &[&str]) -> Result<(ExitStatus, Vec<u8>, String), GitError> {
        let out = self
            .piped(args)
            .output()
            .map_err(|e| self.spawn_failed(e))?;
        Ok((out.status, out.stdout, clip_stderr(&out.stderr)))
    }

    /// Run to completion; stdout if the exit status is 0.
    pub fn output(&self, args: &[&str]) -> Result<Vec<u8>, GitError> {
        let (status, stdout, stderr) = self.output_status(args)?;
        if status.success() {
            Ok(stdout)
        } else {
            Err(GitError::Failed {
                command: Self::describe(args),
                status,
                stderr,
            })
        }
    }

    /// Run with stdout streamed to `each` one NUL-terminated token at a time
    /// (the token without its NUL). `each` may stop early by returning an
    /// error, which is passed through after the child is reaped.
    pub fn stream_z<E>(
        &self,
        args: &[&str],
        mut each: impl FnMut(Vec<u8>) -> Result<(), E>,
    ) -> Result<Result<(), E>, GitError> {
        let mut child = self.piped(args).spawn().map_err(|e| self.spawn_failed(e))?;
        let stderr = drain_stderr(&mut child);
        let command = Self::describe(args);
        let mut inner = Ok(());
        let mut read_err = None;
        if let Some(stdout) = child.stdout.take() {
            let mut reader = BufReader::with_capacity(1 << 16, stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(0, &mut buf) {
                    Ok(0) => break,
                    Ok(_) => {
                        if buf.last() == Some(&0) {
                            buf.pop();
                        }
                        if let Err(e) = each(std::mem::take(&mut buf)) {
                            inner = Err(e);
                            break;
                        }
                    }
                    Err(e) => {
                        read_err = Some(e);
                        break;
                    }
                }
            }
        }
        if inner.is_err() || read_err.is_some() {
            // The caller stopped reading: do not leave git blocked on a pipe.
            let _ = child.kill();
        }
        let status = child.wait().map_err(|source| GitError::Io {
            command: command.clone(),
            source,
        })?;
        let stderr = stderr.join().unwrap_or_default();
        if inner.is_err() {
            return Ok(inner);
        }
        if let Some(source) = read_err {
            return Err(GitError::Io { command, source });
        }
        if !status.success() {
            return Err(GitError::Failed {
                command,
                status,
                stderr,
            });
        }
        Ok(Ok(()))
    }
}

fn drain_stderr(child: &mut Child) -> JoinHandle<String> {
    let stderr = child.stderr.take();
    std::thread::spawn(move || {
        let mut all = Vec::new();
        if let Some(mut s) = stderr {
            let _ = s.read_to_end(&mut all);
        }
        clip_stderr(&all)
    })
}

/// Stderr as one line for a report: trimmed, clipped, credentials in URLs
/// redacted.
pub fn clip_stderr(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut one: String = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    if one.len() > STDERR_KEEP {
        let mut cut = STDERR_KEEP;
        while !one.is_char_boundary(cut) {
            cut -= 1;
        }
        one.truncate(cut);
        one.push('…');
    }
    redact_url_credentials(&one)
}

/// Replace the `user:password@` part of every `scheme://user:password@host`
/// in `text` with `***@`, so a remote URL with an embedded token never
/// reaches a log.
pub fn redact_url_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The authority ends at the first '/', whitespace or quote.
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '\'' || c == '"')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// A git file mode, as far as the index cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 100644 or 100755.
    File,
    /// 120000.
    Symlink,
    /// 160000: a submodule commit.
    Gitlink,
    /// 000000: the side does not exist (add / delete).
    Absent,
    /// 040000 or anything else a recursive diff should not produce.
    Other,
}

impl Kind {
    pub fn from_mode(mode: &[u8]) -> Kind {
        match mode {
            b"100644" | b"100755" | b"100664" => Kind::File,
            b"120000" => Kind::Symlink,
            b"160000" => Kind::Gitlink,
            b"000000" => Kind::Absent,
            _ => Kind::Other,
        }
    }
}

/// One record of `git diff-tree -r -z --raw -M`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawChange {
    pub src_kind: Kind,
    pub dst_kind: Kind,
    /// The status letter: A, C, D, M, R, T (U, X never appear between trees).
    pub status: u8,
    /// Source path for R and C, else `None`.
    pub from: Option<Vec<u8>>,
    pub path: Vec<u8>,
}

/// Decoder for `diff-tree --raw -z` output fed one NUL-separated token at a
/// time: `:srcmode dstmode srcsha dstsha STATUS[score]` then one path, or two
/// (source, destination) for R and C.
#[derive(Debug, Default)]
pub struct RawDecoder {
    header: Option<(Kind, Kind, u8)>,
    from: Option<Vec<u8>>,
}

impl RawDecoder {
    /// Feed one token; returns a record when one is complete.
    pub fn push(&mut self, token: Vec<u8>) -> Result<Option<RawChange>, String> {
        let Some((src_kind, dst_kind, status)) = self.header else {
            self.header = Some(parse_raw_header(&token)?);
            return Ok(None);
        };
        let two_paths = matches!(status, b'R' | b'C');
        if two_paths && self.from.is_none() {
            self.from = Some(token);
            return Ok(None);
        }
        self.header = None;
        Ok(Some(RawChange {
            src_kind,
            dst_kind,
            status,
            from: self.from.take(),
            path: token,
        }))
    }

    /// Call at the end of the output: an unfinished record is an error.
    pub fn finish(&self) -> Result<(), String> {
        if self.header.is_some() {
            Err("output ends inside a record".to_string())
        } else {
            Ok(())
        }
    }
}

fn parse_raw_header(token: &[u8]) -> Result<(Kind, Kind, u8), String> {
    let bad = || format!("bad raw diff header {:?}", token.escape_ascii().to_string());
    let body = token.strip_prefix(b":").ok_or_else(bad)?;
    let fields: Vec<&[u8]> = body.split(|b| *b == b' ').collect();
    if fields.len() != 5 {
        return Err(bad());
    }
    let status = *fields[4].first().ok_or_else(bad)?;
    if !fields[4][1..].iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    Ok((
        Kind::from_mode(fields[0]),
        Kind::from_mode(fields[1]),
        status,
    ))
}

/// One entry of `git ls-tree -r -z`: `mode SP type SP sha TAB path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    pub kind: Kind,
    pub path: Vec<u8>,
}

pub fn parse_ls_tree_entry(token: &[u8]) -> Result<TreeEntry, String> {
    let bad = || format!("bad ls-tree entry {:?}", token.escape_ascii().to_string());
    let tab = token.iter().position(|b| *b == b'\t').ok_or_else(bad)?;
    let (meta, path) = (&token[..tab], &token[tab + 1..]);
    let mode = meta.split(|b| *b == b' ').next().ok_or_else(bad)?;
    if path.is_empty() {
        return Err(bad());
    }
    Ok(TreeEntry {
        kind: Kind::from_mode(mode),
        path: path.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(tokens: &[&[u8]]) -> Vec<RawChange> {
        let mut d = RawDecoder::default();
        let mut out = Vec::new();
        for t in tokens {
            if let Some(c) = d.push(t.to_vec()).expect("valid") {
                out.push(c);
            }
        }
        d.finish().expect("complete");
        out
    }

    #[test]
    fn raw_records_with_one_and_two_paths_decode() {
        let z = "0".repeat(40);
        let a = "a".repeat(40);
        let h1 = format!(":000000 100644 {z} {a} A");
        let h2 = format!(":100644 100644 {a} {a} R100");
        let h3 = format!(":100644 120000 {a} {a} T");
        let got = decode(&[
            h1.as_bytes(),
            b"new file",
            h2.as_bytes(),
            b"old\nname",
            b"new name",
            h3.as_bytes(),
            b"link",
        ]);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].status, b'A');
        assert_eq!(got[0].src_kind, Kind::Absent);
        assert_eq!(got[0].path, b"new file");
        assert_eq!(got[1].from.as_deref(), Some(&b"old\nname"[..]));
        assert_eq!(got[1].path, b"new name");
        assert_eq!(got[2].dst_kind, Kind::Symlink);
    }

    #[test]
    fn truncated_raw_output_is_an_error_not_a_silent_drop() {
        let mut d = RawDecoder::default();
        let h = format!(":100644 100644 {0} {0} M", "b".repeat(40));
        assert!(d.push(h.into_bytes()).expect("header").is_none());
        assert!(d.finish().is_err());
        assert!(RawDecoder::default().push(b"garbage".to_vec()).is_err());
    }

    #[test]
    fn ls_tree_entry_keeps_tabs_and_bytes_in_paths() {
        let e = parse_ls_tree_entry(b"160000 commit 0123\tsub/mod\xff\tx").expect("ok");
        assert_eq!(e.kind, Kind::Gitlink);
        assert_eq!(e.path, b"sub/mod\xff\tx");
        assert!(parse_ls_tree_entry(b"no tab here").is_err());
    }

    #[test]
    fn credentials_in_urls_never_reach_the_log() {
        let s = redact_url_credentials(
            "fatal: unable to access 'https://bob:s3cr3t@example.com/r.git/': 403",
        );
        assert_eq!(
            s,
            "fatal: unable to access 'https://***@example.com/r.git/': 403"
        );
        assert_eq!(
            redact_url_credentials("ssh://git@host/x and file:///tmp/r"),
            "ssh://***@host/x and file:///tmp/r"
        );
    }
}
