//! Reading the local index without writing anything: `index export` (every
//! object, sorted by repo and path) and `search` (ranked hits with marked
//! snippets). Both open the index through [`ReadOnlyDir`], so they work on a
//! read-only state dir and while a sync writes; a state dir without an index
//! is [`ReadError::NoIndex`], never an empty answer.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::ops::Bound;
use tantivy::collector::TopDocs;
use tantivy::directory::error::{DeleteError, LockError, OpenReadError, OpenWriteError};
use tantivy::directory::{
    Directory, DirectoryLock, FileHandle, Lock, MmapDirectory, WatchCallback, WatchHandle,
    WritePtr, META_LOCK,
};

use tantivy::query::{
    BooleanQuery, ConstScoreQuery, Occur, QueryParser, QueryParserError, RangeQuery, TermQuery,
};
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::tokenizer::TokenizerManager;
use tantivy::{Index, TantivyDocument, Term};

use super::tokenizer::{self, CodeTokenizer};
use super::{fields_of, index_dir, reader, Fields, Format};
use crate::target::search::{ChunkHit, Mode, Query};
use crate::target::Exported;

/// Why `index export` or `search` could not answer from the local index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// There is no index where we looked: a mistyped `--state-dir`, or a
    /// state dir that never ran a local sync. A usage error (exit 2).
    #[error("no local index at {} ({why}): run `elysiactl index sync` first, or pass --state-dir", .path.display())]
    NoIndex { path: PathBuf, why: &'static str },
    /// The index is there but cannot be read (permissions, I/O, damage).
    #[error("cannot read the local index at {}: {message}", .path.display())]
    Unreadable { path: PathBuf, message: String },
    /// The query does not parse. A usage error (exit 2).
    #[error("bad query {query:?}: {reason}")]
    BadQuery { query: String, reason: String },
    /// `--mode hybrid|semantic` on the local index, which has no vectors.
    /// A usage error (exit 2).
    #[error("--mode {mode} needs vectors, and the local index has none: use --mode keyword, or search a Weaviate collection with a vectorizer (--weaviate-url)")]
    NoVectors { mode: &'static str },
}

impl ReadError {
    /// The process exit code: 2 for a usage error (no index there, a bad
    /// query), 3 when an index exists but cannot be read.
    pub fn exit_code(&self) -> u8 {
        match self {
            ReadError::NoIndex { .. }
            | ReadError::BadQuery { .. }
            | ReadError::NoVectors { .. } => 2,
            ReadError::Unreadable { .. } => 3,
        }
    }
}

/// The index directory, for reading only. tantivy's reader takes
/// `.tantivy-meta.lock` while it opens segment files, so that a writer's
/// garbage collection cannot delete them under it; `MmapDirectory` creates
/// that file for writing, which fails on a read-only state dir. Here the
/// lock file is opened read-only and locked shared (flock, the writer's
/// collection locks it exclusive), and every write refuses.
#[derive(Clone, Debug)]
struct ReadOnlyDir {
    inner: MmapDirectory,
    path: PathBuf,
}

fn read_only(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("{} is opened read-only", path.display()),
    )
}

impl Directory for ReadOnlyDir {
    fn get_file_handle(&self, path: &Path) -> Result<Arc<dyn FileHandle>, OpenReadError> {
        self.inner.get_file_handle(path)
    }

    fn exists(&self, path: &Path) -> Result<bool, OpenReadError> {
        self.inner.exists(path)
    }

    fn atomic_read(&self, path: &Path) -> Result<Vec<u8>, OpenReadError> {
        self.inner.atomic_read(path)
    }

    fn delete(&self, path: &Path) -> Result<(), DeleteError> {
        Err(DeleteError::IoError {
            io_error: Arc::new(read_only(path)),
            filepath: path.to_owned(),
        })
    }

    fn open_write(&self, path: &Path) -> Result<WritePtr, OpenWriteError> {
        Err(OpenWriteError::wrap_io_error(
            read_only(path),
            path.to_owned(),
        ))
    }

    fn atomic_write(&self, path: &Path, _data: &[u8]) -> io::Result<()> {
        Err(read_only(path))
    }

    fn sync_directory(&self) -> io::Result<()> {
        Ok(())
    }

