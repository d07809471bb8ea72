//! Personal-data detection in request text.
//!
//! The proxy only needs to know *how many* items of each kind a request
//! carries, so every detector validates what it finds (checksums, dates,
//! registry lengths, the phone-number database) and the matched text never
//! leaves this module. The scan is a single left-to-right pass: every
//! candidate is examined with a bounded look-ahead (or, for e-mail, a
//! bounded look-behind), so the cost is linear in the text and nothing is
//! allocated per character. The README's "What the scan detects" section lists each format, its validation,
//! whether it needs a context keyword and what is knowingly not detected.

use std::collections::BTreeMap;

use phonenumber::country::Id;

#[derive(Default, Debug, PartialEq, Eq, Clone)]
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

    pub fn add(&mut self, other: &Counts) {
        self.email = self.email.saturating_add(other.email);
        self.phone = self.phone.saturating_add(other.phone);
        self.iban = self.iban.saturating_add(other.iban);
        self.card = self.card.saturating_add(other.card);
        self.national_id = self.national_id.saturating_add(other.national_id);
    }

    pub fn is_empty(&self) -> bool {
        *self == Counts::default()
    }
}

/// One pass over a text; each detector validates what it finds so random
/// digits are not counted.
pub fn scan_text(text: &str, counts: &mut Counts) {
    let readable = as_read(text);
    scan(&readable, |found| {
        let slot = match found {
            Found::Email => &mut counts.email,
            Found::Phone => &mut counts.phone,
            Found::Iban => &mut counts.iban,
            Found::Card => &mut counts.card,
            Found::NationalId(_) => &mut counts.national_id,
        };
        *slot = slot.saturating_add(1);
    });
}

/// Same, also reporting the ISO country of each national id found (for tests
/// and the README table).
pub fn national_ids(text: &str) -> Vec<&'static str> {
    let mut countries = Vec::new();
    scan(&as_read(text), |found| {
        if let Found::NationalId(country) = found {
            countries.push(country);
        }
    });
    countries
}

/// The text as a reader (and a model) reads it: a link's
/// `jane.doe%40example.com` and a web page's `jane.doe&#64;example.com` are
/// the address. Escapes are undone only where there are some, and the result
/// is scanned instead of the raw text, not beside it, so nothing counts twice.
fn as_read(text: &str) -> std::borrow::Cow<'_, str> {
    let bytes = text.as_bytes();
    let escaped = bytes
        .windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit());
    let mut read = if escaped {
        percent_encoding::percent_decode_str(text).decode_utf8_lossy()
    } else {
        std::borrow::Cow::Borrowed(text)
    };
    if read.contains('&') {
        if let std::borrow::Cow::Owned(decoded) = html_escape::decode_html_entities(&read) {
            read = std::borrow::Cow::Owned(decoded);
        }
    }
    read
}

enum Found {
    Email,
    Phone,
    Iban,
    Card,
    NationalId(&'static str),
}

/// Library validations allowed per call before phone candidates are counted
/// on their shape alone: a parse costs microseconds, and a body crafted to be
/// all phone-shaped numbers must not turn the scan into a CPU sink. Counting
/// (rather than dropping) past the budget errs on the side of reporting.
const PHONE_BUDGET: u32 = 256;

fn scan(text: &str, mut on: impl FnMut(Found)) {
    let bytes = text.as_bytes();
    let mut phone_budget = PHONE_BUDGET;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'@' {
            if let Some(end) = email_at(text, i) {
                on(Found::Email);
                i = end;
            } else {
                i += 1;
            }
            continue;
        }
        if !at_word_start(bytes, i) {
            i += 1;
            continue;
        }
        if b.is_ascii_alphabetic() {
            match iban_at(bytes, i) {
                Iban::Valid(end) => {
                    on(Found::Iban);
                    i = end;
                    continue;
                }
                // Its groups are not new candidates: the tail of an IBAN
                // with a typo reads like a phone number.
                Iban::Invalid(end) => {
                    i = end;
                    continue;
                }
                Iban::No => {}
            }
            if let Some((country, end)) = letter_id_at(bytes, i) {
                on(Found::NationalId(country));
                i = end;
                continue;
            }
            i = skip_word(bytes, i);
            continue;
        }
        let starts_number = b.is_ascii_digit()
            || (matches!(b, b'+' | b'(') && bytes.get(i + 1).is_some_and(u8::is_ascii_digit));
        if starts_number {
            let token = Token::gather(bytes, i);
            if let Some(found) = classify_number(&token, bytes, i, &mut phone_budget) {
                on(found);
            }
            // Whether or not it matched, the digits inside this token are not
            // new candidates: re-reading its tail would find shorter numbers
            // that are only fragments of the one just rejected.
            i = skip_word(bytes, token.end.max(i + 1));
            continue;
        }
        i += 1;
    }
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Characters that glue a number to the identifier before it
/// (`build-20240806`, `v1.2.3`, `user@...`, `x_123`) also stop it from being
/// a candidate: what follows them is part of a name, not data.
fn at_word_start(bytes: &[u8], i: usize) -> bool {
    i == 0 || !(is_word_byte(bytes[i - 1]) || matches!(bytes[i - 1], b'.' | b'-' | b'@' | b'+'))
}

fn skip_word(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && is_word_byte(bytes[i]) {
        i += 1;
    }
    i
}

/// After a candidate: not glued to more word characters, an `@` (a local
/// part), or a `.`/`-`/`/` that continues into a longer identifier.
fn boundary_ok(bytes: &[u8], end: usize) -> bool {
    match bytes.get(end) {
        None => true,
        Some(&b) if is_word_byte(b) || b == b'@' => false,
        Some(b'.' | b'-' | b'/' | b':') => !bytes.get(end + 1).is_some_and(|&n| is_word_byte(n)),
        Some(_) => true,
    }
}

// ---------------------------------------------------------------- e-mail

fn is_local_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '.' | '_' | '%' | '+' | '-' | '\'')
}

fn is_label_char(c: char) -> bool {
    c.is_alphanumeric() || c == '-'
}

/// Top-level "domains" that are really file extensions: `icon@2x.png`,
/// `logo@3x.webp`, `styles@v2.css`.
const FILE_EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "tif", "tiff", "avif", "heic", "css",
    "scss", "js", "mjs", "cjs", "ts", "tsx", "jsx", "json", "yaml", "yml", "toml", "lock", "txt",
    "html", "htm", "xml", "map", "wasm", "pdf", "mp4", "mp3", "wav", "woff", "woff2", "ttf",
];

/// `local@domain.tld` with the `@` at byte `at`; returns the end of the domain.
/// Unicode local parts and IDN domains are accepted; SSH/SCP remotes
/// (`git@host:org/repo`), URL credentials (`https://user:pw@host`), retina
/// image names and `package@1.2.3` are not mailboxes.
fn email_at(text: &str, at: usize) -> Option<usize> {
    let mut start = at;
    for (taken, c) in text[..at].chars().rev().enumerate() {
        if taken == 64 || !is_local_char(c) {
            break;
        }
        start -= c.len_utf8();
    }
    let local = &text[start..at];
    if local.is_empty() || local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return None;
    }
    if url_credentials(text.as_bytes(), start) {
        return None;
    }

    let rest = &text[at + 1..];
    let mut end = 0;
    let mut labels = 0;
    let mut last_label = "";
    let mut first_label = "";
    loop {
        let label_len: usize = rest[end..]
            .chars()
            .take_while(|&c| is_label_char(c))
            .map(char::len_utf8)
            .sum();
        if label_len == 0 || end + label_len > 255 {
            break;
        }
        let label = &rest[end..end + label_len];
        if label.starts_with('-') || label.ends_with('-') {
            return None;
        }
        if labels == 0 {
            first_label = label;
        }
        labels += 1;
        last_label = label;
        end += label_len;
        if rest[end..].starts_with('.') && rest[end + 1..].starts_with(is_label_char) {
            end += 1;
        } else {
            break;
        }
    }
    if labels < 2 || !valid_tld(last_label) {
        return None;
    }
    if first_label.len() >= 2
        && first_label.ends_with(['x', 'X'])
        && first_label[..first_label.len() - 1]
            .bytes()
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let after = &rest[end..];
    if let Some(path) = after.strip_prefix(':') {
        if path.starts_with(|c: char| c.is_alphanumeric() || matches!(c, '/' | '~' | '.')) {
            return None;
        }
    }
    Some(at + 1 + end)
}

