//! Reading a request body for the scan, whatever its shape: content codings
//! are undone (bounded), JSON is walked string by string without building a
//! document, multipart parts and form fields are read one by one, and inline
//! base64 is looked into. What cannot be read is reported, never skipped in
//! silence: the policies decide what an unread part means.
//!
//! Memory: the walk holds one string at a time, so reading a body costs its
//! decoded copy (when it was coded) plus a constant, not a document tree.

use std::io::Read;

use base64::Engine as _;
use bytes::Bytes;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Serialize;

use super::detect::{scan_text, Counts};

/// Why a part of the body was not scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnreadReason {
    /// A file upload that is not text (audio, images, PDFs, archives).
    BinaryUpload,
    /// Inline media (base64 images, audio, documents) inside a text body.
    Media,
    /// A `Content-Encoding` ecluse cannot decode.
    UnknownCoding,
    /// More parts or nesting than the reader follows.
    OverBound,
    /// Declared as a structured type (JSON, multipart) but not parseable as one.
    Malformed,
}

/// One part of a body the scan did not read, and where it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unread {
    pub reason: UnreadReason,
    #[serde(rename = "where")]
    pub location: String,
    pub detail: String,
}

impl Unread {
    pub fn new(reason: UnreadReason, location: &str, detail: &str) -> Unread {
        Unread {
            reason,
            location: location.chars().take(128).collect(),
            detail: detail.chars().take(128).collect(),
        }
    }
}

/// At most this many unread parts are listed; the last entry says how many more.
const MAX_UNREAD_LISTED: usize = 16;
/// Multipart parts read before the rest is reported as unread.
const MAX_PARTS: usize = 256;
/// Base64 inside base64 is looked into this deep.
const MAX_DECODE_DEPTH: u8 = 3;
/// A string this long, made only of base64 characters, is read as base64.
const MIN_BARE_BASE64: usize = 128;

/// What the scan of one body found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BodyScan {
    pub pii: Counts,
    pub unread: Vec<Unread>,
    /// JSON values walked (strings, numbers, objects, arrays...): what a
    /// document tree of the body would cost, should one be built.
    pub json_values: u64,
}

impl BodyScan {
    fn text(&mut self, text: &str, depth: u8) {
        if let Some(payload) = text.strip_prefix("data:") {
            if self.data_uri(payload, depth) {
                return;
            }
        } else if text.len() >= MIN_BARE_BASE64 && looks_like_bare_base64(text) {
            if let Some(bytes) = decode_base64(text) {
                self.decoded(&bytes, "inline base64", "binary data", depth);
                return;
            }
        }
        scan_text(text, &mut self.pii);
    }

    /// `data:[<type>][;base64],<payload>`; false when the string is not a
    /// well-formed data URI (it is then scanned as the text it is).
    fn data_uri(&mut self, rest: &str, depth: u8) -> bool {
        let Some((meta, payload)) = rest.split_once(',') else {
            return false;
        };
        let (media_type, is_base64) = match meta.strip_suffix(";base64") {
            Some(t) => (t, true),
            None => (meta, false),
        };
        if media_type.contains(char::is_whitespace) || media_type.len() > 128 {
            return false;
        }
        if !is_base64 {
            // Percent-encoded text: read it as text.
            let decoded = percent_decode(payload);
            self.nested_text(&decoded, depth);
            return true;
        }
        match decode_base64(payload) {
            Some(bytes) => {
                let media_type = if media_type.is_empty() {
                    "text/plain"
                } else {
                    media_type
                };
                self.decoded(&bytes, "data URI", media_type, depth);
                true
            }
            // Claims base64 but is not: whatever it is, it is text to scan.
            None => false,
        }
    }

    /// Decoded base64: text is scanned like any text, anything else is media
    /// the scan cannot read.
    fn decoded(&mut self, bytes: &[u8], location: &str, media_type: &str, depth: u8) {
        match as_text(bytes) {
            Some(text) if depth < MAX_DECODE_DEPTH => self.nested_text(text, depth),
            Some(_) => self.unread(UnreadReason::OverBound, location, "base64 nested too deep"),
            None => self.unread(UnreadReason::Media, location, media_type),
        }
    }

    fn nested_text(&mut self, text: &str, depth: u8) {
        let trimmed = text.trim_start();
        if (trimmed.starts_with('{') || trimmed.starts_with('['))
            && walk_json(text.as_bytes(), self, depth + 1).is_ok()
        {
            return;
        }
        self.text(text, depth + 1);
    }

