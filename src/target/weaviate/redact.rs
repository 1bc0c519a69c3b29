//! The secrets the Weaviate target holds, and their removal from everything
//! it hands out.
//!
//! A server, or a proxy in front of it, may quote the request — its
//! `Authorization` header, a provider key header — in an error body, and
//! that text would travel on into stderr, the WAL, `--status` and
//! `index failures`. So every message that leaves the target (batch errors,
//! per-object failures) passes through [`Redactor`] at the `Target` boundary,
//! and reply bodies are redacted as they arrive too, before anything quotes
//! and truncates them (a truncation could cut a secret in two, and half a
//! key no longer matches).
//!
//! Held secrets: the `WEAVIATE_API_KEY` value, every provider key header
//! value, and the credentials of a `user:password@` URL (as typed, decoded,
//! and as the Basic credentials reqwest sends for them). Each is also matched
//! in its JSON-escaped forms. On top of that, any `Bearer <token>` with a
//! token of at least [`MIN_BEARER_TOKEN`] characters is redacted: nothing
//! else in a message looks like that.

use std::borrow::Cow;

use base64::Engine;
use memchr::memmem;

use super::WeaviateConfig;
use crate::target::{Error, OpOutcome};

/// What a secret is replaced with.
pub const REDACTED: &str = "<redacted>";

/// The shortest token after `Bearer ` that is redacted without being one of
/// ours: shorter ones are words ("Bearer token required").
pub const MIN_BEARER_TOKEN: usize = 16;

/// The secrets of one configuration; cheap to apply when none occurs.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret containing another is replaced whole.
    secrets: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} forms)", self.secrets.len())
    }
}

impl Redactor {
    pub fn new(cfg: &WeaviateConfig) -> Self {
        let mut raw: Vec<String> = Vec::new();
        raw.extend(cfg.api_key.iter().cloned());
        raw.extend(cfg.headers.iter().map(|(_, v)| v.clone()));
        raw.extend(url_credentials(&cfg.url));
        Self::from_secrets(raw)
    }

    /// A redactor for exactly these secrets (and their escaped forms).
    pub fn from_secrets(raw: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = Vec::new();
        for s in raw.into_iter().filter(|s| !s.is_empty()) {
            let json = json_escaped(&s);
            let go = go_escaped(&json);
            for form in [s, json, go] {
                if !secrets.contains(&form) {
                    secrets.push(form);
                }
            }
        }
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Redactor { secrets }
    }

    /// `text` with every held secret and every long bearer token replaced.
    pub fn text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = Cow::Owned(out.replace(s.as_str(), REDACTED));
            }
        }
        match redact_bearer(&out) {
            Some(r) => Cow::Owned(r),
            None => out,
        }
    }

    /// A reply body with every held secret replaced; a copy only when one
    /// occurs. (Bearer tokens are left to [`Self::text`]: a body is parsed
    /// first, and only what is quoted from it needs them gone.)
    pub fn bytes<'a>(&self, body: &'a [u8]) -> Cow<'a, [u8]> {
        let mut out = Cow::Borrowed(body);
        for s in &self.secrets {
            let finder = memmem::Finder::new(s.as_bytes());
            if finder.find(&out).is_none() {
                continue;
            }
            let mut next = Vec::with_capacity(out.len());
            let mut at = 0;
            for i in finder.find_iter(&out) {
                if i < at {
                    continue;
                }
                next.extend_from_slice(&out[at..i]);
                next.extend_from_slice(REDACTED.as_bytes());
                at = i + s.len();
            }
            next.extend_from_slice(&out[at..]);
            out = Cow::Owned(next);
        }
        out
    }

    fn owned(&self, s: String) -> String {
        match self.text(&s) {
            Cow::Borrowed(_) => s,
            Cow::Owned(r) => r,
        }
    }

    /// The same error with its message redacted.
    pub fn error(&self, e: Error) -> Error {
        match e {
            Error::Unreachable {
                target,
                message,
                retry_after,
            } => Error::Unreachable {
                target: self.owned(target),
                message: self.owned(message),
                retry_after,
            },
            Error::Transient {
                message,
                retry_after,
            } => Error::Transient {
                message: self.owned(message),
                retry_after,
            },
            Error::Rejected { message } => Error::Rejected {
                message: self.owned(message),
            },
            Error::Fatal { message } => Error::Fatal {
                message: self.owned(message),
            },
        }
    }

    /// Per-op outcomes with every failure message redacted.
    pub fn outcomes(&self, mut out: Vec<OpOutcome>) -> Vec<OpOutcome> {
        for o in &mut out {
            if let OpOutcome::Failed { message, .. } = o {
                if let Cow::Owned(r) = self.text(message) {
                    *message = r;
                }
            }
        }
        out
    }

    /// A whole result leaving the target.
    pub fn result<T>(
        &self,
        r: Result<T, Error>,
        ok: impl FnOnce(&Self, T) -> T,
    ) -> Result<T, Error> {
        match r {
            Ok(v) => Ok(ok(self, v)),
            Err(e) => Err(self.error(e)),
        }
    }
}