fn valid_tld(tld: &str) -> bool {
    let lower = tld.to_ascii_lowercase();
    if let Some(puny) = lower.strip_prefix("xn--") {
        return !puny.is_empty();
    }
    tld.chars().count() >= 2
        && tld.chars().all(char::is_alphabetic)
        && !FILE_EXTENSIONS.contains(&lower.as_str())
}

/// `scheme://user:password@host`: the part before `@` is a credential.
fn url_credentials(bytes: &[u8], local_start: usize) -> bool {
    let from = local_start.saturating_sub(256);
    let before = &bytes[from..local_start];
    let token = match before.iter().rposition(|b| b.is_ascii_whitespace()) {
        Some(ws) => &before[ws..],
        None => before,
    };
    // Only a URL's authority holds credentials (`scheme://user:pass@host`):
    // an address in its path or query (`/users?email=jane@…`) is an address.
    match token.windows(3).rposition(|w| w == b"://") {
        Some(at) => !token
            .get(at + 3..)
            .unwrap_or_default()
            .iter()
            .any(|b| matches!(b, b'/' | b'?' | b'#')),
        None => false,
    }
}

// ------------------------------------------------------------------ IBAN

/// Country code, two check digits and the BBAN, in any case, with single
/// spaces anywhere after the first four characters; exactly the registry
/// length of that country and valid under ISO 7064 mod 97-10.
enum Iban {
    Valid(usize),
    Invalid(usize),
    No,
}

fn iban_at(bytes: &[u8], start: usize) -> Iban {
    let Some(head) = bytes.get(start..start + 4) else {
        return Iban::No;
    };
    if !(head[0].is_ascii_alphabetic()
        && head[1].is_ascii_alphabetic()
        && head[2].is_ascii_digit()
        && head[3].is_ascii_digit())
    {
        return Iban::No;
    }
    let country = [head[0].to_ascii_uppercase(), head[1].to_ascii_uppercase()];
    let Some(expected) = iban_length(&country) else {
        return Iban::No;
    };
    let mut chars = [0u8; 34];
    let mut n = 0;
    let mut i = start;
    while n < expected && i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_alphanumeric() {
            chars[n] = b.to_ascii_uppercase();
            n += 1;
            i += 1;
        } else if b == b' ' && n >= 4 && bytes.get(i + 1).is_some_and(u8::is_ascii_alphanumeric) {
            i += 1;
        } else {
            break;
        }
    }
    if n < expected.min(15) {
        return Iban::No;
    }
    if n != expected || !boundary_ok(bytes, i) {
        return Iban::Invalid(i);
    }
    let chars = &chars[..n];
    // Every registry BBAN is mostly digits; prose whose words happen to be
    // joined by the space tolerance is mostly letters.
    let digits = chars[4..].iter().filter(|c| c.is_ascii_digit()).count();
    if digits * 2 < n - 4 {
        return Iban::No;
    }
    let mut remainder: u32 = 0;
    for &c in chars[4..].iter().chain(&chars[..4]) {
        remainder = if c.is_ascii_digit() {
            (remainder * 10 + u32::from(c - b'0')) % 97
        } else {
            (remainder * 100 + u32::from(c - b'A') + 10) % 97
        };
    }
    if remainder == 1 {
        Iban::Valid(i)
    } else {
        Iban::Invalid(i)
    }
}

/// IBAN lengths of every country in the ISO 13616 registry.
fn iban_length(country: &[u8; 2]) -> Option<usize> {
    let len = match country {
        b"AD" => 24,
        b"AE" => 23,
        b"AL" => 28,
        b"AT" => 20,
        b"AZ" => 28,
        b"BA" => 20,
        b"BE" => 16,
        b"BG" => 22,
        b"BH" => 22,
        b"BI" => 27,
        b"BR" => 29,
        b"BY" => 28,
        b"CH" => 21,
        b"CR" => 22,
        b"CY" => 28,
        b"CZ" => 24,
        b"DE" => 22,
        b"DJ" => 27,
        b"DK" => 18,
        b"DO" => 28,
        b"EE" => 20,
        b"EG" => 29,
        b"ES" => 24,
        b"FI" => 18,
        b"FK" => 18,
        b"FO" => 18,
        b"FR" => 27,
        b"GB" => 22,
        b"GE" => 22,
        b"GI" => 23,
        b"GL" => 18,
        b"GR" => 27,
        b"GT" => 28,
        b"HN" => 28,
        b"HR" => 21,
        b"HU" => 28,
        b"IE" => 22,
        b"IL" => 23,
        b"IQ" => 23,
        b"IS" => 26,
        b"IT" => 27,
        b"JO" => 30,
        b"KW" => 30,
        b"KZ" => 20,
        b"LB" => 28,
        b"LC" => 32,
        b"LI" => 21,
        b"LT" => 20,
        b"LU" => 20,
        b"LV" => 21,
        b"LY" => 25,
        b"MC" => 27,
        b"MD" => 24,
        b"ME" => 22,
        b"MK" => 19,
        b"MN" => 20,
        b"MR" => 27,
        b"MT" => 31,
        b"MU" => 30,
        b"NI" => 28,
        b"NL" => 18,
        b"NO" => 15,
        b"OM" => 23,
        b"PK" => 24,
        b"PL" => 28,
        b"PS" => 29,
        b"PT" => 25,
        b"QA" => 29,
        b"RO" => 24,
        b"RS" => 22,
        b"RU" => 33,
        b"SA" => 24,
        b"SC" => 31,
        b"SD" => 18,
        b"SE" => 24,
        b"SI" => 19,
        b"SK" => 24,
        b"SM" => 27,
        b"SO" => 23,
        b"ST" => 25,
        b"SV" => 28,
        b"TL" => 23,
        b"TN" => 24,
        b"TR" => 26,
        b"UA" => 29,
        b"VA" => 22,
        b"VG" => 24,
        b"XK" => 20,
        b"YE" => 30,
        _ => return None,
    };
    Some(len)
}

// ------------------------------------------------- ids starting with a letter

/// Italian codice fiscale, Spanish NIE and UK NINO.
fn letter_id_at(bytes: &[u8], start: usize) -> Option<(&'static str, usize)> {
    let word_end = skip_word(bytes, start);
    let word = &bytes[start..word_end];
    if word.len() == 16 && boundary_ok(bytes, word_end) && codice_fiscale(word) {
        return Some(("IT", word_end));
    }
    if let Some(end) = nie_at(bytes, start) {
        return Some(("ES", end));
    }
    if let Some(end) = nino_at(bytes, start) {
        return Some(("GB", end));
    }
    None
}

const CF_OMOCODIA: &[u8] = b"LMNPQRSTUV";
const CF_MONTHS: &[u8] = b"ABCDEHLMPRST";