    fn unread(&mut self, reason: UnreadReason, location: &str, detail: &str) {
        match self.unread.len() {
            n if n < MAX_UNREAD_LISTED => self.unread.push(Unread::new(reason, location, detail)),
            n if n == MAX_UNREAD_LISTED => self.unread.push(Unread::new(
                UnreadReason::OverBound,
                "body",
                "more unread parts than are listed",
            )),
            _ => {}
        }
    }
}

/// Scans a (decoded) body by its content type.
pub fn scan_body(content_type: Option<&str>, body: &[u8]) -> BodyScan {
    let mut scan = BodyScan::default();
    if body.is_empty() {
        return scan;
    }
    let essence = content_type
        .map(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    match essence.as_str() {
        "multipart/form-data" => scan_multipart(content_type.unwrap_or(""), body, &mut scan),
        "application/x-www-form-urlencoded" => scan_form(body, &mut scan),
        t if is_json_lines(t) => scan_json_lines(body, &mut scan),
        t if is_json(t) => {
            if let Err(e) = walk_json(body, &mut scan, 0) {
                scan.unread(UnreadReason::Malformed, "body", &format!("not JSON: {e}"));
                if let Some(text) = as_text(body) {
                    scan_text(text, &mut scan.pii);
                }
            }
        }
        t if is_text(t) || t.is_empty() => scan_untyped(body, "body", &mut scan),
        other => scan.unread(UnreadReason::BinaryUpload, "body", other),
    }
    scan
}

/// A body or part without a telling type: JSON if it parses, text if it is
/// text, otherwise binary.
fn scan_untyped(bytes: &[u8], location: &str, scan: &mut BodyScan) {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if matches!(first, Some(b'{' | b'[')) && walk_json(bytes, scan, 0).is_ok() {
        return;
    }
    match as_text(bytes) {
        Some(text) => scan.text(text, 0),
        None => scan.unread(UnreadReason::BinaryUpload, location, "not text"),
    }
}

fn is_json(essence: &str) -> bool {
    essence == "application/json" || essence.ends_with("+json") || essence == "text/json"
}

fn is_json_lines(essence: &str) -> bool {
    matches!(
        essence,
        "application/x-ndjson"
            | "application/jsonl"
            | "application/x-jsonlines"
            | "application/json-seq"
    )
}

/// Types whose bytes are text to scan as such: text, source code, data formats.
fn is_text(essence: &str) -> bool {
    essence.starts_with("text/")
        || matches!(
            essence,
            "application/xml"
                | "application/yaml"
                | "application/x-yaml"
                | "application/toml"
                | "application/javascript"
                | "application/x-javascript"
                | "application/typescript"
                | "application/x-sh"
                | "application/x-python"
                | "application/sql"
                | "application/graphql"
                | "application/csv"
                | "application/x-subrip"
        )
        || essence.ends_with("+xml")
}

/// File names whose content is text whatever type the client gave the part.
fn is_text_file_name(name: &str) -> bool {
    const TEXT_EXTENSIONS: &[&str] = &[
        "txt", "md", "csv", "tsv", "json", "jsonl", "ndjson", "yaml", "yml", "toml", "xml", "html",
        "htm", "py", "rs", "js", "mjs", "ts", "tsx", "jsx", "go", "java", "kt", "c", "h", "cc",
        "cpp", "hpp", "cs", "rb", "php", "sh", "sql", "swift", "scala", "log", "ini", "cfg",
        "conf", "srt", "vtt", "tex", "rst",
    ];
    name.rsplit_once('.')
        .is_some_and(|(_, ext)| TEXT_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()))
}

/// Text when the bytes are UTF-8 without the control characters binary
/// formats are full of.
fn as_text(bytes: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(bytes).ok()?;
    let controls = bytes
        .iter()
        .filter(|b| b.is_ascii_control() && !matches!(b, b'\n' | b'\r' | b'\t' | 0x0c))
        .count();
    (controls * 100 <= bytes.len()).then_some(text)
}

fn scan_json_lines(body: &[u8], scan: &mut BodyScan) {
    for (n, line) in body.split(|b| *b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = line.strip_prefix(b"\x1e").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if let Err(e) = walk_json(line, scan, 0) {
            scan.unread(
                UnreadReason::Malformed,
                &format!("line {}", n + 1),
                &format!("not JSON: {e}"),
            );
            if let Some(text) = as_text(line) {
                scan_text(text, &mut scan.pii);
            }
        }
    }
}

fn scan_form(body: &[u8], scan: &mut BodyScan) {
    for (name, value) in form_urlencoded::parse(body) {
        scan.text(&name, 0);
        scan.text(&value, 0);
    }
}

