//! The embedded local index: a tantivy full-text index in
//! `<state-dir>/index/`.
//!
//! Objects are keyed by their id (a raw `id` term): an upsert deletes the id
//! then adds the document, a delete deletes the id. A batch is one tantivy
//! commit; `commit` returns after the segment files and `meta.json` are
//! written and fsynced (tantivy writes meta.json atomically), and `apply`
//! then fsyncs the index directory so the rename itself is durable: `apply`
//! returning `Ok` means the batch survives a crash or a power cut. Files a
//! killed commit left behind are collected when the next writer opens.
//!
//! `index export` and `search` read through a read-only directory: nothing is
//! created, written or deleted, so they work on a read-only state dir and
//! while a sync writes. A state dir without an index is an error
//! ([`ReadError::NoIndex`]), never an empty answer.
//!
//! This file holds the writing side ([`LocalIndex`], the sync target);
//! `read` the reading side (`index export`, `search`), which shares only
//! the schema.

mod read;
pub mod tokenizer;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tantivy::collector::DocSetCollector;
use tantivy::directory::MmapDirectory;
use tantivy::query::TermQuery;
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, INDEXED, STORED,
    STRING,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

pub use super::Exported;
use super::{Document, Error, Op, OpOutcome, Target};
use crate::object::ChunkSize;
pub use read::{export, export_with, for_each, search, search_with, Hit, ReadError};
use tokenizer::CodeTokenizer;

/// Memory the index writer may buffer before flushing a segment.
const WRITER_HEAP: usize = 64 << 20;

#[derive(Clone, Copy)]
struct Fields {
    id: Field,
    repo: Field,
    path: Field,
    path_text: Field,
    content: Field,
    sha256: Field,
    size: Field,
    /// Whether `content` and `path_text` are cut by the code tokenizer
    /// (else by the legacy one: see [`format`]).
    code_words: bool,
    /// `None` in an index from before chunked objects (whole-file objects,
    /// keyed by `id` alone): see [`LocalIndex::open`].
    chunked: Option<ChunkFields>,
}

/// Which tokenizer an index's words went through.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Words {
    Code,
    Legacy,
    Unknown(String),
}

/// The fields of chunked objects.
#[derive(Clone, Copy)]
struct ChunkFields {
    /// The file's key (its chunk 0 id) on every chunk: a file's chunks are
    /// deleted together by this term.
    file: Field,
    chunk: Field,
    chunk_count: Field,
    byte_start: Field,
    byte_end: Field,
    start_line: Field,
    end_line: Field,
}

/// The schema of a new index: `content` and `path_text` through the code
/// tokenizer ([`tokenizer::NAME`], which the schema records).
fn schema() -> Schema {
    schema_with(tokenizer::NAME)
}

/// The schema with `content` and `path_text` through the tokenizer `name`
/// (an older one builds the fixtures of the tests that an old index is
/// rebuilt).
#[doc(hidden)]
pub fn schema_with(name: &str) -> Schema {
    let mut b = Schema::builder();
    let words = TextFieldIndexing::default()
        .set_tokenizer(name)
        .set_index_option(IndexRecordOption::WithFreqsAndPositions);
    b.add_text_field("id", STRING | STORED);
    b.add_text_field("repo", STRING | STORED);
    b.add_text_field("path", STRING | STORED);
    b.add_text_field(
        "path_text",
        TextOptions::default().set_indexing_options(words.clone()),
    );
    b.add_text_field(
        "content",
        TextOptions::default()
            .set_indexing_options(words)
            .set_stored(),
    );
    b.add_text_field("contentSha256", STRING | STORED);
    b.add_u64_field("size", INDEXED | STORED);
    b.add_text_field("file", STRING | STORED);
    b.add_u64_field("chunk", INDEXED | STORED);
    for name in PLACE {
        b.add_u64_field(name, STORED);
    }
    b.build()
}

/// The stored integer fields of a chunk's place in its file (`chunk`, the
/// indexed one, aside).
const PLACE: [&str; 5] = ["chunkCount", "byteStart", "byteEnd", "startLine", "endLine"];