    fn acquire_lock(&self, lock: &Lock) -> Result<DirectoryLock, LockError> {
        if lock.filepath != META_LOCK.filepath {
            return Err(LockError::wrap_io_error(read_only(&lock.filepath)));
        }
        match std::fs::File::open(self.path.join(&lock.filepath)) {
            Ok(file) => {
                file.lock_shared().map_err(LockError::wrap_io_error)?;
                // Closing the file releases the lock.
                Ok(DirectoryLock::from(Box::new(file)))
            }
            // Every writer creates the lock file when it opens (it
            // collects garbage first), so no writer has ever run here and
            // there is no collection to exclude.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(DirectoryLock::from(Box::new(()))),
            Err(e) => Err(LockError::wrap_io_error(e)),
        }
    }

    fn watch(&self, _callback: WatchCallback) -> tantivy::Result<WatchHandle> {
        // Readers here reload manually (never).
        Ok(WatchHandle::empty())
    }
}

/// Open the index of `state_dir` for reading, writing nothing anywhere.
pub(super) fn open_for_reading(state_dir: &Path) -> Result<(Index, Fields), ReadError> {
    let dir = index_dir(state_dir);
    let unreadable = |e: &dyn std::fmt::Display| ReadError::Unreadable {
        path: dir.clone(),
        message: e.to_string(),
    };
    match std::fs::metadata(dir.join("meta.json")) {
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            let why = match std::fs::metadata(state_dir) {
                Err(_) => "the state dir does not exist",
                Ok(m) if !m.is_dir() => "the state dir is not a directory",
                Ok(_) if !dir.exists() => "the state dir has no local index",
                Ok(_) => "the index directory has no meta.json",
            };
            return Err(ReadError::NoIndex {
                path: dir.clone(),
                why,
            });
        }
        Err(e) => return Err(unreadable(&e)),
    }
    let inner = MmapDirectory::open(&dir).map_err(|e| unreadable(&e))?;
    let ro = ReadOnlyDir {
        inner,
        path: dir.clone(),
    };
    let index = Index::open(ro).map_err(|e| unreadable(&e))?;
    super::register_tokenizers(&index);
    let fields = fields_of(&index.schema()).map_err(|e| unreadable(&e))?;
    Ok((index, fields))
}

fn read_searcher(state_dir: &Path, index: &Index) -> Result<tantivy::Searcher, ReadError> {
    reader(index)
        .map(|r| r.searcher())
        .map_err(|e| ReadError::Unreadable {
            path: index_dir(state_dir),
            message: e.to_string(),
        })
}

/// Every object of the index of `state_dir`, sorted by repo and path.
/// Reads without writing anything, so it works on a read-only state dir
/// and while a sync runs.
pub fn export(state_dir: &Path) -> Result<Vec<Exported>, ReadError> {
    export_with(state_dir, false)
}

/// [`export`], with each chunk's text when `content`.
pub fn export_with(state_dir: &Path, content: bool) -> Result<Vec<Exported>, ReadError> {
    let mut out = Vec::new();
    for_each(state_dir, content, &mut |o| out.push(o))?;
    out.sort_by(|a, b| (&a.repo, &a.path, &a.id).cmp(&(&b.repo, &b.path, &b.id)));
    Ok(out)
}

/// Every object of the index of `state_dir`, one at a time, in index order.
pub fn for_each(
    state_dir: &Path,
    content: bool,
    each: &mut dyn FnMut(Exported),
) -> Result<(), ReadError> {
    let (index, f) = open_for_reading(state_dir)?;
    let searcher = read_searcher(state_dir, &index)?;
    let bad = |what: &str, e: &dyn std::fmt::Display| ReadError::Unreadable {
        path: index_dir(state_dir),
        message: format!("{what}: {e}"),
    };
    for seg in searcher.segment_readers() {
        let store = seg
            .get_store_reader(64)
            .map_err(|e| bad("read store", &e))?;
        for doc_id in seg.doc_ids_alive() {
            let doc: TantivyDocument = store.get(doc_id).map_err(|e| bad("read", &e))?;
            let mut o = exported(&doc, &f);
            if content {
                o.content = Some(text(&doc, f.content));
            }
            each(o);
        }
    }
    Ok(())
}