fn scan_multipart(content_type: &str, body: &[u8], scan: &mut BodyScan) {
    let boundary = match multer::parse_boundary(content_type) {
        Ok(b) => b,
        Err(e) => {
            scan.unread(UnreadReason::Malformed, "body", &format!("multipart: {e}"));
            return;
        }
    };
    let stream = futures_util::stream::once(std::future::ready(Ok::<_, std::io::Error>(
        Bytes::copy_from_slice(body),
    )));
    let mut multipart = multer::Multipart::new(stream, boundary);
    // The body is already in memory, so every poll completes at once.
    futures_executor::block_on(async {
        let mut parts = 0;
        loop {
            let field = match multipart.next_field().await {
                Ok(Some(field)) => field,
                Ok(None) => break,
                Err(e) => {
                    scan.unread(UnreadReason::Malformed, "body", &format!("multipart: {e}"));
                    break;
                }
            };
            parts += 1;
            if parts > MAX_PARTS {
                scan.unread(
                    UnreadReason::OverBound,
                    "body",
                    &format!("more than {MAX_PARTS} multipart parts"),
                );
                break;
            }
            let name = field.name().unwrap_or("").to_string();
            let file_name = field.file_name().map(str::to_string);
            let part_type = field
                .content_type()
                .map(|m| m.essence_str().to_ascii_lowercase());
            let location = format!("part {name}");
            let bytes = match field.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    scan.unread(
                        UnreadReason::Malformed,
                        &location,
                        &format!("multipart: {e}"),
                    );
                    break;
                }
            };
            // Names are client text too: a file name can be a person's name.
            scan.text(&name, 0);
            if let Some(file_name) = &file_name {
                scan.text(file_name, 0);
            }
            let textual_name = file_name.as_deref().is_some_and(is_text_file_name);
            match part_type.as_deref() {
                Some(t) if is_json_lines(t) => scan_json_lines(&bytes, scan),
                Some(t) if is_json(t) || is_text(t) => scan_untyped(&bytes, &location, scan),
                Some("application/octet-stream") | None if textual_name || file_name.is_none() => {
                    scan_untyped(&bytes, &location, scan)
                }
                Some(t) if textual_name && !is_media_type(t) => {
                    scan_untyped(&bytes, &location, scan)
                }
                other => {
                    let detail = other.unwrap_or("application/octet-stream");
                    let detail = match &file_name {
                        Some(f) => format!("{detail}, {} bytes, file {f}", bytes.len()),
                        None => format!("{detail}, {} bytes", bytes.len()),
                    };
                    scan.unread(UnreadReason::BinaryUpload, &location, &detail)
                }
            }
        }
    });
}

fn is_media_type(essence: &str) -> bool {
    ["image/", "audio/", "video/", "font/"]
        .iter()
        .any(|p| essence.starts_with(p))
}

/// Walks every key and string of a JSON document without building it. On
/// an error the counts are as before the walk, so that the caller's text
/// fallback does not count what the walk had already seen.
pub fn walk_json(bytes: &[u8], scan: &mut BodyScan, depth: u8) -> Result<(), serde_json::Error> {
    let before = scan.pii.clone();
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let walked = Walker {
        scan: &mut *scan,
        depth,
        key: None,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    if walked.is_err() {
        scan.pii = before;
    }
    walked
}

struct Walker<'s> {
    scan: &'s mut BodyScan,
    depth: u8,
    /// The key this value (or the array holding it) stands under, when it
    /// is a plain word: the context a number is read in.
    key: Option<KeyWord>,
}

/// Numbers below this have too few digits for any card, account or id.
const SMALLEST_IDENTIFYING_NUMBER: u64 = 100_000_000;

/// A short key of letters only (`"personnummer"`, `"card number"`), kept
/// without allocating. Keys with digits or other signs are not kept: as
/// context they would be scanned a second time and could count twice.
#[derive(Clone, Copy)]
struct KeyWord {
    bytes: [u8; 40],
    len: u8,
}

