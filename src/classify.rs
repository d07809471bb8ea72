//! What a call says about its data: the classification and retention headers
//! the app declares, and a scan of the request text for personal data.
//! Counts only: the matched text never leaves this module.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::config::parse_duration;
use crate::reply::ProxyError;

pub const CLASSIFICATION_HEADER: &str = "x-data-classification";
pub const RETENTION_HEADER: &str = "x-data-retention";

const CLASSIFICATIONS: &[&str] = &[
    "public",
    "internal",
    "confidential",
    "personal",
    "special-category",
];

/// The `data` part of the policy input.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DataDoc {
    pub classification: Option<String>,
    pub retention: Option<String>,
    /// `retention` as seconds: 0 for `zero`, the duration's length, or null.
    pub retention_max_seconds: Option<u64>,
    /// Counts of personal data found in the request text, by kind.
    pub pii: BTreeMap<&'static str, u32>,
}

/// Reads the two headers; an invalid value is a 400 naming the header and
/// what it accepts.
pub fn declared(
    classification: Option<&[u8]>,
    retention: Option<&[u8]>,
) -> Result<DataDoc, ProxyError> {
    let mut doc = DataDoc::default();
    if let Some(raw) = classification {
        let value = String::from_utf8_lossy(raw).trim().to_ascii_lowercase();
        if !CLASSIFICATIONS.contains(&value.as_str()) {
            return Err(ProxyError::InvalidHeader {
                header: CLASSIFICATION_HEADER,
                value: truncate(&value),
                allowed: "public, internal, confidential, personal, special-category",
            });
        }
        doc.classification = Some(value);
    }
    if let Some(raw) = retention {
        let value = String::from_utf8_lossy(raw).trim().to_ascii_lowercase();
        let seconds = match value.as_str() {
            "none" => None,
            "zero" => Some(0),
            other => Some(
                parse_retention(other).ok_or_else(|| ProxyError::InvalidHeader {
                    header: RETENTION_HEADER,
                    value: truncate(&value),
                    allowed:
                        "none (no constraint), zero (no retention), or a duration such as 30d, 12h",
                })?,
            ),
        };
        doc.retention = Some(value);
        doc.retention_max_seconds = seconds;
    }
    Ok(doc)
}

fn parse_retention(text: &str) -> Option<u64> {
    if !text.chars().next()?.is_ascii_digit() {
        return None;
    }
    if !["s", "m", "h", "d"].iter().any(|u| text.ends_with(u)) || text.ends_with("ms") {
        return None;
    }
    parse_duration(text).ok().map(|d| d.as_secs())
}

/// Seconds of a registry retention fact (`30d`, `24h`, `none`); `None` when
/// the provider does not publish it.
pub fn retention_seconds(fact: &str) -> Option<u64> {
    match fact {
        "none" => Some(0),
        other => parse_retention(other),
    }
}

fn truncate(value: &str) -> String {
    value.chars().take(64).collect()
}

/// Counts personal data in every string of a JSON body (prompts, messages,
/// tool arguments). Inline base64 payloads (images, audio) are skipped.
pub fn scan_json(body: &Value) -> BTreeMap<&'static str, u32> {
    let mut counts = Counts::default();
    visit_strings(body, &mut |text| {
        if !(text.starts_with("data:") && text.contains(";base64,")) {
            scan_text(text, &mut counts);
        }
    });
    counts.into_map()
}

fn visit_strings(value: &Value, f: &mut impl FnMut(&str)) {
    match value {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter().for_each(|v| visit_strings(v, f)),
        Value::Object(map) => map.values().for_each(|v| visit_strings(v, f)),
        _ => {}
    }
}

#[derive(Default, Debug, PartialEq, Eq)]
pub struct Counts {
    pub email: u32,
    pub phone: u32,
    pub iban: u32,
    pub card: u32,
    pub national_id: u32,
}

impl Counts {
    pub fn into_map(self) -> BTreeMap<&'static str, u32> {
        [
            ("email", self.email),
            ("phone", self.phone),
            ("iban", self.iban),
            ("card", self.card),
            ("national_id", self.national_id),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect()
    }
}