/// 16 characters, digits possibly replaced by omocodia letters, a valid
/// birth date (day + 40 for women) and the check letter.
fn codice_fiscale(word: &[u8]) -> bool {
    let upper = word.iter().all(|b| !b.is_ascii_lowercase());
    let lower = word.iter().all(|b| !b.is_ascii_uppercase());
    if !(upper || lower) {
        return false;
    }
    let mut c = [0u8; 16];
    for (dst, src) in c.iter_mut().zip(word) {
        *dst = src.to_ascii_uppercase();
    }
    let digit = |b: u8| -> Option<u32> {
        if b.is_ascii_digit() {
            Some(u32::from(b - b'0'))
        } else {
            CF_OMOCODIA.iter().position(|&o| o == b).map(|p| p as u32)
        }
    };
    let letters_ok = [0, 1, 2, 3, 4, 5, 11, 15]
        .iter()
        .all(|&k| c[k].is_ascii_uppercase());
    if !letters_ok {
        return false;
    }
    let mut numeric = [0u32; 7];
    for (slot, &k) in numeric.iter_mut().zip(&[6usize, 7, 9, 10, 12, 13, 14]) {
        match digit(c[k]) {
            Some(d) => *slot = d,
            None => return false,
        }
    }
    let Some(month) = CF_MONTHS.iter().position(|&m| m == c[8]) else {
        return false;
    };
    let day = (numeric[2] * 10 + numeric[3]) % 40;
    // The century is not encoded: any leap year accepts 29 February.
    if !valid_date(2000, month as u32 + 1, day) {
        return false;
    }
    const ODD: [u32; 26] = [
        1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24,
        23,
    ];
    let mut sum = 0;
    for (k, &b) in c[..15].iter().enumerate() {
        let v = if b.is_ascii_digit() {
            usize::from(b - b'0')
        } else {
            usize::from(b - b'A')
        };
        sum += if k % 2 == 0 { ODD[v] } else { v as u32 };
    }
    c[15] == b'A' + (sum % 26) as u8
}

/// X/Y/Z, seven digits and the DNI check letter (`X-2482300-W` too).
fn nie_at(bytes: &[u8], start: usize) -> Option<usize> {
    let prefix = match bytes[start] {
        b'X' => 0,
        b'Y' => 1,
        b'Z' => 2,
        _ => return None,
    };
    let mut i = start + 1;
    if bytes.get(i) == Some(&b'-') {
        i += 1;
    }
    let mut n: u32 = prefix;
    for _ in 0..7 {
        let d = *bytes.get(i).filter(|b| b.is_ascii_digit())?;
        n = n * 10 + u32::from(d - b'0');
        i += 1;
    }
    if bytes.get(i) == Some(&b'-') {
        i += 1;
    }
    let letter = *bytes.get(i)?;
    i += 1;
    (dni_letter(n) == letter && boundary_ok(bytes, i)).then_some(i)
}

fn dni_letter(n: u32) -> u8 {
    b"TRWAGMYFPDXBNJZSQVHLCKE"[(n % 23) as usize]
}

/// Two prefix letters (D, F, I, Q, U, V never; O never second; BG, GB, KN,
/// NK, NT, TN, ZZ unallocated), six digits (optionally in pairs), suffix A-D.
fn nino_at(bytes: &[u8], start: usize) -> Option<usize> {
    let (a, b) = (bytes[start], *bytes.get(start + 1)?);
    if !a.is_ascii_uppercase() || !b.is_ascii_uppercase() {
        return None;
    }
    if b"DFIQUV".contains(&a) || b"DFIOQUV".contains(&b) {
        return None;
    }
    if matches!(
        &[a, b],
        b"BG" | b"GB" | b"KN" | b"NK" | b"NT" | b"TN" | b"ZZ"
    ) {
        return None;
    }
    let mut i = start + 2;
    for pair in 0..3 {
        if bytes.get(i) == Some(&b' ') && (pair > 0 || bytes.get(i + 1).is_some()) {
            i += 1;
        }
        for _ in 0..2 {
            bytes.get(i).filter(|b| b.is_ascii_digit())?;
            i += 1;
        }
    }
    if bytes.get(i) == Some(&b' ') {
        i += 1;
    }
    let suffix = *bytes.get(i)?;
    i += 1;
    (b"ABCD".contains(&suffix) && boundary_ok(bytes, i)).then_some(i)
}

// ------------------------------------------------------------ number tokens

const MAX_CHARS: usize = 20;

/// A run of digits (and the letters some ids carry) with single separators
/// between groups, gathered once per candidate start; every number detector
/// reads this compact form instead of re-scanning the text.
#[derive(Clone, Copy)]
struct Token {
    chars: [u8; MAX_CHARS],
    /// `seps[k]`: the separator written between `chars[k]` and `chars[k + 1]`.
    seps: [u8; MAX_CHARS],
    len: usize,
    plus: bool,
    paren: bool,
    end: usize,
}

fn is_separator(b: u8) -> bool {
    matches!(b, b' ' | b'-' | b'.' | b'/' | b'(' | b')' | b'+')
}

impl Token {
    fn gather(bytes: &[u8], start: usize) -> Token {
        let mut t = Token {
            chars: [0; MAX_CHARS],
            seps: [0; MAX_CHARS],
            len: 0,
            plus: bytes[start] == b'+',
            paren: bytes[start] == b'(',
            end: start,
        };
        let mut i = start + usize::from(t.plus || t.paren);
        while i < bytes.len() {
            let b = bytes[i];
            if b.is_ascii_alphanumeric() {
                if t.len == MAX_CHARS {
                    // Too long to be any of the formats: marks the token as
                    // glued to more characters so the boundary check fails.
                    break;
                }
                t.chars[t.len] = b.to_ascii_uppercase();
                t.len += 1;
                i += 1;
                t.end = i;
            } else if t.len > 0 && is_separator(b) {
                // Up to two separators between groups: "1 (415) 555-0132".
                let mut j = i;
                while j < bytes.len() && j - i < 2 && is_separator(bytes[j]) {
                    j += 1;
                }
                if j < bytes.len() && bytes[j].is_ascii_digit() {
                    let run = &bytes[i..j];
                    let sep = run.iter().copied().find(|&s| s != b' ').unwrap_or(b' ');
                    t.seps[t.len - 1] = sep;
                    i = j;
                } else {
                    break;
                }
            } else {
                break;
            }
        }
        t
    }

    fn chars(&self) -> &[u8] {
        &self.chars[..self.len]
    }

    fn all_digits(&self) -> bool {
        self.chars().iter().all(u8::is_ascii_digit)
    }

    fn separators(&self) -> impl Iterator<Item = (usize, u8)> + '_ {
        self.seps[..self.len.saturating_sub(1)]
            .iter()
            .enumerate()
            .filter(|(_, s)| **s != 0)
            .map(|(k, s)| (k + 1, *s))
    }

    fn sep_count(&self) -> usize {
        self.separators().count()
    }

    fn uniform_separators(&self) -> bool {
        let mut seps = self.separators().map(|(_, s)| s);
        let first = seps.next();
        seps.all(|s| Some(s) == first)
    }

    /// Lengths of the separated groups, into `out`; returns how many.
    fn groups(&self, out: &mut [usize; MAX_CHARS]) -> usize {
        let mut count = 0;
        let mut from = 0;
        for (k, _) in self.separators() {
            out[count] = k - from;
            count += 1;
            from = k;
        }
        out[count] = self.len - from;
        count + 1
    }

    /// Exactly one separator, of one of `allowed`, after `at` characters.
    fn only_sep_at(&self, at: usize, allowed: &[u8]) -> bool {
        let mut seps = self.separators();
        matches!(seps.next(), Some((k, s)) if k == at && allowed.contains(&s))
            && seps.next().is_none()
    }

    fn digit(&self, k: usize) -> u32 {
        u32::from(self.chars[k] - b'0')
    }

    fn num(&self, from: usize, to: usize) -> u64 {
        self.chars[from..to]
            .iter()
            .fold(0, |acc, d| acc * 10 + u64::from(d - b'0'))
    }
}

fn classify_number(t: &Token, bytes: &[u8], start: usize, budget: &mut u32) -> Option<Found> {
    if t.len == 0 || !boundary_ok(bytes, t.end) {
        return None;
    }
    let ctx = Context {
        before: &bytes[start.saturating_sub(CONTEXT_BYTES)..start],
    };
    if !t.plus && !t.paren {
        if t.all_digits()
            && (13..=19).contains(&t.len)
            && card_grouping(t)
            && luhn(t.chars())
            && card_prefix(t.chars())
        {
            return Some(Found::Card);
        }
        if let Some(country) = national_id(t, &ctx) {
            return Some(Found::NationalId(country));
        }
    }
    if t.all_digits() && phone(t, &ctx, budget) {
        return Some(Found::Phone);
    }
    None
}