impl KeyWord {
    fn of(key: &str) -> Option<KeyWord> {
        let plain = |b: &u8| b.is_ascii_alphabetic() || matches!(b, b'_' | b'-' | b' ' | b'.');
        if key.is_empty() || key.len() > 40 || !key.bytes().all(|b| plain(&b)) {
            return None;
        }
        let mut bytes = [0; 40];
        bytes.get_mut(..key.len())?.copy_from_slice(key.as_bytes());
        Some(KeyWord {
            bytes,
            len: key.len() as u8,
        })
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(self.bytes.get(..usize::from(self.len)).unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Walker<'_> {
    /// A card or national id written as a JSON number reaches the model as
    /// digits, as it would in a string: the number is scanned as those
    /// digits after its key, which detectors that need a keyword read as
    /// their context (`{"personnummer": 8112189876}`).
    fn number(self, magnitude: u64) {
        if magnitude < SMALLEST_IDENTIFYING_NUMBER {
            return;
        }
        let text = match self.key {
            Some(key) => format!("{}: {magnitude}", key.as_str()),
            None => magnitude.to_string(),
        };
        scan_text(&text, &mut self.scan.pii);
    }
}

/// The key of an object entry: scanned as client text, and kept as context
/// when it is a plain word.
struct Key<'s> {
    scan: &'s mut BodyScan,
    depth: u8,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = Option<KeyWord>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<KeyWord>, D::Error> {
        // Counted as the values they are when a rerouted call is translated.
        self.scan.json_values += 1;
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = Option<KeyWord>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<KeyWord>, E> {
        self.scan.text(v, self.depth);
        Ok(KeyWord::of(v))
    }
}

impl<'de> DeserializeSeed<'de> for Walker<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.scan.json_values += 1;
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walker<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.scan.text(v, self.depth);
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.number(v.unsigned_abs());
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.number(v);
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        // `4111111111111111.0` is the same digits; a fraction or a
        // magnitude past u64 is not an identifier.
        let magnitude = v.abs();
        if v.fract() == 0.0 && magnitude < u64::MAX as f64 {
            self.number(magnitude as u64);
        }
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(Walker {
                scan: &mut *self.scan,
                depth: self.depth,
                key: self.key,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Keys are client text too: `{"jane@example.com": ...}` is personal data.
        while let Some(key) = map.next_key_seed(Key {
            scan: &mut *self.scan,
            depth: self.depth,
        })? {
            map.next_value_seed(Walker {
                scan: &mut *self.scan,
                depth: self.depth,
                key,
            })?;
        }
        Ok(())
    }
}

/// Whether a JSON document parses at all, without keeping it.
pub fn is_valid_json(bytes: &[u8]) -> bool {
    serde_json::from_slice::<IgnoredAny>(bytes).is_ok()
}

/// Long runs of the base64 alphabet that are not hex digests or plain words:
/// encoded binary has upper case, lower case and digits mixed.
fn looks_like_bare_base64(text: &str) -> bool {
    let bytes = text.trim_end_matches('=').as_bytes();
    let (mut upper, mut lower, mut digit) = (false, false, false);
    for &b in bytes {
        match b {
            b'A'..=b'Z' => upper = true,
            b'a'..=b'z' => lower = true,
            b'0'..=b'9' => digit = true,
            b'+' | b'/' | b'-' | b'_' => {}
            _ => return false,
        }
    }
    upper && lower && digit
}

/// Standard or URL-safe base64, padded or not, possibly wrapped in lines.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
    use base64::engine::DecodePaddingMode;
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let standard = GeneralPurpose::new(&base64::alphabet::STANDARD, config);
    let url_safe = GeneralPurpose::new(&base64::alphabet::URL_SAFE, config);
    let compact: std::borrow::Cow<str> = if text.contains(['\n', '\r']) {
        text.chars()
            .filter(|c| *c != '\n' && *c != '\r')
            .collect::<String>()
            .into()
    } else {
        text.into()
    };
    standard
        .decode(compact.as_bytes())
        .or_else(|_| url_safe.decode(compact.as_bytes()))
        .ok()
}

fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// A request body as the scan read it.
#[derive(Debug, Default)]
pub struct ReadBody {
    /// The decoded bytes, when the body had a content coding ecluse undid.
    pub decoded: Option<Vec<u8>>,
    pub scan: BodyScan,
}

impl ReadBody {
    /// The bytes the call means: decoded when coded, else as sent.
    pub fn plain<'a>(&'a self, sent: &'a [u8]) -> &'a [u8] {
        self.decoded.as_deref().unwrap_or(sent)
    }
}

/// Undoes the body's content codings (bounded by `limit` decoded bytes and
/// `max_ratio`) and scans it by its type. A coding ecluse cannot undo leaves
/// the whole body unread; one that is corrupt or too large is an error.
pub fn read_request<'a>(
    content_encodings: impl IntoIterator<Item = &'a [u8]>,
    content_type: Option<&str>,
    body: &[u8],
    limit: usize,
    max_ratio: usize,
) -> Result<ReadBody, DecodeError> {
    if body.is_empty() {
        return Ok(ReadBody::default());
    }
    let codings = match parse_codings(content_encodings) {
        Ok(codings) => codings,
        Err(unknown) => {
            let mut scan = BodyScan::default();
            scan.unread(
                UnreadReason::UnknownCoding,
                "body",
                &format!("Content-Encoding {unknown}"),
            );
            return Ok(ReadBody {
                decoded: None,
                scan,
            });
        }
    };
    if codings.is_empty() {
        return Ok(ReadBody {
            decoded: None,
            scan: scan_body(content_type, body),
        });
    }
    let decoded = decode(body, &codings, limit, max_ratio)?;
    let scan = scan_body(content_type, &decoded);
    Ok(ReadBody {
        decoded: Some(decoded),
        scan,
    })
}

