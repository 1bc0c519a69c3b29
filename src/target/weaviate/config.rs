//! What the Weaviate target connects to: URL, collection, timeout, the API
//! key and provider keys from the environment. [`WeaviateConfig::validate`]
//! runs before any state is touched, so a bad URL or collection name is a
//! usage error naming the flag, the value and the fix. Secrets never appear
//! in `Debug`.

use std::fmt;
use std::time::Duration;

use super::{client, schema};

/// The default collection name.
pub const DEFAULT_COLLECTION: &str = "SRC_ENTERPRISE__";
/// The default per-request timeout: well under Weaviate's 60 s write timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The default number of batches in flight.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// Environment variables holding vectorizer provider keys and the header each
/// is sent as (Weaviate's own module variable names).
pub const PROVIDER_ENV_HEADERS: &[(&str, &str)] = &[
    ("OPENAI_APIKEY", "X-OpenAI-Api-Key"),
    ("OPENAI_ORGANIZATION", "X-OpenAI-Organization"),
    ("AZURE_APIKEY", "X-Azure-Api-Key"),
    ("COHERE_APIKEY", "X-Cohere-Api-Key"),
    ("HUGGINGFACE_APIKEY", "X-HuggingFace-Api-Key"),
    ("VOYAGEAI_APIKEY", "X-VoyageAI-Api-Key"),
    ("JINAAI_APIKEY", "X-JinaAI-Api-Key"),
    ("MISTRAL_APIKEY", "X-Mistral-Api-Key"),
    ("NVIDIA_APIKEY", "X-Nvidia-Api-Key"),
    ("GOOGLE_APIKEY", "X-Goog-Api-Key"),
    ("AWS_ACCESS_KEY", "X-Aws-Access-Key"),
    ("AWS_SECRET_KEY", "X-Aws-Secret-Key"),
    ("ANTHROPIC_APIKEY", "X-Anthropic-Api-Key"),
];

/// The environment variable holding the Weaviate API key (never a flag).
pub const API_KEY_ENV: &str = "WEAVIATE_API_KEY";

#[derive(Clone)]
pub struct WeaviateConfig {
    /// e.g. `http://127.0.0.1:8080` (no trailing `/v1`).
    pub url: String,
    pub collection: String,
    /// From `WEAVIATE_API_KEY` only; `Authorization: Bearer` is sent only when set.
    pub api_key: Option<String>,
    /// Vectorizer provider keys, e.g. `("X-OpenAI-Api-Key", value)`.
    pub headers: Vec<(String, String)>,
    /// Vectorizer module for a collection we create; `None` → `"none"`.
    pub vectorizer: Option<String>,
    pub timeout: Duration,
    pub concurrency: usize,
}

impl fmt::Debug for WeaviateConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(n, _)| format!("{n}: <redacted>"))
            .collect();
        f.debug_struct("WeaviateConfig")
            .field("url", &client::redact_url(&self.url))
            .field("collection", &self.collection)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("headers", &headers)
            .field("vectorizer", &self.vectorizer)
            .field("timeout", &self.timeout)
            .field("concurrency", &self.concurrency)
            .finish()
    }
}

impl WeaviateConfig {
    /// Reads `WEAVIATE_API_KEY` and the provider keys of
    /// [`PROVIDER_ENV_HEADERS`] from the environment. Empty values count as unset.
    pub fn from_env(
        url: String,
        collection: String,
        vectorizer: Option<String>,
        timeout: Duration,
        concurrency: usize,
    ) -> Self {
        Self::from_lookup(url, collection, vectorizer, timeout, concurrency, |k| {
            std::env::var(k).ok()
        })
    }

    /// [`Self::from_env`] over any variable lookup (for tests).
    pub fn from_lookup(
        url: String,
        collection: String,
        vectorizer: Option<String>,
        timeout: Duration,
        concurrency: usize,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Self {
        let get = |k: &str| lookup(k).filter(|v| !v.is_empty());
        let headers = PROVIDER_ENV_HEADERS
            .iter()
            .filter_map(|(var, header)| get(var).map(|v| (header.to_string(), v)))
            .collect();
        WeaviateConfig {
            url,
            collection,
            api_key: get(API_KEY_ENV),
            headers,
            vectorizer: vectorizer.filter(|v| !v.is_empty() && v != "none"),
            timeout,
            concurrency: concurrency.max(1),
        }
    }

    /// Whether the URL and the collection name can work, checked before
    /// anything is written: the error names the flag, the value (without
    /// credentials) and the fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_url(&self.url)?;
        if schema::normalize_class(&self.collection).is_err() {
            return Err(ConfigError::Collection {
                name: self.collection.clone(),
                suggestion: suggest_class(&self.collection),
            });
        }
        Ok(())
    }
}

/// A configuration value that cannot work; each message names the flag, the
/// value and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error(
        "--weaviate-url (or ELYSIACTL_WEAVIATE_URL) {shown:?} needs an http:// or https:// scheme: \
         give e.g. {suggestion}"
    )]
    UrlScheme { shown: String, suggestion: String },
    #[error(
        "--weaviate-url (or ELYSIACTL_WEAVIATE_URL) {shown:?} ends in /v1: drop the /v1 \
         (elysiactl adds it), i.e. {suggestion}"
    )]
    UrlV1 { shown: String, suggestion: String },
    #[error(
        "--weaviate-url (or ELYSIACTL_WEAVIATE_URL) {shown:?} {reason}: give the server's root, \
         e.g. http://localhost:8080"
    )]
    UrlInvalid { shown: String, reason: String },
    #[error(
        "--collection {name:?} is not a Weaviate collection name (a letter, then letters, digits \
         or _, at most 255; the server uppercases the first letter): use e.g. {suggestion}"
    )]
    Collection { name: String, suggestion: String },
}

