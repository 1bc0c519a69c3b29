//! The HTTP side: one pooled reqwest client, requests in, raw replies out.
//! What a reply means is decided in [`super::classify`], never here.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use reqwest::{Method, StatusCode};

use super::classify::{Reply, TransportFailure};

/// A reply read in full, or why none came.
#[derive(Debug)]
pub enum Exchange {
    Http {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
    NoReply(TransportFailure),
}

impl Exchange {
    pub fn reply(&self) -> Reply<'_> {
        match self {
            Exchange::Http {
                status,
                headers,
                body,
            } => Reply::Http {
                status: status.as_u16(),
                headers,
                body,
            },
            Exchange::NoReply(f) => Reply::NoReply(f),
        }
    }
}

pub struct Client {
    http: reqwest::Client,
    base: String,
}

/// Default headers: the API key as Bearer (only when set) and the vectorizer
/// provider keys, all marked sensitive so no debug output shows them.
/// Errors name the header, never its value.
pub fn default_headers(
    api_key: Option<&str>,
    extra: &[(String, String)],
) -> Result<HeaderMap, String> {
    let mut h = HeaderMap::new();
    if let Some(key) = api_key {
        let mut v = HeaderValue::from_str(&format!("Bearer {key}"))
            .map_err(|_| "WEAVIATE_API_KEY is not a valid header value".to_string())?;
        v.set_sensitive(true);
        h.insert(AUTHORIZATION, v);
    }
    for (name, value) in extra {
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name {name:?}"))?;
        let mut v = HeaderValue::from_str(value)
            .map_err(|_| format!("the value for header {name} is not a valid header value"))?;
        v.set_sensitive(true);
        h.insert(n, v);
    }
    Ok(h)
}

impl Client {
    pub fn new(
        base: &str,
        headers: HeaderMap,
        timeout: Duration,
        pool: usize,
    ) -> Result<Self, String> {
        // reqwest is built without a bundled crypto provider; ring is ours.
        // Installing fails harmlessly if the process already chose one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("elysiactl/", env!("CARGO_PKG_VERSION")))
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(pool.max(1) * 2)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {}", error_chain(&e)))?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    /// Send one request and read the whole reply. `path` starts with `/v1/`.
    pub async fn send(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Exchange {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Exchange::NoReply(transport_failure(&e)),
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        match resp.bytes().await {
            Ok(body) => Exchange::Http {
                status,
                headers,
                body,
            },
            Err(e) => Exchange::NoReply(transport_failure(&e)),
        }
    }
}

fn transport_failure(e: &reqwest::Error) -> TransportFailure {
    let detail = error_chain(e);
    if e.is_connect() {
        TransportFailure::Connect(detail)
    } else if e.is_timeout() {
        TransportFailure::Timeout(detail)
    } else {
        TransportFailure::Dropped(detail)
    }
}

/// The error and its causes on one line, without the URL (the caller names
/// the server; a URL could carry userinfo).
fn error_chain(e: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = src {
        let m = s.to_string();
        if !parts.contains(&m) {
            parts.push(m);
        }
        src = s.source();
    }
    if parts.is_empty() {
        let mut e2 = String::new();
        use std::fmt::Write;
        let _ = write!(e2, "{}", WithoutUrl(e));
        parts.push(e2);
    }
    parts.join(": ")
}

struct WithoutUrl<'a>(&'a reqwest::Error);

impl std::fmt::Display for WithoutUrl<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_timeout() {
            f.write_str("timed out")
        } else if self.0.is_connect() {
            f.write_str("connection failed")
        } else if self.0.is_body() || self.0.is_decode() {
            f.write_str("reading the reply failed")
        } else {
            f.write_str("request failed")
        }
    }
}

/// `url` with any `user:password@` removed, for messages.
pub fn redact_url(url: &str) -> String {
    let trimmed = url.trim_end_matches('/');
    match (trimmed.find("://"), trimmed.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let host_end = trimmed[s + 3..]
                .find('/')
                .map_or(trimmed.len(), |i| i + s + 3);
            if at < host_end {
                return format!("{}{}", &trimmed[..s + 3], &trimmed[at + 1..]);
            }
            trimmed.to_string()
        }
        _ => trimmed.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_removed_from_urls_in_messages() {
        assert_eq!(redact_url("http://u:secret@h:8080/"), "http://h:8080");
        assert_eq!(redact_url("http://h:8080"), "http://h:8080");
        assert_eq!(redact_url("http://h/x@y"), "http://h/x@y");
    }

    #[test]
    fn header_errors_never_quote_the_value() {
        let e = default_headers(Some("bad\nkey-SECRET"), &[]).unwrap_err();
        assert!(!e.contains("SECRET"));
        let e = default_headers(None, &[("X-OpenAI-Api-Key".into(), "v\u{7f}SECRET".into())])
            .unwrap_err();
        assert!(!e.contains("SECRET") && e.contains("X-OpenAI-Api-Key"));
    }
}