/// Make the tokenizers an index may name known to it (tantivy's own,
/// among them the legacy `default`, are there already).
#[doc(hidden)]
pub fn register_tokenizers(index: &Index) {
    index
        .tokenizers()
        .register(tokenizer::NAME, CodeTokenizer::index());
}

/// The fields `names` of `schema`, in that order.
fn named<const N: usize>(schema: &Schema, names: [&str; N]) -> Result<[Field; N], String> {
    let mut out = [Field::from_field_id(0); N];
    for (slot, name) in out.iter_mut().zip(names) {
        *slot = schema.get_field(name).map_err(|_| {
            format!("the index has no field {name:?}: it is not an elysiactl index")
        })?;
    }
    Ok(out)
}

/// The tokenizer of an index's `content`.
fn words_of(schema: &Schema, content: Field) -> Words {
    let name = match schema.get_field_entry(content).field_type() {
        tantivy::schema::FieldType::Str(o) => {
            o.get_indexing_options().map(|i| i.tokenizer().to_owned())
        }
        _ => None,
    };
    match name.as_deref() {
        Some(tokenizer::NAME) => Words::Code,
        Some(tokenizer::LEGACY) => Words::Legacy,
        other => Words::Unknown(other.unwrap_or("none").to_owned()),
    }
}

/// The fields of an index's own schema (a new one, or one from before
/// chunked objects).
fn fields_of(schema: &Schema) -> Result<Fields, String> {
    let chunked = match schema.get_field("file") {
        Err(_) => None,
        Ok(file) => {
            let [chunk] = named(schema, ["chunk"])?;
            let [chunk_count, byte_start, byte_end, start_line, end_line] = named(schema, PLACE)?;
            Some(ChunkFields {
                file,
                chunk,
                chunk_count,
                byte_start,
                byte_end,
                start_line,
                end_line,
            })
        }
    };
    let [id, repo, path, path_text, content, sha256, size] = named(
        schema,
        [
            "id",
            "repo",
            "path",
            "path_text",
            "content",
            "contentSha256",
            "size",
        ],
    )?;
    if let Words::Unknown(name) = words_of(schema, content) {
        return Err(format!(
            "its content is tokenized by {name:?}, which this elysiactl does not know \
             (an index written by a newer version?)"
        ));
    }
    Ok(Fields {
        id,
        repo,
        path,
        path_text,
        content,
        sha256,
        size,
        code_words: words_of(schema, content) == Words::Code,
        chunked,
    })
}

fn fatal(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Fatal {
        message: format!("local index: {what}: {e}"),
    }
}

/// Where the index of a state dir lives.
pub fn index_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("index")
}

/// Open (or create) the index of a state dir, with the schema it was built
/// with.
fn open_index(state_dir: &Path) -> Result<(Index, Fields), Error> {
    let dir = index_dir(state_dir);
    crate::util::create_private_dir(&dir).map_err(|e| fatal("create directory", e))?;
    let mmap = MmapDirectory::open(&dir).map_err(|e| fatal("open directory", e))?;
    let index = if Index::exists(&mmap).map_err(|e| fatal("open", e))? {
        Index::open(mmap).map_err(|e| fatal("open", e))?
    } else {
        Index::create(mmap, schema(), tantivy::IndexSettings::default())
            .map_err(|e| fatal("create", e))?
    };
    register_tokenizers(&index);
    let fields = fields_of(&index.schema()).map_err(|e| fatal("open", e))?;
    Ok((index, fields))
}

/// What a sync must do about the format of a state dir's local index
/// before it writes to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// No index yet, or one of this version's format.
    Current,
    /// Built with the tokenizer from before the code tokenizer (identifiers
    /// not split): a sync rebuilds it from the disk, as `--rechunk` does.
    OldTokenizer,
}

impl Format {
    /// Why the index is rebuilt, for the sync's message.
    pub fn reason(self) -> Option<&'static str> {
        match self {
            Format::Current => None,
            Format::OldTokenizer => Some(
                "it was built before identifiers were split into words (getUserName as one word)",
            ),
        }
    }
}

