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

use super::{Document, Error, Op, OpOutcome, Target};
pub use read::{export, search, Exported, Hit, ReadError};

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
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text = TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("default")
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        )
        .set_stored();
    let f = Fields {
        id: b.add_text_field("id", STRING | STORED),
        repo: b.add_text_field("repo", STRING | STORED),
        path: b.add_text_field("path", STRING | STORED),
        path_text: b.add_text_field(
            "path_text",
            TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer("default")
                    .set_index_option(IndexRecordOption::WithFreqsAndPositions),
            ),
        ),
        content: b.add_text_field("content", text),
        sha256: b.add_text_field("contentSha256", STRING | STORED),
        size: b.add_u64_field("size", INDEXED | STORED),
    };
    (b.build(), f)
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

/// Open (or create) the index of a state dir.
fn open_index(state_dir: &Path) -> Result<(Index, Fields), Error> {
    let dir = index_dir(state_dir);
    crate::util::create_private_dir(&dir).map_err(|e| fatal("create directory", e))?;
    let (schema, fields) = schema();
    let mmap = MmapDirectory::open(&dir).map_err(|e| fatal("open directory", e))?;
    let index = Index::open_or_create(mmap, schema).map_err(|e| fatal("open", e))?;
    Ok((index, fields))
}

/// The local index as a sync target.
pub struct LocalIndex {
    state_dir: PathBuf,
    index: Index,
    fields: Fields,
    writer: Mutex<Option<IndexWriter>>,
}

impl LocalIndex {
    pub fn open(state_dir: &Path) -> Result<LocalIndex, Error> {
        let (index, fields) = open_index(state_dir)?;
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

    fn to_doc(&self, d: &Document) -> TantivyDocument {
        let f = &self.fields;
        let mut doc = TantivyDocument::default();
        doc.add_text(f.id, d.id.to_string());
        doc.add_text(f.repo, &d.repo);
        doc.add_text(f.path, &d.path);
        doc.add_text(f.path_text, &d.path);
        doc.add_text(f.content, &d.content);
        doc.add_text(f.sha256, &d.content_sha256);
        doc.add_u64(f.size, d.size);
        doc
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
            for op in ops {
                let term = Term::from_field_text(self.fields.id, &op.id().to_string());
                w.delete_term(term);
                if let Op::Upsert(d) = op {
                    w.add_document(self.to_doc(d))
                        .map_err(|e| fatal("add document", e))?;
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

    fn export(&self) -> Result<Vec<Exported>, Error> {
        export(&self.state_dir).map_err(|e| fatal("export", e))
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
        let idx = LocalIndex::open(t.path()).unwrap();
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
        let idx = LocalIndex::open(t.path()).unwrap();
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
        let idx = LocalIndex::open(t.path()).unwrap();
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
        let idx = LocalIndex::open(t.path()).unwrap();
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

        let idx = LocalIndex::open(t.path()).unwrap();
        idx.apply(&batch)
            .expect("replaying the batch after the kill");
        idx.close();
        let all = export(t.path()).unwrap();
        assert_eq!(all.len(), 2);
        let a_now = all.iter().find(|e| e.id == a2.id.to_string()).unwrap();
        assert_eq!(a_now.content_sha256, a2.content_sha256);
    }
}
