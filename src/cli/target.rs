//! `--target` and its flags (for `index sync` and `index export`): which
//! index, what the state dir records of it, and how to open it. A bad URL or
//! collection is found here, before the state dir is touched.

use crate::object::ChunkSize;
use std::path::PathBuf;
use std::time::Duration;

use super::args::{TargetArg, TargetArgs};
use crate::target::weaviate::{client::redact_url, ConfigError, WeaviateConfig, WeaviateTarget};
use crate::target::{self, local::LocalIndex, Target};
use crate::wal::TargetIdentity;

/// Opens the target; called once the state dir is locked.
pub type Opener = Box<dyn Fn() -> Result<Box<dyn Target>, target::Error>>;

/// Target flags that cannot work together: a usage error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TargetArgsError {
    #[error("--target weaviate needs --weaviate-url URL (or ELYSIACTL_WEAVIATE_URL)")]
    NoWeaviateUrl,
    #[error(transparent)]
    Weaviate(#[from] ConfigError),
    /// `index sync --input PATH` names nothing readable: refused before the
    /// state dir is created or locked.
    #[error("cannot read manifest {}: {source}", path.display())]
    ManifestUnreadable {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl TargetArgs {
    pub fn kind(&self) -> TargetArg {
        match self.target {
            Some(t) => t,
            None if self.weaviate_url.is_some() => TargetArg::Weaviate,
            None => TargetArg::Local,
        }
    }

    /// The target's name, for the WAL and status ("local", "weaviate").
    pub fn name(&self) -> &'static str {
        match self.kind() {
            TargetArg::Local => "local",
            TargetArg::Weaviate => "weaviate",
        }
    }

    /// Which index this is, as the state dir records it.
    pub fn identity(&self) -> TargetIdentity {
        let (server, collection) = match (self.kind(), &self.weaviate_url) {
            (TargetArg::Weaviate, Some(url)) => (
                redact_url(url).trim_end_matches('/').to_string(),
                self.collection.clone(),
            ),
            (TargetArg::Weaviate, None) => (String::new(), self.collection.clone()),
            (TargetArg::Local, _) => (String::new(), String::new()),
        };
        TargetIdentity {
            kind: self.name().into(),
            server,
            collection,
            chunk_size: 0,
        }
    }

    /// A function that opens the target (called once the state dir is locked)
    /// to write objects cut at `chunk_size`.
    pub fn opener(
        &self,
        state_dir: PathBuf,
        chunk_size: ChunkSize,
    ) -> Result<Opener, TargetArgsError> {
        match (self.kind(), &self.weaviate_url) {
            (TargetArg::Weaviate, None) => Err(TargetArgsError::NoWeaviateUrl),
            (TargetArg::Weaviate, Some(url)) => {
                let cfg = WeaviateConfig::from_env(
                    url.clone(),
                    self.collection.clone(),
                    self.vectorizer.clone(),
                    Duration::from_secs(self.timeout.max(1)),
                    self.concurrency as usize,
                );
                cfg.validate()?;
                Ok(Box::new(move || -> Result<Box<dyn Target>, _> {
                    Ok(Box::new(WeaviateTarget::new(cfg.clone())?))
                }))
            }
            (TargetArg::Local, _) => Ok(Box::new(move || -> Result<Box<dyn Target>, _> {
                Ok(Box::new(LocalIndex::open(&state_dir, chunk_size)?))
            })),
        }
    }
}