/// One pass over the text. Each detector validates what it finds (Luhn for
/// cards, mod-97 for IBANs, check keys for national ids) so that random
/// digits are not counted.
pub fn scan_text(text: &str, counts: &mut Counts) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'@' {
            if let Some(end) = email_at(bytes, i) {
                counts.email += 1;
                i = end;
                continue;
            }
        } else if b.is_ascii_uppercase() && at_word_start(bytes, i) {
            if let Some(end) = iban_at(bytes, i) {
                counts.iban += 1;
                i = end;
                continue;
            }
        } else if (b.is_ascii_digit() || b == b'+') && at_word_start(bytes, i) {
            if let Some((kind, end)) = number_at(bytes, i) {
                match kind {
                    NumberKind::Card => counts.card += 1,
                    NumberKind::Phone => counts.phone += 1,
                    NumberKind::NationalId => counts.national_id += 1,
                }
                i = end;
                continue;
            }
            // Skip the rest of this digit run: its suffixes are not new candidates.
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'+') {
                i += 1;
            }
            continue;
        }
        i += 1;
    }
}

fn at_word_start(bytes: &[u8], i: usize) -> bool {
    i == 0 || !bytes[i - 1].is_ascii_alphanumeric()
}

fn is_local_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._%+-".contains(&b)
}

/// `local@domain.tld`, with the `@` at `at`; returns the end of the domain.
fn email_at(bytes: &[u8], at: usize) -> Option<usize> {
    let mut start = at;
    while start > 0 && is_local_char(bytes[start - 1]) {
        start -= 1;
    }
    if start == at || bytes[start] == b'.' {
        return None;
    }
    let mut end = at + 1;
    while end < bytes.len()
        && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'-' || bytes[end] == b'.')
    {
        end += 1;
    }
    while end > at + 1 && bytes[end - 1] == b'.' {
        end -= 1;
    }
    let domain = std::str::from_utf8(&bytes[at + 1..end]).ok()?;
    let (host, tld) = domain.rsplit_once('.')?;
    if host.is_empty() || host.starts_with('.') || host.contains("..") {
        return None;
    }
    if tld.len() < 2 || !tld.bytes().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    Some(end)
}

/// Country code, two check digits, then 11-30 alphanumerics, optionally in
/// groups of four separated by single spaces; valid under ISO 7064 mod 97-10.
fn iban_at(bytes: &[u8], start: usize) -> Option<usize> {
    if bytes.len() < start + 15
        || !bytes[start + 1].is_ascii_uppercase()
        || !bytes[start + 2].is_ascii_digit()
        || !bytes[start + 3].is_ascii_digit()
    {
        return None;
    }
    let mut chars = Vec::with_capacity(34);
    let mut end = start;
    let mut i = start;
    while i < bytes.len() && chars.len() < 34 {
        let b = bytes[i];
        if b.is_ascii_digit() || b.is_ascii_uppercase() {
            chars.push(b);
            i += 1;
            end = i;
        } else if b == b' '
            && i + 1 < bytes.len()
            && bytes[i + 1].is_ascii_alphanumeric()
            && chars.len() % 4 == 0
        {
            i += 1;
        } else {
            break;
        }
    }
    if end < bytes.len() && bytes[end].is_ascii_alphanumeric() {
        return None;
    }
    let expected = iban_length(&chars[..2])?;
    if chars.len() != expected {
        return None;
    }
    // Move the first four characters to the end, letters to numbers, mod 97.
    let mut remainder: u32 = 0;
    for &c in chars[4..].iter().chain(&chars[..4]) {
        let value = if c.is_ascii_digit() {
            u32::from(c - b'0')
        } else {
            u32::from(c - b'A') + 10
        };
        remainder = if value >= 10 {
            (remainder * 100 + value) % 97
        } else {
            (remainder * 10 + value) % 97
        };
    }
    (remainder == 1).then_some(end)
}

/// IBAN lengths of SEPA countries (ISO 13616 registry).
fn iban_length(country: &[u8]) -> Option<usize> {
    let len = match country {
        b"AD" => 24,
        b"AT" => 20,
        b"BE" => 16,
        b"BG" => 22,
        b"CH" => 21,
        b"CY" => 28,
        b"CZ" => 24,
        b"DE" => 22,
        b"DK" => 18,
        b"EE" => 20,
        b"ES" => 24,
        b"FI" => 18,
        b"FR" => 27,
        b"GB" => 22,
        b"GI" => 23,
        b"GR" => 27,
        b"HR" => 21,
        b"HU" => 28,
        b"IE" => 22,
        b"IS" => 26,
        b"IT" => 27,
        b"LI" => 21,
        b"LT" => 20,
        b"LU" => 20,
        b"LV" => 21,
        b"MC" => 27,
        b"MT" => 31,
        b"NL" => 18,
        b"NO" => 15,
        b"PL" => 28,
        b"PT" => 25,
        b"RO" => 24,
        b"SE" => 24,
        b"SI" => 19,
        b"SK" => 24,
        b"SM" => 27,
        b"VA" => 22,
        _ => return None,
    };
    Some(len)
}

