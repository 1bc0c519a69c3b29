//! `search`: the best matches of the index, local or Weaviate (the target
//! flags of `index sync`), one hit per file with its lines and a snippet.
//! Both targets answer chunk hits; [`group`] makes the output the same.

use std::io::{self, IsTerminal, Write};
use std::time::Duration;

use super::args::{SearchArgs, SearchModeArg, TargetArg};
use super::export::{finish, Failure};
use super::target::TargetArgsError;
use crate::exit::Exit;
use crate::target::local;
use crate::target::search::{group, terms, ChunkHit, FileHit, Mode, Query, SearchError};
use crate::target::weaviate::{WeaviateConfig, WeaviateTarget};

pub fn run(args: SearchArgs) -> Exit {
    finish(&execute(&args))
}

fn query(args: &SearchArgs) -> Query {
    Query {
        text: args.query.clone(),
        limit: args.limit,
        repos: args.repo.clone(),
        path_prefix: args.path.clone().filter(|p| !p.is_empty()),
        mode: match args.mode {
            SearchModeArg::Keyword => Mode::Keyword,
            SearchModeArg::Hybrid => Mode::Hybrid,
            SearchModeArg::Semantic => Mode::Semantic,
        },
        alpha: args.alpha,
    }
}

fn chunk_hits(args: &SearchArgs, q: &Query) -> Result<Vec<ChunkHit>, Failure> {
    let t = &args.target;
    match (t.kind(), &t.weaviate_url) {
        (TargetArg::Local, _) => {
            let sd = super::state_dir(args.state_dir.clone());
            let (hits, format) = local::search_with(&sd, q)?;
            if let Some(why) = format.reason() {
                eprintln!(
                    "elysiactl: note: the local index is of an older format ({why}); \
                     these hits are as it was built, and the next `index sync` rebuilds it"
                );
            }
            Ok(hits)
        }
        (TargetArg::Weaviate, None) => Err(TargetArgsError::NoWeaviateUrl.into()),
        (TargetArg::Weaviate, Some(url)) => {
            let cfg = WeaviateConfig::from_env(
                url.clone(),
                t.collection.clone(),
                None,
                Duration::from_secs(t.timeout.max(1)),
                1,
            );
            cfg.validate().map_err(TargetArgsError::from)?;
            let target =
                WeaviateTarget::new(cfg).map_err(|e| SearchError::Failed(e.to_string()))?;
            Ok(target.search(q)?)
        }
    }
}

/// Colour only on a terminal, and never with `NO_COLOR` set to anything
/// but the empty string (<https://no-color.org>).
fn use_colour(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

fn execute(args: &SearchArgs) -> Result<(), Failure> {
    let q = query(args);
    let hits: Vec<FileHit> = group(chunk_hits(args, &q)?, q.limit, &terms(&q.text));
    let mut stdout = io::stdout().lock();
    let colour = use_colour(stdout.is_terminal(), std::env::var_os("NO_COLOR"));
    for h in hits {
        let line = if args.json {
            serde_json::to_string(&h).unwrap_or_default()
        } else {
            h.text_in(colour)
        };
        writeln!(stdout, "{line}").map_err(Failure::Stdout)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::use_colour;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some("".into())));
        assert!(!use_colour(true, Some("1".into())));
        assert!(!use_colour(false, None));
    }
}
