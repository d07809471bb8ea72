//! Entry points for the cargo-fuzz targets in `tests/fuzz`, kept in the
//! library so that the stable test suite replays the same code over the
//! kept corpus (`tests/fuzz_corpus.rs`). Each one feeds untrusted bytes to a
//! parser the proxy runs on client input; the only property checked is the
//! one the proxy relies on: no panic, and bounded output.

use crate::classify::body;

const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "multipart/form-data; boundary=fuzzBoundary",
    "application/x-www-form-urlencoded",
    "application/x-ndjson",
    "text/plain",
    "application/octet-stream",
];

const CODINGS: &[&str] = &[
    "identity", "gzip", "deflate", "br", "zstd", "gzip, br", "compress",
];

/// The body reader: content codings (bounded), content types, multipart,
/// JSON, data URIs and base64. The first byte picks the type and coding.
pub fn body_reader(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(selector) % CONTENT_TYPES.len()];
    let coding = CODINGS[usize::from(selector / 8) % CODINGS.len()];
    if let Ok(read) =
        body::read_request([coding.as_bytes()], Some(content_type), rest, 1 << 20, 100)
    {
        assert!(read.scan.unread.len() <= 17);
        assert!(read.decoded.as_ref().is_none_or(|d| d.len() <= 1 << 20));
    }
}

/// The personal-data detectors over arbitrary text.
pub fn scanner(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut counts = crate::classify::Counts::default();
    crate::classify::scan_text(&text, &mut counts);
    let _ = crate::classify::detect::national_ids(&text);
}

/// The LLM request parsers, for every API flavour and for unregistered hosts.
pub fn llm_request(data: &[u8]) {
    let (path, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (
            String::from_utf8_lossy(&data[..i]).into_owned(),
            &data[i + 1..],
        ),
        None => ("/v1/chat/completions".to_string(), data),
    };
    for api in [
        Some("openai"),
        Some("anthropic"),
        Some("gemini"),
        Some("bedrock"),
        Some("cohere"),
        Some("aleph_alpha"),
        None,
    ] {
        for method in ["POST", "GET"] {
            let _ = crate::llm::parse_request(api, method, &path, body);
        }
    }
    let _ = crate::redact::mask_query(&path);
}

/// The CONNECT front end's head parser.
pub fn connect_head(data: &[u8]) {
    if let Ok(Some(crate::listener::connect::Head::Connect { len, .. })) =
        crate::listener::connect::parse_head(data, 32 << 10, 100)
    {
        assert!(len <= data.len());
    }
}

/// The answer reader (usage, end of stream) over an upstream's bytes: JSON,
/// SSE and AWS event streams, fed in pieces. The first byte picks the
/// content type and the piece size.
pub fn response_observer(data: &[u8]) {
    const TYPES: &[&str] = &[
        "application/json",
        "text/event-stream",
        "application/vnd.amazon.eventstream",
    ];
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let content_type = TYPES[usize::from(selector) % TYPES.len()];
    let piece = 1 + usize::from(selector / 4);
    let mut observer =
        crate::llm::usage::ResponseObserver::new(Some(content_type)).capturing_content(true);
    for chunk in rest.chunks(piece) {
        observer.feed(chunk);
        let _ = observer.saw_end();
    }
    let usage = observer.finish();
    assert!(usage.content.as_ref().is_none_or(|c| c.len() <= rest.len()));
}