enum NumberKind {
    Card,
    Phone,
    NationalId,
}

/// A run of digits with single spaces, dashes, dots or parentheses between
/// groups (and an optional leading `+`), then what it is: a payment card
/// (13-19 digits, Luhn, a known prefix), a French NIR or a Spanish DNI
/// (check key), or a phone number (`+` and 8-15 digits, or a national
/// number starting with 0 written in groups).
fn number_at(bytes: &[u8], start: usize) -> Option<(NumberKind, usize)> {
    let plus = bytes[start] == b'+';
    let mut digits = Vec::with_capacity(20);
    let mut i = start + usize::from(plus);
    let mut end = i;
    let mut separators = 0;
    while i < bytes.len() && digits.len() <= 19 {
        let b = bytes[i];
        if b.is_ascii_digit() {
            digits.push(b - b'0');
            i += 1;
            end = i;
        } else if is_separator(b) && (!digits.is_empty() || (plus && b == b' ')) {
            // Up to two separators between groups: "1 (415) 555-0132".
            let mut j = i;
            while j < bytes.len() && j - i < 2 && is_separator(bytes[j]) {
                j += 1;
            }
            if j < bytes.len() && bytes[j].is_ascii_digit() {
                separators += 1;
                i = j;
            } else {
                break;
            }
        } else {
            break;
        }
    }
    let next = bytes.get(end).copied();
    // Spanish DNI: eight digits and the check letter.
    if digits.len() == 8 && separators == 0 && !plus {
        if let Some(letter) = next.filter(u8::is_ascii_uppercase) {
            let n = digits.iter().fold(0u32, |acc, d| acc * 10 + u32::from(*d));
            let after = bytes.get(end + 1).copied();
            if b"TRWAGMYFPDXBNJZSQVHLCKE"[(n % 23) as usize] == letter
                && !after.is_some_and(|b| b.is_ascii_alphanumeric())
            {
                return Some((NumberKind::NationalId, end + 1));
            }
        }
    }
    if next.is_some_and(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    if !plus && (13..=19).contains(&digits.len()) && luhn(&digits) && card_prefix(&digits) {
        return Some((NumberKind::Card, end));
    }
    if !plus && digits.len() == 15 && nir_valid(&digits) {
        return Some((NumberKind::NationalId, end));
    }
    if plus && (8..=15).contains(&digits.len()) && digits[0] != 0 {
        return Some((NumberKind::Phone, end));
    }
    if !plus
        && digits.first() == Some(&0)
        && digits.get(1).is_some_and(|d| *d != 0)
        && (10..=11).contains(&digits.len())
        && separators >= 2
    {
        return Some((NumberKind::Phone, end));
    }
    None
}

fn is_separator(b: u8) -> bool {
    b" -.()".contains(&b)
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

/// Visa, Mastercard, American Express, Discover, JCB, Diners, UnionPay, Maestro.
fn card_prefix(digits: &[u8]) -> bool {
    let prefix = |n: usize| {
        digits[..n]
            .iter()
            .fold(0u32, |acc, d| acc * 10 + u32::from(*d))
    };
    match digits[0] {
        4 => true,
        5 => (51..=55).contains(&prefix(2)) || (50..=59).contains(&prefix(2)),
        2 => (2221..=2720).contains(&prefix(4)),
        3 => matches!(prefix(2), 34 | 37 | 36 | 38 | 30) || (3528..=3589).contains(&prefix(4)),
        6 => matches!(prefix(2), 62 | 64 | 65 | 67 | 63) || prefix(4) == 6011,
        _ => false,
    }
}

/// French NIR (numéro de sécurité sociale): sex digit 1 or 2, then the key is
/// 97 - (first 13 digits mod 97). Corsican departments (2A/2B) are written
/// with letters and are not matched here.
fn nir_valid(digits: &[u8]) -> bool {
    if !matches!(digits[0], 1 | 2) {
        return false;
    }
    let month = digits[3] * 10 + digits[4];
    if !(1..=12).contains(&month) && !(20..=42).contains(&month) && !(50..=99).contains(&month) {
        return false;
    }
    let body = digits[..13]
        .iter()
        .fold(0u64, |acc, d| acc * 10 + u64::from(*d));
    let key = u64::from(digits[13]) * 10 + u64::from(digits[14]);
    97 - body % 97 == key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(text: &str) -> Counts {
        let mut counts = Counts::default();
        scan_text(text, &mut counts);
        counts
    }

    #[test]
    fn true_positives() {
        let c = scan("Mail jane.doe+billing@example.co.uk or bob@corp.example.");
        assert_eq!(c.email, 2);
        assert_eq!(scan("IBAN DE89 3704 0044 0532 0130 00 please").iban, 1);
        assert_eq!(scan("FR1420041010050500013M02606").iban, 1);
        assert_eq!(scan("GB82WEST12345698765432").iban, 1);
        assert_eq!(scan("card 4111 1111 1111 1111 exp 12/29").card, 1);
        assert_eq!(scan("card 5500-0000-0000-0004").card, 1);
        assert_eq!(scan("amex 378282246310005").card, 1);
        assert_eq!(scan("call +33 6 12 34 56 78 today").phone, 1);
        assert_eq!(scan("call +1 (415) 555-0132").phone, 1);
        assert_eq!(scan("appelez le 06 12 34 56 78").phone, 1);
        assert_eq!(scan("DNI 12345678Z").national_id, 1);
        // 1 84 12 76 451 089 key 46
        assert_eq!(scan("NIR 184127645108946").national_id, 1);
    }

    #[test]
    fn false_positives_are_rejected() {
        // 16 digits failing Luhn: not a card.
        assert_eq!(scan("order 4111111111111112").card, 0);
        assert_eq!(scan("id 1234567812345678").card, 0);
        // An IBAN with a wrong check digit.
        assert_eq!(scan("DE88370400440532013000").iban, 0);
        // Plain numbers, versions, dates, model names.
        let c = scan("gpt-4o-2024-08-06 costs 1234567 tokens on 2024-11-28, v1.2.3, port 8443");
        assert_eq!(c, Counts::default());
        // A DNI letter that does not match.
        assert_eq!(scan("12345678A").national_id, 0);
        // Not an email.
        assert_eq!(scan("user@localhost and @handle and a@b").email, 0);
        // Digits inside a longer token.
        assert_eq!(scan("sk-4111111111111111abc").card, 0);
    }

    #[test]
    fn json_scan_counts_every_string_but_skips_inline_media() {
        let body = serde_json::json!({
            "model": "gpt-4o",
            "messages": [
                {"role": "user", "content": "my email is a.b@example.com"},
                {"role": "user", "content": [
                    {"type": "text", "text": "and my IBAN is DE89370400440532013000"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,DE89370400440532013000"}}
                ]}
            ],
            "tools": [{"type": "function", "function": {"name": "pay", "parameters": {"description": "call +33612345678"}}}]
        });
        let counts = scan_json(&body);
        assert_eq!(counts.get("email"), Some(&1));
        assert_eq!(counts.get("iban"), Some(&1));
        assert_eq!(counts.get("phone"), Some(&1));
        assert_eq!(counts.get("card"), None);
    }

    #[test]
    fn headers() {
        let d = declared(Some(b"Personal"), Some(b"30d")).unwrap();
        assert_eq!(d.classification.as_deref(), Some("personal"));
        assert_eq!(d.retention_max_seconds, Some(30 * 86400));
        let d = declared(None, Some(b"zero")).unwrap();
        assert_eq!(d.retention_max_seconds, Some(0));
        let d = declared(None, Some(b"none")).unwrap();
        assert_eq!(
            (d.retention.as_deref(), d.retention_max_seconds),
            (Some("none"), None)
        );
        let err = declared(Some(b"secret"), None).unwrap_err();
        assert_eq!(err.status(), 400);
        assert!(err.to_string().contains("x-data-classification"));
        assert!(err.to_string().contains("special-category"));
        for bad in [&b"forever"[..], b"30", b"-1d", b"10ms"] {
            let err = declared(None, Some(bad)).unwrap_err();
            assert!(err.to_string().contains("x-data-retention"), "{err}");
        }
    }

    #[test]
    fn registry_retention_facts() {
        assert_eq!(retention_seconds("30d"), Some(2_592_000));
        assert_eq!(retention_seconds("24h"), Some(86_400));
        assert_eq!(retention_seconds("none"), Some(0));
        assert_eq!(retention_seconds("unspecified"), None);
    }
}