/// The format of the local index of `state_dir`, read without writing.
pub fn format(state_dir: &Path) -> Result<Format, ReadError> {
    rebuild(state_dir, 0)
}

/// What a sync at `--chunk-size chunk_size` does about the format of the
/// local index of `state_dir`: [`Format::OldTokenizer`] when it rebuilds
/// it. An index of whole-file objects asked for chunks is left to
/// [`LocalIndex::open`], which refuses it with the choice (`--rechunk` or
/// `--chunk-size 0`): the rebuild never picks a chunking for the user.
pub fn rebuild(state_dir: &Path, chunk_size: u64) -> Result<Format, ReadError> {
    match read::open_for_reading(state_dir) {
        Ok((_, f)) if !f.code_words && (f.chunked.is_some() || chunk_size == 0) => {
            Ok(Format::OldTokenizer)
        }
        Ok(_) | Err(ReadError::NoIndex { .. }) => Ok(Format::Current),
        Err(e) => Err(e),
    }
}

/// Remove the index of a state dir (before a re-chunk rebuilds it).
pub fn remove_index(state_dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(index_dir(state_dir)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// The local index as a sync target.
pub struct LocalIndex {
    state_dir: PathBuf,
    index: Index,
    fields: Fields,
    writer: Mutex<Option<IndexWriter>>,
}

impl LocalIndex {
    /// Open the index of a state dir for writing objects cut at `size`. An
    /// index from before chunked objects holds whole-file objects: it can go
    /// on at `--chunk-size 0`; any other size is refused with the way out
    /// (`--rechunk`, which rebuilds it).
    pub fn open(state_dir: &Path, size: ChunkSize) -> Result<LocalIndex, Error> {
        let (index, fields) = open_index(state_dir)?;
        if fields.chunked.is_none() && !size.is_whole_file() {
            return Err(Error::Fatal {
                message: format!(
                    "the local index at {} holds whole-file objects from before chunked objects, \
                     and this run asks for --chunk-size {size}: run once with --rechunk to rebuild \
                     it in chunks (resumable), or pass --chunk-size 0 to keep one object per file",
                    index_dir(state_dir).display()
                ),
            });
        }
        Ok(LocalIndex {
            state_dir: state_dir.to_owned(),
            index,
            fields,
            writer: Mutex::new(None),
        })
    }

    fn with_writer<T>(
        &self,
        f: impl FnOnce(&mut IndexWriter) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut guard = self
            .writer
            .lock()
            .map_err(|_| fatal("writer", "poisoned by an earlier panic"))?;
        if guard.is_none() {
            let w = self
                .index
                .writer_with_num_threads(1, WRITER_HEAP)
                .map_err(|e| fatal("open writer", e))?;
            // A run killed inside a commit leaves files that `meta.json`
            // does not reference (new segments, `<segment>.<opstamp>.del`).
            // Replaying the batch from the same opstamp would want the same
            // delete-file name and fail with FileAlreadyExists, so collect
            // them before the first commit. tantivy lists every file it
            // creates in `.managed.json` before creating it, so nothing a
            // crash left behind escapes this.
            w.garbage_collect_files()
                .wait()
                .map_err(|e| fatal("collect files left by an interrupted commit", e))?;
            *guard = Some(w);
        }
        match guard.as_mut() {
            Some(w) => {
                let r = f(w);
                if r.is_err() {
                    // A writer that failed a commit may hold half a batch:
                    // drop it; the next attempt starts from the last commit.
                    *guard = None;
                }
                r
            }
            None => Err(fatal("writer", "unavailable")),
        }
    }

    /// The tantivy documents of a file: one per chunk (one in all in an
    /// index from before chunks, which is only written at chunk size 0).
    fn to_docs(&self, d: &Document) -> Vec<TantivyDocument> {
        let f = &self.fields;
        let key = d.id.to_string();
        d.chunks
            .iter()
            .map(|c| {
                let mut doc = TantivyDocument::default();
                doc.add_text(f.id, c.id.to_string());
                doc.add_text(f.repo, &c.repo);
                doc.add_text(f.path, &c.path);
                doc.add_text(f.path_text, &c.path);
                doc.add_text(f.content, &c.content);
                doc.add_text(f.sha256, &c.content_sha256);
                doc.add_u64(f.size, c.size);
                if let Some(cf) = &f.chunked {
                    doc.add_text(cf.file, &key);
                    doc.add_u64(cf.chunk, u64::from(c.chunk));
                    doc.add_u64(cf.chunk_count, u64::from(c.chunk_count));
                    doc.add_u64(cf.byte_start, c.byte_start);
                    doc.add_u64(cf.byte_end, c.byte_end);
                    doc.add_u64(cf.start_line, c.start_line);
                    doc.add_u64(cf.end_line, c.end_line);
                }
                doc
            })
            .collect()
    }

    /// Delete every object of the file whose key is `key`: its chunks, and
    /// a whole-file object from before chunks (its id is the key).
    fn delete_file(&self, w: &mut IndexWriter, key: &str) {
        w.delete_term(Term::from_field_text(self.fields.id, key));
        if let Some(cf) = &self.fields.chunked {
            w.delete_term(Term::from_field_text(cf.file, key));
        }
    }

    /// Wait for background merges (call before exiting).
    pub fn close(&self) {
        if let Ok(mut g) = self.writer.lock() {
            if let Some(w) = g.take() {
                let _ = w.wait_merging_threads();
            }
        }
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }
}

impl Target for LocalIndex {
    fn describe(&self) -> String {
        format!("local index at {}", index_dir(&self.state_dir).display())
    }

    fn prepare(&self) -> Result<(), Error> {
        self.with_writer(|_| Ok(()))
    }

    fn apply(&self, ops: &[Op]) -> Result<Vec<OpOutcome>, Error> {
        self.with_writer(|w| {
            // One commit: a reader sees a file's old chunks or its new
            // ones, never neither and never a mix.
            for op in ops {
                self.delete_file(w, &op.id().to_string());
                if let Op::Upsert(d) = op {
                    for doc in self.to_docs(d) {
                        w.add_document(doc).map_err(|e| fatal("add document", e))?;
                    }
                }
            }
            w.commit().map_err(|e| fatal("commit", e))?;
            // tantivy renames the new meta.json into place but fsyncs the
            // directory only before the rename: without this a power cut
            // could lose the rename, and with it a batch the WAL already
            // holds as applied.
            std::fs::File::open(index_dir(&self.state_dir))
                .and_then(|d| d.sync_all())
                .map_err(|e| fatal("sync index directory", e))?;
            Ok(vec![OpOutcome::Ok; ops.len()])
        })
    }

    fn export(&self, content: bool) -> Result<Vec<Exported>, Error> {
        read::export_with(&self.state_dir, content).map_err(|e| fatal("export", e))
    }

    fn scan(&self, content: bool, each: &mut dyn FnMut(Exported)) -> Result<(), Error> {
        read::for_each(&self.state_dir, content, each).map_err(|e| fatal("read", e))
    }

    fn is_empty(&self) -> Result<Option<bool>, Error> {
        let reader = reader(&self.index)?;
        Ok(Some(reader.searcher().num_docs() == 0))
    }

    fn list_repo(&self, repo: &str) -> Result<Vec<String>, Error> {
        let reader = reader(&self.index)?;
        let searcher = reader.searcher();
        let q = TermQuery::new(
            Term::from_field_text(self.fields.repo, repo),
            IndexRecordOption::Basic,
        );
        let hits = searcher
            .search(&q, &DocSetCollector)
            .map_err(|e| fatal("search", e))?;
        let mut out = Vec::with_capacity(hits.len());
        for addr in hits {
            let doc: TantivyDocument = searcher.doc(addr).map_err(|e| fatal("read", e))?;
            if let Some(p) = doc.get_first(self.fields.path).and_then(|v| v.as_str()) {
                out.push(p.to_owned());
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

fn reader(index: &Index) -> Result<IndexReader, Error> {
    index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()
        .map_err(|e| fatal("open reader", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::document;

    #[test]
    fn upsert_replaces_and_delete_removes_by_id() {
        let t = tempfile::tempdir().unwrap();
        let idx = LocalIndex::open(t.path(), ChunkSize::DEFAULT).unwrap();
        let a = document("R", "a.rs", b"fn alpha() {}");
        let b = document("R", "b.rs", b"fn beta() {}");
        idx.apply(&[Op::Upsert(a.clone()), Op::Upsert(b.clone())])
            .unwrap();
        let a2 = document("R", "a.rs", b"fn gamma() {}");
        idx.apply(&[
            Op::Upsert(a2.clone()),
            Op::Delete {
                id: b.id,
                repo: "R".into(),
                path: "b.rs".into(),
            },
            Op::Upsert(a2.clone()),
        ])
        .unwrap();
        idx.close();
        let all = export(t.path()).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].content_sha256, a2.content_sha256);
        assert_eq!(all[0].id, a2.id.to_string());
        let hits = search(t.path(), "gamma", 5).unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].path, "a.rs");
        assert!(search(t.path(), "alpha", 5).unwrap().is_empty());
        let idx = LocalIndex::open(t.path(), ChunkSize::DEFAULT).unwrap();
        assert_eq!(idx.list_repo("R").unwrap(), vec!["a.rs".to_string()]);
        assert!(idx.list_repo("Other").unwrap().is_empty());
    }

    /// A SIGKILL between a commit's delete file and its `meta.json` leaves
    /// `<segment>.<opstamp>.del` behind, unreferenced. The next run replays
    /// the same batch from the same opstamp, so its commit wants the very same
    /// file name: the orphan must be collected when the writer opens
    /// (regression: CI saw `FileAlreadyExists(".. .del")` after a kill).
    #[test]
    fn commit_after_a_kill_between_delete_file_and_meta_succeeds() {
        let t = tempfile::tempdir().unwrap();
        let dir = index_dir(t.path());
        let a = document("R", "a.rs", b"fn alpha() {}");
        let b = document("R", "b.rs", b"fn beta() {}");
        let idx = LocalIndex::open(t.path(), ChunkSize::DEFAULT).unwrap();
        idx.apply(&[Op::Upsert(a.clone()), Op::Upsert(b.clone())])
            .unwrap();
        idx.close();
        drop(idx);
        let meta_before = std::fs::read(dir.join("meta.json")).unwrap();
        let files = |d: &Path| -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        let before = files(&dir);

        // The second batch deletes a document of the first segment, so its
        // commit writes a delete file.
        let a2 = document("R", "a.rs", b"fn gamma() {}");
        let batch = [Op::Upsert(a2.clone())];
        let idx = LocalIndex::open(t.path(), ChunkSize::DEFAULT).unwrap();
        idx.apply(&batch).unwrap();
        idx.close();
        drop(idx);
        let dels: Vec<String> = files(&dir)
            .into_iter()
            .filter(|f| f.ends_with(".del") && !before.contains(f))
            .collect();
        assert_eq!(dels.len(), 1, "the second commit writes one delete file");

        // The kill: meta.json as before the second commit, every file the
        // commit wrote still there (and listed in .managed.json).
        std::fs::write(dir.join("meta.json"), &meta_before).unwrap();
        assert_eq!(export(t.path()).unwrap().len(), 2);

        let idx = LocalIndex::open(t.path(), ChunkSize::DEFAULT).unwrap();
        idx.apply(&batch)
            .expect("replaying the batch after the kill");
        idx.close();
        let all = export(t.path()).unwrap();
        assert_eq!(all.len(), 2);
        let a_now = all.iter().find(|e| e.id == a2.id.to_string()).unwrap();
        assert_eq!(a_now.content_sha256, a2.content_sha256);
    }
}