/// A content coding ecluse can undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    Deflate,
    Brotli,
    Zstd,
}

/// The codings of a `Content-Encoding` header (all its values, in the order
/// they were applied); `Err` names the first coding ecluse cannot undo.
pub fn parse_codings<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<Coding>, String> {
    let mut codings = Vec::new();
    for raw in values {
        for item in String::from_utf8_lossy(raw).split(',') {
            let name = item.trim().to_ascii_lowercase();
            codings.push(match name.as_str() {
                "" | "identity" => continue,
                "gzip" | "x-gzip" => Coding::Gzip,
                "deflate" => Coding::Deflate,
                "br" => Coding::Brotli,
                "zstd" => Coding::Zstd,
                _ => return Err(name.chars().take(32).collect()),
            });
        }
    }
    Ok(codings)
}

/// Why a coded body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("decoded request body larger than the {limit}-byte limit")]
    TooLarge { limit: usize },
    #[error("request body expands more than {ratio} times when decoded (a decompression bomb?)")]
    Ratio { ratio: usize },
    #[error("request body is not valid {coding}: {detail}")]
    Corrupt {
        coding: &'static str,
        detail: String,
    },
}

/// Decoded bodies below this size are never refused for their ratio: small
/// repetitive JSON compresses far beyond any sane ratio.
const RATIO_FLOOR: usize = 1 << 20;

/// Undoes `codings` (last applied, first undone), holding every stage to
/// `limit` decoded bytes and to `max_ratio` times the coded size.
pub fn decode(
    body: &[u8],
    codings: &[Coding],
    limit: usize,
    max_ratio: usize,
) -> Result<Vec<u8>, DecodeError> {
    let mut current = body.to_vec();
    for coding in codings.iter().rev() {
        let cap = limit
            .min(RATIO_FLOOR.max(body.len().saturating_mul(max_ratio)))
            .saturating_add(1);
        let (name, decoded) = match coding {
            Coding::Gzip => (
                "gzip",
                read_bounded(flate2::read::MultiGzDecoder::new(&current[..]), cap),
            ),
            Coding::Deflate => {
                // HTTP's deflate is zlib-wrapped; some clients send raw deflate.
                let zlib = read_bounded(flate2::read::ZlibDecoder::new(&current[..]), cap);
                let decoded = match zlib {
                    Ok(d) => Ok(d),
                    Err(_) => read_bounded(flate2::read::DeflateDecoder::new(&current[..]), cap),
                };
                ("deflate", decoded)
            }
            Coding::Brotli => (
                "br",
                read_bounded(brotli::Decompressor::new(&current[..], 4096), cap),
            ),
            Coding::Zstd => (
                "zstd",
                zstd::stream::read::Decoder::new(&current[..]).and_then(|d| read_bounded(d, cap)),
            ),
        };
        let decoded = decoded.map_err(|e| DecodeError::Corrupt {
            coding: name,
            detail: e.to_string(),
        })?;
        if decoded.len() > limit {
            return Err(DecodeError::TooLarge { limit });
        }
        if decoded.len() >= cap {
            return Err(DecodeError::Ratio { ratio: max_ratio });
        }
        current = decoded;
    }
    Ok(current)
}

fn read_bounded(reader: impl Read, cap: usize) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    reader.take(cap as u64).read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
#[path = "../../tests/support/codings.rs"]
mod codings;

#[cfg(test)]
mod tests {
    use super::codings::{brotli, gzip, multipart, raw_deflate, zlib, zstd};
    use super::*;

    const LIMIT: usize = 10 << 20;

