//! Reading the collection back: every object (id, repo, path,
//! contentSha256) paged with the `after` cursor, for `index export` and
//! [`Target::list_repo`](crate::target::Target::list_repo). A page is cheap
//! to fetch again, so transient failures get a few quick local retries.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::client::Exchange;
use super::WeaviateTarget;
use crate::target::{Error, Exported};

/// Objects fetched per page by [`Target::list_repo`](crate::target::Target::list_repo).
const LIST_PAGE: usize = 1000;

/// One listed object as `index export` prints it. An object from before
/// chunked objects (no `chunk` property) is the one chunk of its file.
fn exported(o: &Value, with_content: bool) -> Exported {
    let props = o.get("properties");
    let field = |k: &str| {
        props
            .and_then(|p| p.get(k))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let int = |k: &str| props.and_then(|p| p.get(k)).and_then(Value::as_f64);
    let size = int("size").unwrap_or(0.0) as u64;
    let lines = || {
        let content = field("content");
        let body = content.strip_suffix('\n').unwrap_or(&content);
        1 + body.bytes().filter(|&b| b == b'\n').count() as u64
    };
    let chunked = int("chunkCount").is_some();
    let get = |k: &str, legacy: u64| int(k).map_or(legacy, |v| v as u64);
    Exported {
        id: o
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        repo: field("repo"),
        path: field("path"),
        chunk: get("chunk", 0),
        chunk_count: get("chunkCount", 1),
        byte_start: get("byteStart", 0),
        byte_end: get("byteEnd", size),
        start_line: get("startLine", 1),
        end_line: if chunked { get("endLine", 1) } else { lines() },
        size,
        content_sha256: field("contentSha256"),
        content: with_content.then(|| field("content")),
    }
}

impl WeaviateTarget {
    /// Every object of the collection (id, repo, path, contentSha256),
    /// paged with the `after` cursor.
    pub(super) async fn list_all_async(&self, content: bool) -> Result<Vec<Exported>, Error> {
        let mut out = Vec::new();
        self.scan_async(content, &mut |o| out.push(o)).await?;
        out.sort_by(|a, b| (&a.repo, &a.path, &a.id).cmp(&(&b.repo, &b.path, &b.id)));
        Ok(out)
    }

    /// Every object of the collection, one page in memory at a time.
    pub(super) async fn scan_async(
        &self,
        content: bool,
        each: &mut dyn FnMut(Exported),
    ) -> Result<(), Error> {
        let mut after: Option<String> = None;
        loop {
            let mut path = format!("/v1/objects?class={}&limit={LIST_PAGE}", self.class);
            if let Some(a) = &after {
                path.push_str("&after=");
                path.push_str(a);
            }
            let page = self.list_page(&path).await?;
            let objects = page
                .get("objects")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            objects.iter().for_each(|o| each(exported(o, content)));
            let last = objects
                .last()
                .and_then(|o| o.get("id"))
                .and_then(Value::as_str);
            match last {
                Some(id) if objects.len() >= LIST_PAGE => after = Some(id.to_string()),
                _ => return Ok(()),
            }
        }
    }

    /// Whether the collection has no object (one object asked for).
    pub(super) async fn is_empty_async(&self) -> Result<Option<bool>, Error> {
        let path = format!("/v1/objects?class={}&limit=1", self.class);
        let page = self.list_page(&path).await?;
        let n = page
            .get("objects")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        Ok(Some(n == 0))
    }

    pub(super) async fn list_repo_async(&self, repo: &str) -> Result<Vec<String>, Error> {
        let mut paths: Vec<String> = self
            .list_all_async(false)
            .await?
            .into_iter()
            .filter(|o| o.repo == repo)
            .map(|o| o.path)
            .collect();
        paths.sort();
        paths.dedup();
        Ok(paths)
    }

    /// One page of the object listing. A listing is long and cheap to resume
    /// per page, so transient failures get a few quick local retries.
    async fn list_page(&self, path: &str) -> Result<Value, Error> {
        let what = "GET /v1/objects";
        let mut attempt = 0u32;
        loop {
            let ex = self.send(Method::GET, path, None).await;
            let err = match &ex {
                Exchange::Http { status, body, .. } if status.is_success() => {
                    match serde_json::from_slice::<Value>(body) {
                        Ok(v) => return Ok(v),
                        Err(_) => Error::Transient {
                            message: format!("{what}: the reply is not JSON"),
                            retry_after: None,
                        },
                    }
                }
                _ => self.reply_error(what, ex.reply()),
            };
            attempt += 1;
            if !matches!(err, Error::Transient { .. }) || attempt >= 4 {
                return Err(err);
            }
            let wait = err
                .retry_after()
                .unwrap_or(Duration::from_millis(100 << attempt))
                .min(Duration::from_secs(5));
            tokio::time::sleep(wait).await;
        }
    }
}