fn validate_url(url: &str) -> Result<(), ConfigError> {
    let shown = client::redact_url(url.trim());
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        let rest = shown.split_once("://").map_or(shown.as_str(), |(_, r)| r);
        return Err(ConfigError::UrlScheme {
            suggestion: format!("http://{}", rest.trim_start_matches('/')),
            shown,
        });
    }
    let invalid = |reason: &str| ConfigError::UrlInvalid {
        shown: shown.clone(),
        reason: reason.to_string(),
    };
    if url.trim() != url || url.chars().any(char::is_whitespace) {
        return Err(invalid("contains whitespace"));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid(&format!("is not a URL ({e})")))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("has no host"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid("has a query or fragment"));
    }
    let path = parsed.path().trim_end_matches('/');
    if path == "/v1" || path.ends_with("/v1") {
        let base = shown.trim_end_matches('/');
        return Err(ConfigError::UrlV1 {
            suggestion: base.strip_suffix("/v1").unwrap_or(base).to_string(),
            shown,
        });
    }
    Ok(())
}

/// A valid class name close to `name`: other characters become `_`, leading
/// characters that cannot start a name are dropped, the first letter is
/// uppercased.
fn suggest_class(name: &str) -> String {
    let mapped: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .skip_while(|c| !c.is_ascii_alphabetic())
        .take(255)
        .collect();
    let mut chars = mapped.chars();
    match chars.next() {
        Some(f) => f.to_ascii_uppercase().to_string() + chars.as_str(),
        None => DEFAULT_COLLECTION.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::super::WeaviateTarget;
    use super::*;
    use crate::target::Target;

    #[test]
    fn provider_keys_map_to_headers_and_debug_hides_them() {
        let env: HashMap<&str, &str> = [
            ("WEAVIATE_API_KEY", "wk-SECRET1"),
            ("OPENAI_APIKEY", "sk-SECRET2"),
            ("COHERE_APIKEY", ""),
        ]
        .into_iter()
        .collect();
        let cfg = WeaviateConfig::from_lookup(
            "http://u:pw-SECRET3@127.0.0.1:1".into(),
            DEFAULT_COLLECTION.into(),
            Some("none".into()),
            DEFAULT_TIMEOUT,
            0,
            |k| env.get(k).map(|v| v.to_string()),
        );
        assert_eq!(cfg.api_key.as_deref(), Some("wk-SECRET1"));
        assert_eq!(
            cfg.headers,
            vec![("X-OpenAI-Api-Key".to_string(), "sk-SECRET2".to_string())]
        );
        assert_eq!(cfg.vectorizer, None);
        assert_eq!(cfg.concurrency, 1);
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("SECRET"), "{dbg}");
        assert!(dbg.contains("X-OpenAI-Api-Key"));
        let t = WeaviateTarget::new(cfg).unwrap();
        assert!(!format!("{t:?} {}", t.describe()).contains("SECRET"));
    }

    #[test]
    fn config_errors_name_the_flag_the_value_and_the_fix() {
        let check = |url: &str, coll: &str| {
            WeaviateConfig::from_lookup(url.into(), coll.into(), None, DEFAULT_TIMEOUT, 1, |_| None)
                .validate()
                .map_err(|e| e.to_string())
        };
        let e = check("http://h:8080/v1/", DEFAULT_COLLECTION).unwrap_err();
        assert!(
            e.contains("--weaviate-url") && e.contains("drop the /v1"),
            "{e}"
        );
        assert!(
            e.contains("http://h:8080/v1") && e.ends_with("http://h:8080"),
            "{e}"
        );
        let e = check("localhost:8080", DEFAULT_COLLECTION).unwrap_err();
        assert!(
            e.contains("scheme") && e.ends_with("http://localhost:8080"),
            "{e}"
        );
        let e = check("http://u:pw-SECRET@h:1/v1", DEFAULT_COLLECTION).unwrap_err();
        assert!(!e.contains("SECRET"), "{e}");
        let e = check("http://h:1", "bad-name").unwrap_err();
        assert!(
            e.contains("--collection \"bad-name\"") && e.ends_with("Bad_name"),
            "{e}"
        );
        assert!(check("http://h:1", "9-x").unwrap_err().ends_with("X"));
        assert!(check("https://h.example/weaviate", "codeChunk").is_ok());
        assert!(check("HTTP://h:1", DEFAULT_COLLECTION).is_ok());
        for bad in ["http://", "http://h:1/?a=b", "http://h :1"] {
            assert!(check(bad, DEFAULT_COLLECTION).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_urls_and_names_are_refused_up_front() {
        let mk = |url: &str, coll: &str| {
            WeaviateTarget::new(WeaviateConfig::from_lookup(
                url.into(),
                coll.into(),
                None,
                DEFAULT_TIMEOUT,
                1,
                |_| None,
            ))
        };
        assert!(mk("127.0.0.1:8080", "C").is_err());
        assert!(mk("http://h:8080/v1", "C").is_err());
        assert!(mk("http://h:8080", "bad-name").is_err());
        assert_eq!(
            mk("http://h:8080/", "codeChunk").unwrap().class(),
            "CodeChunk"
        );
    }
}