/// A stored string field ("" when absent).
fn text(doc: &TantivyDocument, field: tantivy::schema::Field) -> String {
    doc.get_first(field)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Where a stored document sits in its file. A whole-file object from before
/// chunked objects is chunk 0 of 1 covering the file.
struct Place {
    chunk: u64,
    chunk_count: u64,
    byte_start: u64,
    byte_end: u64,
    start_line: u64,
    end_line: u64,
}

fn place(doc: &TantivyDocument, f: &Fields) -> Place {
    let int = |field| doc.get_first(field).and_then(|v| v.as_u64());
    let size = int(f.size).unwrap_or(0);
    match &f.chunked {
        Some(cf) => Place {
            chunk: int(cf.chunk).unwrap_or(0),
            chunk_count: int(cf.chunk_count).unwrap_or(1),
            byte_start: int(cf.byte_start).unwrap_or(0),
            byte_end: int(cf.byte_end).unwrap_or(size),
            start_line: int(cf.start_line).unwrap_or(1),
            end_line: int(cf.end_line).unwrap_or(1),
        },
        None => {
            // Lossy decoding never touches '\n', so the content's lines are
            // the file's.
            let content = text(doc, f.content);
            let body = content.strip_suffix('\n').unwrap_or(&content);
            Place {
                chunk: 0,
                chunk_count: 1,
                byte_start: 0,
                byte_end: size,
                start_line: 1,
                end_line: 1 + body.bytes().filter(|&b| b == b'\n').count() as u64,
            }
        }
    }
}

fn exported(doc: &TantivyDocument, f: &Fields) -> Exported {
    let p = place(doc, f);
    Exported {
        id: text(doc, f.id),
        repo: text(doc, f.repo),
        path: text(doc, f.path),
        chunk: p.chunk,
        chunk_count: p.chunk_count,
        byte_start: p.byte_start,
        byte_end: p.byte_end,
        start_line: p.start_line,
        end_line: p.end_line,
        size: doc.get_first(f.size).and_then(|v| v.as_u64()).unwrap_or(0),
        content_sha256: text(doc, f.sha256),
        content: None,
    }
}

/// A search hit: a chunk of a file, with its lines.
pub type Hit = ChunkHit;

/// What is wrong with a query, in a user's words.
fn query_problem(e: &QueryParserError) -> String {
    const QUOTE: &str = "put text in \"double quotes\" to search for it as a phrase";
    match e {
        QueryParserError::SyntaxError(_) => {
            format!("syntax error (an unbalanced parenthesis or quote, or a misplaced operator such as `:` `(` `)` `+` `-` `^`); {QUOTE}")
        }
        QueryParserError::FieldDoesNotExist(field) => format!(
            "there is no field `{field}` (fields: content, path_text, path, repo, contentSha256, size); {QUOTE}"
        ),
        QueryParserError::ExpectedInt(_) => {
            "`size:` takes a whole number of bytes, e.g. size:1024".to_owned()
        }
        QueryParserError::AllButQueryForbidden => {
            "only excluded terms (`-word`): add a word to look for".to_owned()
        }
        other => format!("{other}; {QUOTE}"),
    }
}

/// BM25 search of the index of `state_dir`. Words match the content and
/// the words of the repo-relative path, both cut by the code tokenizer
/// ([`tokenizer`]: identifiers by their parts and whole); `repo:NAME` and
/// `path:REL/PATH` match those fields exactly. A query that does not parse
/// is an error.
pub fn search(state_dir: &Path, query: &str, limit: usize) -> Result<Vec<Hit>, ReadError> {
    search_chunks(state_dir, &Query::keyword(query, limit), limit).map(|(hits, _)| hits)
}

/// [`search`] with the filters of `q` (`--repo`, `--path`): the best chunk
/// hits (up to [`Query::chunk_limit`]), for [`crate::target::search::group`].
/// Only keyword mode: the local index has no vectors. With the hits, the
/// index's format: one of the old tokenizer answers as it was built.
pub fn search_with(state_dir: &Path, q: &Query) -> Result<(Vec<Hit>, Format), ReadError> {
    search_chunks(state_dir, q, q.chunk_limit())
}

/// The smallest string above every string that starts with `prefix` (in
/// UTF-8 byte order, which is code point order), if there is one.
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (last as u32 + 1..=char::MAX as u32).find_map(char::from_u32);
        if let Some(n) = next {
            chars.push(n);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

fn search_chunks(
    state_dir: &Path,
    q: &Query,
    limit: usize,
) -> Result<(Vec<Hit>, Format), ReadError> {
    let query = q.text.as_str();
    let bad_query = |reason: String| ReadError::BadQuery {
        query: query.to_owned(),
        reason,
    };
    if q.mode != Mode::Keyword {
        return Err(ReadError::NoVectors {
            mode: q.mode.name(),
        });
    }
    if query.trim().is_empty() {
        return Err(bad_query("the query is empty".to_owned()));
    }
    let (index, f) = open_for_reading(state_dir)?;
    // Query words through the query side of the index's tokenizer: the
    // parts of an identifier, as a phrase when there are several.
    let words = TokenizerManager::default();
    words.register(tokenizer::NAME, CodeTokenizer::query());
    let mut parser = QueryParser::new(index.schema(), vec![f.content, f.path_text], words);
    parser.set_conjunction_by_default();
    let parsed = parser
        .parse_query(query)
        .map_err(|e| bad_query(query_problem(&e)))?;
    let mut must: Vec<(Occur, Box<dyn tantivy::query::Query>)> = vec![(Occur::Must, parsed)];
    // The whole of each identifier of the query (`getusername` for
    // `getUserName`) scores where it stands as one word, so the identifier
    // itself ranks above its parts found apart.
    if f.code_words {
        for whole in tokenizer::pieces(query, true)
            .into_iter()
            .filter(|p| p.whole)
        {
            for field in [f.content, f.path_text] {
                let t = TermQuery::new(
                    Term::from_field_text(field, &whole.text),
                    IndexRecordOption::WithFreqs,
                );
                must.push((Occur::Should, Box::new(t)));
            }
        }
    }
    // The filters narrow the hits without scoring.
    if !q.repos.is_empty() {
        let repos: Vec<(Occur, Box<dyn tantivy::query::Query>)> = q
            .repos
            .iter()
            .map(|r| {
                let t = TermQuery::new(Term::from_field_text(f.repo, r), IndexRecordOption::Basic);
                (Occur::Should, Box::new(t) as Box<dyn tantivy::query::Query>)
            })
            .collect();
        must.push((
            Occur::Must,
            Box::new(ConstScoreQuery::new(
                Box::new(BooleanQuery::new(repos)),
                0.0,
            )),
        ));
    }
    if let Some(prefix) = q.path_prefix.as_deref().filter(|p| !p.is_empty()) {
        let upper = match prefix_end(prefix) {
            Some(end) => Bound::Excluded(Term::from_field_text(f.path, &end)),
            None => Bound::Unbounded,
        };
        let range = RangeQuery::new(
            Bound::Included(Term::from_field_text(f.path, prefix)),
            upper,
        );
        must.push((
            Occur::Must,
            Box::new(ConstScoreQuery::new(Box::new(range), 0.0)),
        ));
    }
    let filtered = BooleanQuery::new(must);
    let searcher = read_searcher(state_dir, &index)?;
    let bad = |what: &str, e: &dyn std::fmt::Display| ReadError::Unreadable {
        path: index_dir(state_dir),
        message: format!("{what}: {e}"),
    };
    let top = searcher
        .search(
            &filtered,
            &TopDocs::with_limit(limit.max(1)).order_by_score(),
        )
        .map_err(|e| bad("search", &e))?;
    let mut hits = Vec::new();
    for (score, addr) in top {
        let doc: TantivyDocument = searcher.doc(addr).map_err(|e| bad("read", &e))?;
        let s = |field| text(&doc, field);
        let at = place(&doc, &f);
        hits.push(Hit {
            id: s(f.id),
            score,
            repo: s(f.repo),
            path: s(f.path),
            start_line: at.start_line,
            end_line: at.end_line,
            chunk: at.chunk,
            content: s(f.content),
        });
    }
    let format = if f.code_words {
        Format::Current
    } else {
        Format::OldTokenizer
    };
    Ok((hits, format))
}