    #[test]
    fn numbers_are_read_as_the_digits_they_are() {
        let card = Counts {
            card: 1,
            ..Counts::default()
        };
        let id = Counts {
            national_id: 1,
            ..Counts::default()
        };
        let none = Counts::default();
        let cases: Vec<(&str, Counts)> = vec![
            (r#"{"card": 4111111111111111}"#, card.clone()),
            (r#"{"x": {"amex": 378282246310005}}"#, card.clone()),
            (r#"{"cards": [1, 5500000000000004]}"#, card.clone()),
            (r#"[4111111111111111]"#, card.clone()),
            (r#"{"card": 4111111111111111.0}"#, card.clone()),
            (r#"{"card": -4111111111111111}"#, card.clone()),
            // Ids whose check is weak count only after their keyword, which
            // the key gives; without one they stay look-alikes.
            (r#"{"personnummer": 8804197633}"#, id.clone()),
            (
                r#"{"Steueridentifikationsnummer": 36574261809}"#,
                id.clone(),
            ),
            (r#"{"n": 8804197633}"#, none.clone()),
            (r#"{"NIR": 175061241493060}"#, id.clone()),
            // The parameters and ids of an ordinary call are nothing.
            (
                r#"{"model": "gpt-4o", "max_tokens": 4096, "temperature": 0.7, "seed": 1234567890,
                   "created": 1700000000, "n": 1, "top_p": 1e0, "logprobs": 5, "x": 1.5e300,
                   "ts": 1733480700123, "id": 2840777123456.25}"#,
                none.clone(),
            ),
            // A key with digits is not context, so nothing counts twice.
            (
                r#"{"jane@example.com": 4111111111111111}"#,
                Counts {
                    email: 1,
                    card: 1,
                    ..Counts::default()
                },
            ),
        ];
        for (body, expected) in cases {
            let mut scan = BodyScan::default();
            walk_json(body.as_bytes(), &mut scan, 0).unwrap();
            assert_eq!(scan.pii, expected, "{body}");
        }
    }

    #[test]
    fn every_coding_and_stacks_of_them_decode() {
        let body = br#"{"messages":[{"role":"user","content":"IBAN DE89370400440532013000"}]}"#;
        let cases: Vec<(&str, Vec<u8>, Vec<Coding>)> = vec![
            ("gzip", gzip(body), vec![Coding::Gzip]),
            ("deflate", zlib(body), vec![Coding::Deflate]),
            ("deflate", raw_deflate(body), vec![Coding::Deflate]),
            ("br", brotli(body), vec![Coding::Brotli]),
            ("zstd", zstd(body), vec![Coding::Zstd]),
            (
                "gzip, br",
                brotli(&gzip(body)),
                vec![Coding::Gzip, Coding::Brotli],
            ),
            (
                "zstd, gzip, deflate",
                zlib(&gzip(&zstd(body))),
                vec![Coding::Zstd, Coding::Gzip, Coding::Deflate],
            ),
        ];
        for (name, coded, codings) in cases {
            let header = name.to_string();
            assert_eq!(
                parse_codings([header.as_bytes()]).unwrap(),
                codings,
                "{name}"
            );
            assert_eq!(
                decode(&coded, &codings, LIMIT, 100).unwrap(),
                body,
                "{name}"
            );
        }
    }

    #[test]
    fn coding_names_are_read_from_every_header_value() {
        assert_eq!(
            parse_codings([&b"gzip"[..], b"br"]).unwrap(),
            vec![Coding::Gzip, Coding::Brotli]
        );
        assert_eq!(parse_codings([&b"identity"[..]]).unwrap(), vec![]);
        assert_eq!(parse_codings([&b"X-GZIP"[..]]).unwrap(), vec![Coding::Gzip]);
        assert_eq!(
            parse_codings([&b"gzip, compress"[..]]).unwrap_err(),
            "compress"
        );
        assert_eq!(parse_codings([&b"aes128gcm"[..]]).unwrap_err(), "aes128gcm");
    }

    #[test]
    fn bombs_and_oversize_bodies_are_refused_not_inflated() {
        let zeros = vec![0u8; 64 << 20];
        for (coded, coding) in [
            (gzip(&zeros), Coding::Gzip),
            (brotli(&zeros), Coding::Brotli),
            (zstd(&zeros), Coding::Zstd),
        ] {
            let err = decode(&coded, &[coding], LIMIT, 100).unwrap_err();
            assert!(
                matches!(
                    err,
                    DecodeError::Ratio { .. } | DecodeError::TooLarge { .. }
                ),
                "{err}"
            );
        }
        // Under the size limit but far over the ratio.
        let coded = gzip(&vec![b'a'; 5 << 20]);
        assert_eq!(
            decode(&coded, &[Coding::Gzip], LIMIT, 100).unwrap_err(),
            DecodeError::Ratio { ratio: 100 }
        );
        // Over the size limit at a normal ratio.
        let text: Vec<u8> = (0..(3 << 20))
            .map(|i: u32| (i.wrapping_mul(2654435761) >> 24) as u8)
            .collect();
        let coded = gzip(&text);
        assert_eq!(
            decode(&coded, &[Coding::Gzip], 1 << 20, 100).unwrap_err(),
            DecodeError::TooLarge { limit: 1 << 20 }
        );
        // Small but highly repetitive bodies are fine.
        let small = vec![b'x'; 500_000];
        assert_eq!(
            decode(&gzip(&small), &[Coding::Gzip], LIMIT, 100).unwrap(),
            small
        );
        // A stacked bomb is caught at the stage that inflates.
        let stacked = gzip(&gzip(&zeros));
        assert!(decode(&stacked, &[Coding::Gzip, Coding::Gzip], LIMIT, 100).is_err());
    }

    #[test]
    fn corrupt_codings_say_which() {
        let err = decode(b"not gzip at all", &[Coding::Gzip], LIMIT, 100).unwrap_err();
        assert!(err.to_string().contains("not valid gzip"), "{err}");
        let err = decode(b"not zstd", &[Coding::Zstd], LIMIT, 100).unwrap_err();
        assert!(err.to_string().contains("zstd"), "{err}");
    }

    fn reasons(scan: &BodyScan) -> Vec<UnreadReason> {
        scan.unread.iter().map(|u| u.reason).collect()
    }

    #[test]
    fn json_strings_and_keys_are_scanned_without_a_tree() {
        let body =
            br#"{"model":"gpt-4o","messages":[{"role":"user","content":"mail a.b@example.com"}],
            "metadata":{"jane.doe@example.org":"key","nested":[["DE89 3704 0044 0532 0130 00"]]},
            "escaped":"x\u0040example.com and me\u0040corp.example"}"#;
        let scan = scan_body(Some("application/json; charset=utf-8"), body);
        // a.b@, jane.doe@ (a key), and the two escaped ones.
        assert_eq!(scan.pii.email, 4, "{scan:?}");
        assert_eq!(scan.pii.iban, 1);
        assert!(scan.unread.is_empty());
        assert!(scan.json_values > 15, "{}", scan.json_values);
    }

    #[test]
    fn inline_media_is_reported_and_fake_media_is_scanned() {
        let png = base64::engine::general_purpose::STANDARD.encode(
            b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89",
        );
        let body = format!(
            r#"{{"messages":[{{"role":"user","content":[
                {{"type":"image_url","image_url":{{"url":"data:image/png;base64,{png}"}}}},
                {{"type":"image_url","image_url":{{"url":"data:image/png;base64,IBAN DE89370400440532013000"}}}},
                {{"type":"text","text":"data:text/plain;base64,{}"}}
            ]}}]}}"#,
            base64::engine::general_purpose::STANDARD.encode("write to jane@example.com")
        );
        let scan = scan_body(Some("application/json"), body.as_bytes());
        assert_eq!(reasons(&scan), vec![UnreadReason::Media], "{scan:?}");
        assert_eq!(scan.unread[0].detail, "image/png");
        // Not base64 after the prefix: scanned as text.
        assert_eq!(scan.pii.iban, 1, "{scan:?}");
        // base64 text is decoded and scanned.
        assert_eq!(scan.pii.email, 1, "{scan:?}");
    }

    #[test]
    fn bare_base64_is_decoded_text_or_reported_media() {
        let text = base64::engine::general_purpose::STANDARD
            .encode("Customer: jane.doe@example.com, IBAN DE89370400440532013000. ".repeat(4));
        let scan = scan_body(
            Some("application/json"),
            format!(r#"{{"input":"{text}"}}"#).as_bytes(),
        );
        assert_eq!((scan.pii.email, scan.pii.iban), (4, 4), "{scan:?}");
        let binary: Vec<u8> = (0..600u32).map(|i| (i * 7919 % 251) as u8).collect();
        let audio = base64::engine::general_purpose::STANDARD.encode(&binary);
        let body = format!(r#"{{"input_audio":{{"data":"{audio}","format":"wav"}}}}"#);
        let scan = scan_body(Some("application/json"), body.as_bytes());
        assert_eq!(reasons(&scan), vec![UnreadReason::Media]);
        // Hex digests and long identifiers are not base64 media.
        let sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".repeat(2);
        let scan = scan_body(
            Some("application/json"),
            format!(r#"{{"a":"{sha}"}}"#).as_bytes(),
        );
        assert!(scan.unread.is_empty(), "{scan:?}");
    }

    #[test]
    fn multipart_text_parts_are_scanned_and_binary_parts_reported() {
        let jsonl =
            b"{\"custom_id\":\"1\",\"body\":{\"messages\":[{\"content\":\"bob@example.com\"}]}}\n";
        let (ctype, body) = multipart(&[
            ("purpose", None, None, b"batch"),
            (
                "file",
                Some("batch.jsonl"),
                Some("application/octet-stream"),
                jsonl,
            ),
            (
                "notes",
                Some("notes.txt"),
                Some("text/plain"),
                b"IBAN de89 3704 0044 0532 0130 00",
            ),
            (
                "code",
                Some("main.py"),
                None,
                b"EMAIL = 'carol@example.com'",
            ),
            (
                "audio",
                Some("call.wav"),
                Some("audio/wav"),
                b"RIFF\0\0\0\0WAVEfmt ",
            ),
            (
                "archive",
                Some("data.zip"),
                Some("application/zip"),
                b"PK\x03\x04\0\0",
            ),
            ("image", Some("scan.png"), Some("image/png"), b"\x89PNG\r\n"),
        ]);
        let scan = scan_body(Some(&ctype), &body);
        assert_eq!(scan.pii.email, 2, "{scan:?}");
        assert_eq!(
            reasons(&scan),
            vec![
                UnreadReason::BinaryUpload,
                UnreadReason::BinaryUpload,
                UnreadReason::BinaryUpload
            ]
        );
        assert_eq!(scan.unread[0].location, "part audio");
        assert!(scan.unread[0].detail.starts_with("audio/wav"));
    }

    #[test]
    fn bodies_by_type() {
        type Case<'a> = (Option<&'a str>, &'a [u8], u32, &'a [UnreadReason]);
        let cases: &[Case] = &[
            (Some("text/plain"), b"call jane@example.com", 1, &[]),
            (None, b"{\"a\":\"jane@example.com\"}", 1, &[]),
            (None, b"jane@example.com", 1, &[]),
            (
                Some("application/x-www-form-urlencoded"),
                b"q=jane%40example.com&x=1",
                1,
                &[],
            ),
            (
                Some("application/x-ndjson"),
                b"{\"a\":\"x\\u0040example.com\"}\n{\"b\":1}\n",
                1,
                &[],
            ),
            (
                Some("application/json"),
                b"{\"a\": \"jane@example.com\"",
                1,
                &[UnreadReason::Malformed],
            ),
            (
                Some("audio/mpeg"),
                b"ID3\x03\0\0\0",
                0,
                &[UnreadReason::BinaryUpload],
            ),
            (
                Some("application/octet-stream"),
                b"\0\x01\x02",
                0,
                &[UnreadReason::BinaryUpload],
            ),
            (
                Some("application/pdf"),
                b"%PDF-1.7",
                0,
                &[UnreadReason::BinaryUpload],
            ),
            (
                None,
                b"\0\x01\x02\x03\xff\xfe",
                0,
                &[UnreadReason::BinaryUpload],
            ),
            (
                Some("multipart/form-data"),
                b"--x\r\n",
                0,
                &[UnreadReason::Malformed],
            ),
            (Some("application/json"), b"", 0, &[]),
        ];
        for (ctype, body, emails, unread) in cases {
            let scan = scan_body(*ctype, body);
            assert_eq!(scan.pii.email, *emails, "{ctype:?} {body:?}: {scan:?}");
            assert_eq!(reasons(&scan), *unread, "{ctype:?} {body:?}");
        }
    }

    #[test]
    fn unread_lists_are_bounded() {
        let binary: Vec<u8> = (0..300u32).map(|i| (i * 7919 % 251) as u8).collect();
        let item = base64::engine::general_purpose::STANDARD.encode(&binary);
        let body = format!("[{}]", vec![format!("\"{item}\""); 40].join(","));
        let scan = scan_body(Some("application/json"), body.as_bytes());
        assert_eq!(scan.unread.len(), MAX_UNREAD_LISTED + 1);
        assert_eq!(scan.unread.last().unwrap().reason, UnreadReason::OverBound);
    }

    #[test]
    fn deep_nesting_is_malformed_not_a_crash() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let scan = scan_body(Some("application/json"), deep.as_bytes());
        assert_eq!(reasons(&scan), vec![UnreadReason::Malformed]);
    }
}