// -------------------------------------------------------------- checksums

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d - b'0');
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

/// Unbroken, or in the groups printed on cards (4-4-4-4, 4-6-5, 4-4-4-4-3):
/// a list of numbers joined by spaces is not a card.
fn card_grouping(t: &Token) -> bool {
    if t.sep_count() == 0 {
        return true;
    }
    let mut groups = [0usize; MAX_CHARS];
    let g = t.groups(&mut groups);
    t.uniform_separators() && groups[0] == 4 && groups[1..g].iter().all(|n| (3..=6).contains(n))
}

/// Known IIN ranges, each with the lengths its brand issues: Visa,
/// Mastercard, American Express, Diners, JCB, Discover, UnionPay, Maestro.
fn card_prefix(digits: &[u8]) -> bool {
    let prefix = |n: usize| {
        digits[..n]
            .iter()
            .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'))
    };
    let len = digits.len();
    let (p2, p4) = (prefix(2), prefix(4));
    match digits[0] {
        b'4' => matches!(len, 13 | 16 | 19),
        b'5' if (51..=55).contains(&p2) => len == 16,
        b'2' if (2221..=2720).contains(&p4) => len == 16,
        b'3' if matches!(p2, 34 | 37) => len == 15,
        b'3' if matches!(p2, 30 | 36 | 38) => len >= 14,
        b'3' if (3528..=3589).contains(&p4) => len >= 16,
        b'6' if p4 == 6011 || matches!(p2, 62 | 64 | 65) => len >= 16,
        // Maestro: every length from 12 digits.
        b'5' if matches!(p2, 50 | 56..=59) => true,
        b'6' if matches!(p2, 63 | 67) => true,
        _ => false,
    }
}