/// The credentials a URL's userinfo carries: the password as typed and
/// percent-decoded, `user:password` both ways, and the Basic credentials
/// reqwest derives from them. A username alone is the secret when there is
/// no password (`https://TOKEN@host`).
fn url_credentials(url: &str) -> Vec<String> {
    let Ok(u) = reqwest::Url::parse(url) else {
        return Vec::new();
    };
    let user_raw = u.username().to_string();
    let pass_raw = u.password().map(str::to_string);
    if user_raw.is_empty() && pass_raw.is_none() {
        return Vec::new();
    }
    let user = percent_decode(&user_raw);
    let pass = pass_raw.as_deref().map(percent_decode);
    let mut out = Vec::new();
    match (&pass_raw, &pass) {
        (Some(pr), Some(p)) if !p.is_empty() => {
            out.push(pr.clone());
            out.push(p.clone());
            out.push(format!("{user_raw}:{pr}"));
            out.push(format!("{user}:{p}"));
        }
        _ => {
            out.push(user_raw.clone());
            out.push(user.clone());
        }
    }
    let basic = format!("{user}:{}", pass.unwrap_or_default());
    out.push(base64::engine::general_purpose::STANDARD.encode(basic.as_bytes()));
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `s` as it appears inside a JSON string (serde's escaping, no quotes).
fn json_escaped(s: &str) -> String {
    let q = serde_json::to_string(s).unwrap_or_default();
    q.get(1..q.len().saturating_sub(1))
        .unwrap_or_default()
        .to_string()
}

/// Go's encoding/json (Weaviate's) also escapes `<`, `>` and `&`.
fn go_escaped(json: &str) -> String {
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
}

/// `text` with every `Bearer <token>` (case-insensitive, token of at least
/// [`MIN_BEARER_TOKEN`] characters) redacted; `None` when there is none.
fn redact_bearer(text: &str) -> Option<String> {
    const WORD: &[u8] = b"bearer ";
    let b = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i + WORD.len() <= b.len() {
        if !b[i..i + WORD.len()].eq_ignore_ascii_case(WORD) {
            i += 1;
            continue;
        }
        let start = i + WORD.len();
        let len = b[start..].iter().take_while(|c| is_token_char(**c)).count();
        if len >= MIN_BEARER_TOKEN {
            let o = out.get_or_insert_with(String::new);
            o.push_str(&text[copied..start]);
            o.push_str(REDACTED);
            copied = start + len;
        }
        i = start + len.max(1);
    }
    out.map(|mut o| {
        o.push_str(&text[copied..]);
        o
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(url: &str, key: Option<&str>, headers: &[(&str, &str)]) -> WeaviateConfig {
        let mut c = WeaviateConfig::from_lookup(
            url.into(),
            "C".into(),
            None,
            std::time::Duration::from_secs(1),
            1,
            |_| None,
        );
        c.api_key = key.map(str::to_string);
        c.headers = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        c
    }

    #[test]
    fn every_held_secret_is_redacted_in_every_form() {
        let r = Redactor::new(&cfg(
            "http://al%40ice:p%2Fss-S3CR@127.0.0.1:1",
            Some("wk-KEY\"<&>-S1"),
            &[("X-OpenAI-Api-Key", "sk-PROVIDER-S2")],
        ));
        let basic = base64::engine::general_purpose::STANDARD.encode("al@ice:p/ss-S3CR");
        let msg = format!(
            "echo: Authorization: Bearer wk-KEY\"<&>-S1; json \"wk-KEY\\\"<&>-S1\"; go \
             wk-KEY\\\"\\u003c\\u0026\\u003e-S1; x-openai-api-key: sk-PROVIDER-S2; \
             basic {basic}; url al%40ice:p%2Fss-S3CR and p/ss-S3CR"
        );
        let out = r.text(&msg);
        for s in ["S1", "S2", "S3CR", basic.as_str(), "PROVIDER"] {
            assert!(!out.contains(s), "{s} left in {out}");
        }
        assert!(out.contains("x-openai-api-key: <redacted>"), "{out}");
        let bytes = r.bytes(msg.as_bytes());
        assert_eq!(String::from_utf8_lossy(&bytes), r.text(&msg));
    }

    #[test]
    fn a_secret_cut_by_truncation_is_gone_because_bodies_are_redacted_first() {
        use crate::target::weaviate::classify::status_error;
        let key = "wk-TRUNCATED-SECRET-0123456789";
        // The key straddles the 300th character, where quoted messages are cut.
        let msg = format!("{}{key} tail", "x".repeat(290));
        let body = serde_json::to_vec(&serde_json::json!({"error": [{"message": msg}]})).unwrap();
        let r = Redactor::from_secrets([key.to_string()]);
        let headers = reqwest::header::HeaderMap::new();
        let late = r.error(status_error("batch upsert", 422, &headers, &body));
        assert!(late.to_string().contains("wk-TRUNC"), "{late}");
        let early = status_error("batch upsert", 422, &headers, &r.bytes(&body));
        assert!(!early.to_string().contains("wk-TRUNC"), "{early}");
    }

    #[test]
    fn a_token_only_url_redacts_its_username() {
        let r = Redactor::new(&cfg("https://ghp_TOKEN123@h", None, &[]));
        assert_eq!(
            r.text("user ghp_TOKEN123 refused"),
            "user <redacted> refused"
        );
    }

    #[test]
    fn long_bearer_tokens_are_redacted_and_words_are_not() {
        let r = Redactor::default();
        assert_eq!(
            r.text("got BEARER abcdefghijklmnop.qrs, bearer token required"),
            "got BEARER <redacted>, bearer token required"
        );
        assert!(matches!(r.text("nothing here"), Cow::Borrowed(_)));
        assert!(matches!(r.bytes(b"nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn messages_leaving_the_target_are_redacted() {
        let r = Redactor::from_secrets(["SECRET".to_string()]);
        let e = r.error(Error::Unreachable {
            target: "t SECRET".into(),
            message: "m SECRET".into(),
            retry_after: None,
        });
        assert!(!e.to_string().contains("SECRET"), "{e}");
        let o = r.outcomes(vec![
            OpOutcome::Ok,
            OpOutcome::Failed {
                retryable: true,
                message: "x SECRET y".into(),
            },
        ]);
        assert_eq!(
            o[1],
            OpOutcome::Failed {
                retryable: true,
                message: "x <redacted> y".into()
            }
        );
    }
}
