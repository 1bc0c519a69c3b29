//! The fast path for the common manifest line: one flat JSON object whose
//! values are strings without escapes, integers of up to 18 digits, `true`,
//! `false` or `null` — what `elysiactl changes`, mgit and `find` wrappers
//! write. One pass over the bytes, no copy, no tape.
//!
//! Anything else — an escape, a control character, a nested value, a
//! fraction or exponent, a longer number, more than [`MAX_FIELDS`] keys, any
//! syntax error, invalid UTF-8 — is not this scanner's business: it returns
//! `None` and the line goes to simd-json, which also gives every error
//! message about JSON. So the scanner only has to be right about what it
//! accepts; `flat_scanner_agrees_with_simd_json` (line.rs) checks that on
//! generated lines.

use super::{Fields, LineError, Val};

/// Keys of one line the scanner handles; more go to simd-json.
const MAX_FIELDS: usize = 16;

/// The line's fields, `Some(Err)` when a field has the wrong type, `None`
/// to leave the line to simd-json. The whole line is checked before any
/// field is interpreted, so a syntax error anywhere is never reported as a
/// field error.
pub(super) fn fields(line: &[u8]) -> Option<Result<Fields<'_>, LineError>> {
    let text = std::str::from_utf8(line).ok()?;
    let b = text.as_bytes();
    let mut f = Fields::default();
    // The first field error, reported once the whole line has scanned.
    let mut error = None;
    let mut n = 0;
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            let (key, next) = string(text, i)?;
            i = skip_ws(b, next);
            if b.get(i) != Some(&b':') {
                return None;
            }
            let (v, next) = value(text, skip_ws(b, i + 1))?;
            n += 1;
            if n > MAX_FIELDS {
                return None;
            }
            if error.is_none() {
                error = f.set(key, v).err();
            }
            i = skip_ws(b, next);
            match b.get(i) {
                Some(b',') => i = skip_ws(b, i + 1),
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    if skip_ws(b, i) != b.len() {
        return None;
    }
    Some(match error {
        Some(e) => Err(e),
        None => Ok(f),
    })
}

#[inline]
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\r' | b'\n') = b.get(i) {
        i += 1;
    }
    i
}

/// The string opening at `i` when it has no escape and no control
/// character: its text and the index past its closing quote.
#[inline]
fn string(text: &str, i: usize) -> Option<(&str, usize)> {
    let b = text.as_bytes();
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let start = i + 1;
    // Manifest strings are short: a plain loop beats memchr's setup.
    let mut end = start;
    loop {
        match *b.get(end)? {
            b'"' => break,
            b'\\' | 0..=0x1f => return None,
            _ => end += 1,
        }
    }
    Some((text.get(start..end)?, end + 1))
}

#[inline]
fn value(text: &str, i: usize) -> Option<(Val<'_>, usize)> {
    let b = text.as_bytes();
    let lit =
        |word: &[u8], v: Val<'static>| b.get(i..)?.starts_with(word).then_some((v, i + word.len()));
    match b.get(i)? {
        b'"' => string(text, i).map(|(s, next)| (Val::Str(s), next)),
        b'n' => lit(b"null", Val::Null),
        b't' => lit(b"true", Val::Other),
        b'f' => lit(b"false", Val::Other),
        b'-' | b'0'..=b'9' => integer(b, i).map(|next| (Val::Other, next)),
        _ => None,
    }
}

/// A JSON integer of 1 to 18 digits (fits any number type simd-json uses).
fn integer(b: &[u8], i: usize) -> Option<usize> {
    let start = if b.get(i) == Some(&b'-') { i + 1 } else { i };
    let mut j = start;
    while let Some(b'0'..=b'9') = b.get(j) {
        j += 1;
    }
    let digits = j - start;
    if digits == 0 || digits > 18 || (digits > 1 && b[start] == b'0') {
        return None;
    }
    match b.get(j) {
        Some(b'.' | b'e' | b'E') => None,
        _ => Some(j),
    }
}