fn verhoeff(digits: &[u8]) -> bool {
    const D: [[u8; 10]; 10] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
        [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
        [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
        [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
        [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
        [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
        [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
        [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
        [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
    ];
    const P: [[u8; 10]; 8] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
        [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
        [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
        [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
        [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
        [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
        [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
    ];
    let mut c = 0u8;
    for (i, &d) in digits.iter().rev().enumerate() {
        c = D[usize::from(c)][usize::from(P[i % 8][usize::from(d - b'0')])];
    }
    c == 0
}

/// ISO 7064 mod 11,10 over all digits including the check digit.
fn mod_11_10(digits: &[u8]) -> bool {
    let mut check = 5u32;
    for &d in digits {
        let c = if check == 0 { 10 } else { check };
        check = ((c * 2) % 11 + u32::from(d - b'0')) % 10;
    }
    check == 1
}

fn weighted(t: &Token, weights: &[u32]) -> u32 {
    weights
        .iter()
        .enumerate()
        .map(|(k, w)| w * t.digit(k))
        .sum()
}

fn valid_date(year: u32, month: u32, day: u32) -> bool {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day)
}

// --------------------------------------------------------- context keywords

/// How far back a keyword may stand: about 40 characters of Latin text, or
/// fewer of Greek or Cyrillic (two bytes each).
const CONTEXT_BYTES: usize = 64;

struct Context<'a> {
    before: &'a [u8],
}

impl Context<'_> {
    /// Case-insensitive (ASCII) search for any keyword that starts a word;
    /// keywords of up to four bytes must also end one, so `nif` does not
    /// match inside `unified`.
    fn has(&self, keywords: &[&str]) -> bool {
        let w = self.before;
        keywords.iter().any(|kw| {
            let kw = kw.as_bytes();
            if kw.len() > w.len() {
                return false;
            }
            (0..=w.len() - kw.len()).any(|p| {
                w[p..p + kw.len()].eq_ignore_ascii_case(kw)
                    && (p == 0 || !w[p - 1].is_ascii_alphanumeric())
                    && (kw.len() > 4 || !w.get(p + kw.len()).is_some_and(u8::is_ascii_alphanumeric))
            })
        })
    }
}

const KW_AT: &[&str] = &[
    "sozialversicherungsnummer",
    "versicherungsnummer",
    "svnr",
    "sv-nr",
    "sv-nummer",
    "vsnr",
    "e-card",
];
const KW_BG: &[&str] = &[
    "егн",
    "ЕГН",
    "egn",
    "единен граждански",
    "Единен граждански",
];
const KW_HR: &[&str] = &["oib", "osobni identifikacijski"];
const KW_CY: &[&str] = &[
    "tin",
    "tic",
    "αφτ",
    "ΑΦΤ",
    "φορολογικ",
    "Φορολογικ",
    "tax identification",
    "tax id",
];
const KW_CZ: &[&str] = &["rodné", "rodne", "rodného", "r.č.", "rč", "birth number"];
const KW_SK_HINT: &[&str] = &["sloven", "slovak", "SK"];
const KW_DK: &[&str] = &["cpr"];
const KW_EE: &[&str] = &["isikukood", "eesti", "estonian"];
const KW_LT: &[&str] = &["asmens kod", "lietuv", "lithuanian"];
const KW_DE: &[&str] = &[
    "steuer-id",
    "steuerid",
    "steuer id",
    "steueridentifikationsnummer",
    "steuer-identifikationsnummer",
    "identifikationsnummer",
    "idnr",
    "id-nr",
    "tax id",
    "tin",
];
const KW_GR: &[&str] = &["amka", "ΑΜΚΑ", "αμκα", "Α.Μ.Κ.Α", "a.m.k.a"];
const KW_HU: &[&str] = &["taj", "tajszám", "taj-szám", "társadalombiztosítási"];
const KW_LV: &[&str] = &["personas kod", "personas koda", "p.k.", "personal code"];
const KW_MT: &[&str] = &[
    "karta tal-identit",
    "id card",
    "identity card",
    "maltese id",
    "id no",
    "id number",
];
const KW_NL: &[&str] = &[
    "bsn",
    "burgerservicenummer",
    "burger service nummer",
    "sofinummer",
    "sofi-nummer",
    "sofinr",
];
const KW_PT: &[&str] = &[
    "nif",
    "nipc",
    "contribuinte",
    "número fiscal",
    "numero fiscal",
    "identificação fiscal",
    "identificacao fiscal",
];
const KW_PHONE: &[&str] = &[
    "tel",
    "tél",
    "phone",
    "call",
    "calling",
    "mobile",
    "cell",
    "fax",
    "sms",
    "whatsapp",
    "ring",
    "ruf",
    "anruf",
    "mobil",
    "handy",
    "telefon",
    "appel",
    "portable",
    "téléphone",
    "llam",
    "móvil",
    "chiam",
    "cellulare",
    "bel me",
    "bellen",
    "zadzwo",
    "ring mig",
    "soita",
    "puhelin",
    "τηλ",
    "тел",
];
/// Words that make a grouped number a reference, not a phone.
const KW_NOT_PHONE: &[&str] = &[
    "version", "firmware", "build", "release", "isbn", "issn", "order", "bestell", "invoice",
    "rechnung", "ticket", "tracking", "serial", "sku", "part no", "ref", "batch",
];
const KW_PL: &[&str] = &["pesel", "numer ewidencyjny"];
const KW_SE: &[&str] = &["personnummer", "personnr", "pnr", "samordningsnummer"];

// ------------------------------------------------------------ national ids

/// Ids that need a keyword are tried first: their checksum alone is weak,
/// so when the keyword is there it also decides between look-alike formats.
fn national_id(t: &Token, ctx: &Context) -> Option<&'static str> {
    if let Some(country) = nir(t) {
        return Some(country);
    }
    let c = t.chars();
    let n = t.len;
    if !t.all_digits() {
        // Digits followed by letters.
        let digits = c.iter().take_while(|b| b.is_ascii_digit()).count();
        let letters = &c[digits..];
        if digits == 7 && (1..=2).contains(&letters.len()) && t.sep_count() == 0 {
            if letters.len() == 1 && b"MGAPLHBZ".contains(&letters[0]) && ctx.has(KW_MT) {
                return Some("MT");
            }
            if pps(t) {
                return Some("IE");
            }
        }
        if digits == 8 && letters.len() == 1 && t.sep_count() == 0 {
            if cyprus_tin(t) && ctx.has(KW_CY) {
                return Some("CY");
            }
            if dni_letter(t.num(0, 8) as u32) == letters[0] {
                return Some("ES");
            }
        }
        if (1..=6).contains(&digits)
            && letters.len() == 1
            && b"MGAPLHBZ".contains(&letters[0])
            && t.sep_count() == 0
            && ctx.has(KW_MT)
        {
            return Some("MT");
        }
        if hetu(t) {
            return Some("FI");
        }
        return None;
    }

    // Context-bound ids.
    match n {
        9 => {
            if bsn(t) && ctx.has(KW_NL) {
                return Some("NL");
            }
            if nif(t) && ctx.has(KW_PT) {
                return Some("PT");
            }
            if taj(t) && ctx.has(KW_HU) {
                return Some("HU");
            }
            if rodne_cislo(t) && ctx.has(KW_CZ) {
                return Some(czech_or_slovak(ctx));
            }
        }
        10 => {
            if cpr(t) && ctx.has(KW_DK) {
                return Some("DK");
            }
            if svnr(t) && ctx.has(KW_AT) {
                return Some("AT");
            }
            if egn(t) && ctx.has(KW_BG) {
                return Some("BG");
            }
            if rodne_cislo(t) && ctx.has(KW_CZ) {
                return Some(czech_or_slovak(ctx));
            }
            if (t.sep_count() == 0 && personnummer(t) || samordningsnummer(t)) && ctx.has(KW_SE) {
                return Some("SE");
            }
        }
        11 => {
            if pesel(t) && ctx.has(KW_PL) {
                return Some("PL");
            }
            if idnr(t) && ctx.has(KW_DE) {
                return Some("DE");
            }
            if mod_11_10(c) && ctx.has(KW_HR) {
                return Some("HR");
            }
            if isikukood(t) {
                if ctx.has(KW_LT) {
                    return Some("LT");
                }
                if ctx.has(KW_EE) {
                    return Some("EE");
                }
            }
            if amka(t) && ctx.has(KW_GR) {
                return Some("GR");
            }
            if personas_kods(t) && ctx.has(KW_LV) {
                return Some("LV");
            }
        }
        _ => {}
    }

    // Ids whose date and check digits are strong enough on their own.
    match n {
        10 => {
            if personnummer(t) && t.only_sep_at(6, b"-+") {
                return Some("SE");
            }
            if hetu(t) {
                return Some("FI");
            }
            if rodne_cislo(t) && t.only_sep_at(6, b"/") {
                return Some(czech_or_slovak(ctx));
            }
        }
        11 => {
            if belgian(t) {
                return Some("BE");
            }
            if fodselsnummer(t) {
                return Some("NO");
            }
            if personas_kods(t) && t.only_sep_at(6, b"-") && t.chars[0] != b'3' {
                return Some("LV");
            }
        }
        12 if (personnummer(t) || samordningsnummer(t) && ctx.has(KW_SE))
            && (t.sep_count() == 0 || t.only_sep_at(8, b"-+")) =>
        {
            return Some("SE");
        }
        13 => {
            if cnp(t) {
                return Some("RO");
            }
            if emso(t) {
                return Some("SI");
            }
            if matricule(t) {
                return Some("LU");
            }
            if ahv(t) {
                return Some("CH");
            }
        }
        _ => {}
    }
    None
}

fn czech_or_slovak(ctx: &Context) -> &'static str {
    if ctx.has(KW_SK_HINT) {
        "SK"
    } else {
        "CZ"
    }
}

/// French NIR: sex digit, year, month, department (2A/2B for Corsica),
/// commune, serial and a key of 97 - (first 13 digits mod 97).
fn nir(t: &Token) -> Option<&'static str> {
    if t.len != 15 || !matches!(t.chars[0], b'1' | b'2') {
        return None;
    }
    let c = t.chars();
    let corsica = match &c[5..7] {
        b"2A" => Some(19),
        b"2B" => Some(18),
        _ => None,
    };
    let digits_ok = c
        .iter()
        .enumerate()
        .all(|(k, b)| b.is_ascii_digit() || (corsica.is_some() && (k == 5 || k == 6)));
    if !digits_ok {
        return None;
    }
    let month = t.num(3, 5);
    if !(1..=12).contains(&month) && !(20..=42).contains(&month) && !(50..=99).contains(&month) {
        return None;
    }
    let department = match corsica {
        Some(d) => d,
        None => t.num(5, 7),
    };
    let body = t.num(0, 5) * 100_000_000 + department * 1_000_000 + t.num(7, 13);
    let key = t.num(13, 15);
    (97 - body % 97 == key).then_some("FR")
}

/// Irish PPSN: seven digits, the check letter and an optional second letter
/// (A/B/H in the 2013 format, which enters the check; W/T/X before).
fn pps(t: &Token) -> bool {
    const ALPHABET: &[u8] = b"WABCDEFGHIJKLMNOPQRSTUV";
    let c = t.chars();
    let check = c[7];
    let second = c.get(8).copied();
    let extra = match second {
        None => 0,
        Some(s @ (b'A' | b'B' | b'H')) => ALPHABET.iter().position(|&a| a == s).unwrap_or(0),
        Some(b'W' | b'T' | b'X') => 0,
        Some(_) => return false,
    };
    let sum: usize = (0..7).map(|k| (8 - k) * t.digit(k) as usize).sum::<usize>() + 9 * extra;
    ALPHABET[sum % 23] == check
}

/// Cyprus TIN (also the personal tax number): eight digits and a letter.
fn cyprus_tin(t: &Token) -> bool {
    const ODD: [u32; 10] = [1, 0, 5, 7, 9, 13, 15, 17, 19, 21];
    if &t.chars[..2] == b"12" {
        return false;
    }
    let sum: u32 = (0..8)
        .map(|k| {
            if k % 2 == 0 {
                ODD[t.digit(k) as usize]
            } else {
                t.digit(k)
            }
        })
        .sum();
    t.chars[8] == b'A' + (sum % 26) as u8
}

/// Finnish HETU: DDMMYY, the century sign (-/+ written as a separator, or a
/// letter), a three-digit individual number and the check character.
fn hetu(t: &Token) -> bool {
    const CHECK: &[u8] = b"0123456789ABCDEFHJKLMNPRSTUVWXY";
    let c = t.chars();
    let (century, rest) = if t.len == 10 && t.only_sep_at(6, b"-+") {
        (if t.seps[5] == b'+' { 1800 } else { 1900 }, &c[6..])
    } else if t.len == 11 && t.sep_count() == 0 {
        let century = match c[6] {
            b'A'..=b'F' => 2000,
            b'U'..=b'Y' => 1900,
            _ => return false,
        };
        (century, &c[7..])
    } else {
        return false;
    };
    if !c[..6].iter().chain(&rest[..3]).all(u8::is_ascii_digit) {
        return false;
    }
    let day = t.num(0, 2) as u32;
    let month = t.num(2, 4) as u32;
    let year = century + t.num(4, 6) as u32;
    let individual = rest[..3]
        .iter()
        .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'));
    if !valid_date(year, month, day) || !(2..900).contains(&individual) {
        return false;
    }
    let number = t.num(0, 6) * 1000 + u64::from(individual);
    rest[3] == CHECK[(number % 31) as usize]
}

/// Dutch BSN: the "11-proef" with weights 9..2 and -1.
fn bsn(t: &Token) -> bool {
    let sum = weighted(t, &[9, 8, 7, 6, 5, 4, 3, 2]) as i64 - i64::from(t.digit(8));
    sum % 11 == 0 && t.num(0, 9) > 0
}

/// Portuguese NIF: mod 11 with weights 9..2.
fn nif(t: &Token) -> bool {
    if t.chars[0] == b'0' {
        return false;
    }
    let s = weighted(t, &[9, 8, 7, 6, 5, 4, 3, 2]);
    (11 - s % 11) % 11 % 10 == t.digit(8)
}

/// Hungarian TAJ: weights 3 and 7 alternating, mod 10.
fn taj(t: &Token) -> bool {
    weighted(t, &[3, 7, 3, 7, 3, 7, 3, 7]) % 10 == t.digit(8)
}

/// Czech and Slovak rodné číslo: YYMMDD (month + 50 for women, + 20 when the
/// serials ran out), then three digits (before 1954) or four with the whole
/// number divisible by 11.
fn rodne_cislo(t: &Token) -> bool {
    if !(t.sep_count() == 0 || t.only_sep_at(6, b"/")) {
        return false;
    }
    let mut year = 1900 + t.num(0, 2) as u32;
    let month = (t.num(2, 4) % 50 % 20) as u32;
    let day = t.num(4, 6) as u32;
    if t.len == 9 {
        if year >= 1980 {
            year -= 100;
        }
        if year > 1953 {
            return false;
        }
    } else if year < 1954 {
        year += 100;
    }
    if !valid_date(year, month, day) {
        return false;
    }
    t.len == 9 || t.num(0, 9) % 11 % 10 == u64::from(t.digit(9))
}

/// Danish CPR: DDMMYY and a serial whose first digit fixes the century. The
/// mod 11 check was dropped in 2007, so only the date is checked (and the
/// keyword is always required).
fn cpr(t: &Token) -> bool {
    if !(t.sep_count() == 0 || t.only_sep_at(6, b"- ")) {
        return false;
    }
    let day = t.num(0, 2) as u32;
    let month = t.num(2, 4) as u32;
    let yy = t.num(4, 6) as u32;
    let s = t.digit(6);
    let year = if matches!(s, 5..=8) && yy >= 58 {
        1800 + yy
    } else if s <= 3 || (matches!(s, 4 | 9) && yy >= 37) {
        1900 + yy
    } else {
        2000 + yy
    };
    valid_date(year, month, day)
}

/// Austrian social insurance number: serial, check digit (weights
/// 3,7,9,_,5,8,4,2,1,6 mod 11) and DDMMYY (not always a real date).
fn svnr(t: &Token) -> bool {
    t.chars[0] != b'0' && weighted(t, &[3, 7, 9, 0, 5, 8, 4, 2, 1, 6]) % 11 == t.digit(3)
}

/// Bulgarian EGN: YYMMDD (month + 20 before 1900, + 40 after 1999) and a
/// weighted mod 11 check digit.
fn egn(t: &Token) -> bool {
    let mut year = 1900 + t.num(0, 2) as u32;
    let mut month = t.num(2, 4) as u32;
    if month > 40 {
        year += 100;
        month -= 40;
    } else if month > 20 {
        year -= 100;
        month -= 20;
    }
    valid_date(year, month, t.num(4, 6) as u32)
        && weighted(t, &[2, 4, 8, 5, 10, 9, 7, 3, 6]) % 11 % 10 == t.digit(9)
}

/// Swedish personnummer: (YY)YYMMDD, serial and a Luhn digit over the last
/// ten digits; the day is + 60 for coordination numbers.
fn personnummer(t: &Token) -> bool {
    let (date_at, year) = match t.len {
        10 => (0, 2000 + t.num(0, 2) as u32),
        12 => {
            let year = t.num(0, 4) as u32;
            if !(1800..=2100).contains(&year) {
                return false;
            }
            (2, year)
        }
        _ => return false,
    };
    let month = t.num(date_at + 2, date_at + 4) as u32;
    let day = t.num(date_at + 4, date_at + 6) as u32;
    valid_date(year, month, day) && luhn(&t.chars()[date_at..])
}

/// Coordination numbers (samordningsnummer, day + 60) collide with other
/// DDMMYY formats, so they are only taken next to a keyword.
fn samordningsnummer(t: &Token) -> bool {
    let date_at = if t.len == 12 { 2 } else { 0 };
    let day = t.num(date_at + 4, date_at + 6);
    if !(61..=91).contains(&day) {
        return false;
    }
    let mut shifted = *t;
    shifted.chars[date_at + 4] -= 6;
    personnummer(&shifted)
}

/// German Steuer-ID: no leading zero, one digit repeated two or three times
/// in the first ten (the others once), ISO 7064 mod 11,10.
fn idnr(t: &Token) -> bool {
    if t.chars[0] == b'0' {
        return false;
    }
    let mut seen = [0u8; 10];
    for k in 0..10 {
        seen[t.digit(k) as usize] += 1;
    }
    let repeated: Vec<u8> = seen.iter().copied().filter(|&n| n > 1).collect();
    repeated.len() == 1 && matches!(repeated[0], 2 | 3) && mod_11_10(t.chars())
}

/// Estonian isikukood and Lithuanian asmens kodas: century/sex digit,
/// YYMMDD, serial and a two-pass weighted mod 11 check digit.
fn isikukood(t: &Token) -> bool {
    let century = match t.chars[0] {
        b'1' | b'2' => 1800,
        b'3' | b'4' => 1900,
        b'5' | b'6' => 2000,
        _ => return false,
    };
    if !valid_date(
        century + t.num(1, 3) as u32,
        t.num(3, 5) as u32,
        t.num(5, 7) as u32,
    ) {
        return false;
    }
    let first: u32 = (0..10)
        .map(|k| (k as u32 % 9 + 1) * t.digit(k))
        .sum::<u32>()
        % 11;
    let check = if first == 10 {
        (0..10)
            .map(|k| ((k as u32 + 2) % 9 + 1) * t.digit(k))
            .sum::<u32>()
            % 11
    } else {
        first
    };
    check % 10 == t.digit(10)
}

/// Greek AMKA: DDMMYY and a Luhn check over all eleven digits.
fn amka(t: &Token) -> bool {
    let (day, month, yy) = (t.num(0, 2) as u32, t.num(2, 4) as u32, t.num(4, 6) as u32);
    (valid_date(1900 + yy, month, day) || valid_date(2000 + yy, month, day)) && luhn(t.chars())
}

/// Latvian personas kods: DDMMYY-CNNNN with the century digit C, or the
/// 2017 format starting with 32; same weighted check digit for both.
fn personas_kods(t: &Token) -> bool {
    if !(t.sep_count() == 0 || t.only_sep_at(6, b"-")) || t.chars[0] > b'3' {
        return false;
    }
    if &t.chars[..2] != b"32" {
        let century = t.digit(6);
        if century > 2
            || !valid_date(
                1800 + century * 100 + t.num(4, 6) as u32,
                t.num(2, 4) as u32,
                t.num(0, 2) as u32,
            )
        {
            return false;
        }
    }
    (1 + weighted(t, &[10, 5, 8, 4, 2, 1, 6, 3, 7, 9])) % 11 % 10 == t.digit(10)
}

/// Belgian national register number: YYMMDD (month + 20/40 for BIS numbers,
/// 00 when unknown), serial, and 97 - (first nine digits mod 97), with a 2
/// prefixed for people born from 2000.
fn belgian(t: &Token) -> bool {
    let month = t.num(2, 4);
    let day = t.num(4, 6);
    if !(month <= 12 || (20..=32).contains(&month) || (40..=52).contains(&month)) || day > 31 {
        return false;
    }
    let body = t.num(0, 9);
    let key = t.num(9, 11);
    97 - body % 97 == key || 97 - (2_000_000_000 + body) % 97 == key
}

/// Norwegian fødselsnummer: DDMMYY (D-numbers day + 40, H-numbers month
/// + 40), individual number fixing the century, and two mod 11 digits.
fn fodselsnummer(t: &Token) -> bool {
    let k1 = (11 - weighted(t, &[3, 7, 6, 1, 8, 9, 4, 5, 2]) % 11) % 11;
    let k2 = (11 - weighted(t, &[5, 4, 3, 2, 7, 6, 5, 4, 3, 2]) % 11) % 11;
    if k1 != t.digit(9) || k2 != t.digit(10) {
        return false;
    }
    let mut day = t.num(0, 2) as u32;
    let mut month = t.num(2, 4) as u32;
    let yy = t.num(4, 6) as u32;
    let individual = t.num(6, 9) as u32;
    if day >= 80 {
        return false;
    }
    if day > 40 {
        day -= 40;
    }
    if month > 40 {
        month -= 40;
    }
    let year = if individual < 500 {
        1900 + yy
    } else if individual < 750 && yy >= 54 {
        1800 + yy
    } else if yy < 40 {
        2000 + yy
    } else if individual >= 900 {
        1900 + yy
    } else {
        return false;
    };
    valid_date(year, month, day)
}

/// Polish PESEL: YYMMDD (month + 20 per century from 2000, + 80 for the
/// 1800s) and a weighted check digit.
fn pesel(t: &Token) -> bool {
    let month = t.num(2, 4) as u32;
    let century = match month / 20 {
        0 => 1900,
        1 => 2000,
        2 => 2100,
        3 => 2200,
        _ => 1800,
    };
    valid_date(century + t.num(0, 2) as u32, month % 20, t.num(4, 6) as u32)
        && (10 - weighted(t, &[1, 3, 7, 9, 1, 3, 7, 9, 1, 3]) % 10) % 10 == t.digit(10)
}

/// Romanian CNP: sex/century digit, YYMMDD, county, serial and a check digit
/// with weights 279146358279.
fn cnp(t: &Token) -> bool {
    let century = match t.chars[0] {
        b'1' | b'2' => 1900,
        b'3' | b'4' => 1800,
        b'5' | b'6' => 2000,
        b'7'..=b'9' => 1900,
        _ => return false,
    };
    let county = t.num(7, 9);
    if !matches!(county, 1..=48 | 51 | 52 | 70 | 80..=83) {
        return false;
    }
    if !valid_date(
        century + t.num(1, 3) as u32,
        t.num(3, 5) as u32,
        t.num(5, 7) as u32,
    ) {
        return false;
    }
    let check = weighted(t, &[2, 7, 9, 1, 4, 6, 3, 5, 8, 2, 7, 9]) % 11;
    (if check == 10 { 1 } else { check }) == t.digit(12)
}

/// Slovenian EMŠO: DDMMYYY, region, serial and a weighted mod 11 digit.
fn emso(t: &Token) -> bool {
    // Only Slovenian regions (50-59) and years 1900-2099: the JMBG of the
    // other former Yugoslav states shares the layout but is not reported as SI.
    let yyy = t.num(4, 7) as u32;
    if !(50..=59).contains(&t.num(7, 9)) || (100..900).contains(&yyy) {
        return false;
    }
    let year = if yyy < 100 { 2000 + yyy } else { 1000 + yyy };
    if !valid_date(year, t.num(2, 4) as u32, t.num(0, 2) as u32) {
        return false;
    }
    let total = weighted(t, &[7, 6, 5, 4, 3, 2, 7, 6, 5, 4, 3, 2]);
    (11 - total % 11) % 11 % 10 == t.digit(12)
}

/// Luxembourg matricule: YYYYMMDD, serial, then a Luhn and a Verhoeff check
/// digit, both over the first eleven digits.
fn matricule(t: &Token) -> bool {
    if !valid_date(t.num(0, 4) as u32, t.num(4, 6) as u32, t.num(6, 8) as u32) {
        return false;
    }
    let c = t.chars();
    let mut with_luhn = [0u8; 12];
    with_luhn[..11].copy_from_slice(&c[..11]);
    with_luhn[11] = c[11];
    let mut with_verhoeff = with_luhn;
    with_verhoeff[11] = c[12];
    luhn(&with_luhn) && verhoeff(&with_verhoeff)
}

/// Swiss AHV/AVS number: 756 then an EAN-13 check digit.
fn ahv(t: &Token) -> bool {
    if &t.chars[..3] != b"756" {
        return false;
    }
    let sum: u32 = (0..12)
        .map(|k| {
            if k % 2 == 0 {
                t.digit(k)
            } else {
                3 * t.digit(k)
            }
        })
        .sum();
    (10 - sum % 10) % 10 == t.digit(12)
}

// ----------------------------------------------------------------- phones

/// Countries whose national numbers are written with a trunk 0, tried in
/// turn for a number that starts with 0 (the text does not say which).
const TRUNK_ZERO_REGIONS: &[Id] = &[
    Id::FR,
    Id::DE,
    Id::GB,
    Id::IT,
    Id::NL,
    Id::BE,
    Id::AT,
    Id::CH,
    Id::IE,
    Id::SE,
    Id::FI,
];

/// Only shapes that people write as phone numbers reach the phone-number
/// database: `+` and 8-15 digits; `00` and an international number; a
/// national number starting with 0 in groups, taken on its own when it has
/// the unmistakable French (`06 12 34 56 78`) or British (`020 7946 0958`)
/// layout and otherwise only after a phone keyword, because some country's
/// plan accepts almost any 0-number; or a North American `(NXX) NXX-XXXX`.
fn phone(t: &Token, ctx: &Context, budget: &mut u32) -> bool {
    let c = t.chars();
    let n = t.len;
    if t.separators().any(|(_, s)| s == b'+') {
        return false;
    }
    let mut buf = [0u8; MAX_CHARS + 1];
    if t.plus {
        if !(8..=15).contains(&n) || c[0] == b'0' {
            return false;
        }
        return check_phone(None, c, &mut buf, budget);
    }
    if ctx.has(KW_NOT_PHONE) {
        return false;
    }
    let seps = t.sep_count();
    if n >= 10 && c.starts_with(b"00") && c[2] != b'0' && seps >= 1 {
        return (8..=15).contains(&(n - 2)) && check_phone(None, &c[2..], &mut buf, budget);
    }
    let mut groups = [0usize; MAX_CHARS];
    let g = t.groups(&mut groups);
    let groups = &groups[..g];
    if (9..=12).contains(&n)
        && c[0] == b'0'
        && c[1] != b'0'
        && seps >= 1
        && t.uniform_separators()
        && (2..=5).contains(&groups[0])
        && groups.iter().all(|&len| len >= 2)
    {
        if n == 10 && groups.iter().all(|&len| len == 2) {
            return check_phone(Some(Id::FR), c, &mut buf, budget);
        }
        if n == 11 && matches!(groups, [3, 4, 4] | [5, 6] | [4, 3, 4]) {
            return check_phone(Some(Id::GB), c, &mut buf, budget);
        }
        if !ctx.has(KW_PHONE) {
            return false;
        }
        for &region in TRUNK_ZERO_REGIONS {
            if check_phone(Some(region), c, &mut buf, budget) || *budget == 0 {
                return true;
            }
        }
        return false;
    }
    let north_american = n == 10
        && c[0] >= b'2'
        && ((t.paren && t.seps[2] == b')' && seps == 2)
            || (t.only_sep_at_all(&[3, 6], b"-.") && !t.paren));
    north_american && check_phone(Some(Id::US), c, &mut buf, budget)
}

impl Token {
    /// Separators exactly after the given positions, all the same one of `allowed`.
    fn only_sep_at_all(&self, at: &[usize], allowed: &[u8]) -> bool {
        let mut count = 0;
        let mut first = None;
        for (k, s) in self.separators() {
            if !at.contains(&k) || !allowed.contains(&s) || first.is_some_and(|f| f != s) {
                return false;
            }
            first = Some(s);
            count += 1;
        }
        count == at.len()
    }
}

fn check_phone(region: Option<Id>, digits: &[u8], buf: &mut [u8], budget: &mut u32) -> bool {
    if *budget == 0 {
        return true;
    }
    *budget -= 1;
    let plus = usize::from(region.is_none());
    buf[0] = b'+';
    buf[plus..plus + digits.len()].copy_from_slice(digits);
    let Ok(number) = std::str::from_utf8(&buf[..plus + digits.len()]) else {
        return false;
    };
    phonenumber::parse(region, number).is_ok_and(|p| phonenumber::is_valid(&p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_text_is_read_as_a_reader_reads_it() {
        let cases: &[(&str, u32)] = &[
            (
                "see https://crm.example.com/users?email=jane.doe%40example.com",
                1,
            ),
            ("jane.doe%40example.com", 1),
            ("mail jane.doe&#64;example.com", 1),
            ("mail jane.doe&#x40;example.com", 1),
            ("mail jane.doe&commat;example.com", 1),
            ("<a href=\"mailto:jane.doe&#64;example&#46;com\">", 1),
            // Raw and escaped in one text: each address once.
            ("a.b@example.com and c.d%40example.com", 2),
            ("jane.doe@example.com", 1),
            // Escapes that are not addresses, broken ones, bytes that are
            // not UTF-8 once decoded: nothing, and no panic.
            ("50% off, 100%25 sure, %zz, %4", 0),
            ("caf%E9 &amp; &#xZZ; &#99999999;", 0),
        ];
        for (text, emails) in cases {
            let mut counts = Counts::default();
            scan_text(text, &mut counts);
            assert_eq!(counts.email, *emails, "{text}");
        }
        // Credentials in a URL's authority are not an address; an address
        // in its path or query is.
        for (text, emails) in [
            ("ssh://git@github.com/org/repo.git", 0),
            ("https://user:secret@proxy.example.com:8080/", 0),
            ("https://unpkg.com/react@18.2.0/umd/react.js", 0),
            ("https://www.npmjs.com/package/@types/node", 0),
            ("https://example.com/users/jane.doe@example.com/profile", 1),
            ("https://example.com/?to=jane.doe@example.com#x", 1),
        ] {
            let mut counts = Counts::default();
            scan_text(text, &mut counts);
            assert_eq!(counts.email, emails, "{text}");
        }
        // An IBAN written in a URL is still one IBAN.
        let mut counts = Counts::default();
        scan_text(
            "https://pay.example/?iban=DE89%203704%200044%200532%200130%2000",
            &mut counts,
        );
        assert_eq!(counts.iban, 1);
    }

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
    fn counts_helpers() {
        let mut a = scan("bob@example.com");
        assert!(!a.is_empty());
        a.add(&scan("alice@example.org +33 6 12 34 56 78"));
        assert_eq!((a.email, a.phone), (2, 1));
        assert_eq!(a.clone().into_map().get("email"), Some(&2));
        assert!(!a.into_map().contains_key("card"));
        assert!(Counts::default().is_empty());
    }

    #[test]
    fn iban_case_and_spacing() {
        for text in [
            "de89370400440532013000",
            "De89 3704 0044 0532 0130 00",
            "DE89 370 400 440 532 013 000",
            "de8937040044 0532013000",
            "NO9386011117947",
            "SA0380000000608010167519",
            "BR1800360305000010009795493C1",
            "LC55HEMM000100010012001200023015",
        ] {
            assert_eq!(scan(text).iban, 1, "{text}");
        }
        assert_eq!(scan("DE89 3704 0044 0532 0130 001").iban, 0);
        assert_eq!(scan("de89 is what we wrote in 2019 in the doc").iban, 0);
    }

    #[test]
    fn email_rules() {
        for text in [
            "jürgen.müller@bücher.de",
            "用户@例子.广告",
            "info@xn--bcher-kva.de",
            "contact: Jane.Doe@Example.COM.",
            "root@mail.xn--p1ai",
        ] {
            assert_eq!(scan(text).email, 1, "{text}");
        }
        for text in [
            "git@github.com:org/repo.git",
            "icon@2x.png",
            "npm i package@1.2.3",
            "https://user:secret@example.com/path",
            "ssh://git@example.com/org/repo",
            "@decorator.name",
            "x@.com",
            "a.@example.com",
        ] {
            assert_eq!(scan(text).email, 0, "{text}");
        }
    }

    #[test]
    fn countries_reported() {
        assert_eq!(national_ids("PESEL 44051401359"), vec!["PL"]);
        assert_eq!(national_ids("RCCMNL83S18D969H"), vec!["IT"]);
        assert_eq!(national_ids("X-2482300-W"), vec!["ES"]);
        assert_eq!(national_ids("NINO AB 12 34 56 C"), vec!["GB"]);
        assert_eq!(national_ids("BSN 111222333"), vec!["NL"]);
        assert!(national_ids("111222333").is_empty());
    }

    /// A small deterministic generator: the test must not depend on a crate
    /// or on the run.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn never_panics_on_random_input() {
        let pieces = [
            "0",
            "1",
            "5",
            "9",
            " ",
            "-",
            ".",
            "/",
            "+",
            "(",
            ")",
            "@",
            ":",
            "A",
            "Z",
            "x",
            "é",
            "ü",
            "用",
            "😀",
            "\u{a0}",
            "\n",
            "DE",
            "89",
            "xn--",
            "2A",
            "_",
            "ΑΜΚΑ ",
            "BSN ",
            "CPR ",
        ];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..3000 {
            let len = rng.below(80);
            let text: String = (0..len).map(|_| pieces[rng.below(pieces.len())]).collect();
            let mut counts = Counts::default();
            scan_text(&text, &mut counts);
            national_ids(&text);
        }
        for _ in 0..300 {
            let bytes: Vec<u8> = (0..rng.below(200)).map(|_| rng.next() as u8).collect();
            let text = String::from_utf8_lossy(&bytes);
            scan(&text);
        }
        // Digit runs of every length around the formats, alone and grouped.
        for len in 1..40 {
            let digits: String = (0..len)
                .map(|_| char::from(b'0' + rng.below(10) as u8))
                .collect();
            for text in [
                digits.clone(),
                format!("+{digits}"),
                format!("({digits}"),
                format!("BSN {digits}"),
                format!("{digits}Z"),
                digits.chars().flat_map(|c| [c, ' ']).collect(),
            ] {
                scan(&text);
            }
        }
    }

    /// How often a random bare number of each length is counted, without
    /// any keyword around it (the README quotes these rates).
    #[test]
    fn random_numbers_rarely_match() {
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        let trials = 20_000;
        for len in 8..=19 {
            let (mut ids, mut any) = (0, 0);
            for _ in 0..trials {
                let digits: String = (0..len)
                    .map(|_| char::from(b'0' + rng.below(10) as u8))
                    .collect();
                let counts = scan(&format!("value {digits} here"));
                ids += counts.national_id;
                any += u32::from(!counts.is_empty());
            }
            let rate = |n: u32| f64::from(n) * 100.0 / f64::from(trials);
            println!(
                "{len} digits: {:.2}% any, {:.2}% national id",
                rate(any),
                rate(ids)
            );
            // Bare national ids must stay rarer than one random number in 200.
            assert!(rate(ids) < 0.5, "{len} digits: {}%", rate(ids));
        }
    }

    #[test]
    fn phone_library_never_panics_on_candidates() {
        let mut rng = Rng(42);
        let mut budget = u32::MAX;
        let mut buf = [0u8; MAX_CHARS + 1];
        for _ in 0..400 {
            let len = 8 + rng.below(8);
            let digits: Vec<u8> = (0..len).map(|_| b'0' + rng.below(10) as u8).collect();
            check_phone(None, &digits, &mut buf, &mut budget);
            check_phone(
                Some(TRUNK_ZERO_REGIONS[rng.below(11)]),
                &digits,
                &mut buf,
                &mut budget,
            );
        }
    }

    #[test]
    fn long_inputs_stay_linear() {
        let digits = "7".repeat(2 << 20);
        let spaced = "1 2 ".repeat(1 << 18);
        let at_signs = "a@".repeat(1 << 18);
        let phones = "06 12 34 56 78, ".repeat(1 << 14);
        let start = std::time::Instant::now();
        for text in [&digits, &spaced, &at_signs, &phones] {
            scan(text);
        }
        assert!(start.elapsed().as_secs() < 20, "{:?}", start.elapsed());
    }
}
