//! Reading a body for the decision (decoding, parsing the call, scanning)
//! costs a small constant times the body, never a document tree: a 10 MiB
//! body of tiny strings, with the body itself, stays under 40 MB. Measured
//! with a counting allocator, so the figure is exact and not timing-bound.

#[path = "support/bodies.rs"]
mod bodies;
#[path = "support/counting_alloc.rs"]
mod counting_alloc;

#[global_allocator]
static ALLOC: counting_alloc::Counting = counting_alloc::Counting;

const TEN_MIB: usize = 10 << 20;

fn read_for_decision(content_encoding: &[u8], body: &[u8]) -> usize {
    let read = ecluse::classify::body::read_request(
        [content_encoding],
        Some("application/json"),
        body,
        TEN_MIB + 1024,
        100_000,
    )
    .unwrap();
    let call = ecluse::llm::parse_request(
        Some("openai"),
        "POST",
        "/v1/chat/completions",
        read.plain(body),
    );
    assert_eq!(call.model.as_deref(), Some("gpt-4o"));
    read.scan.pii.email as usize
}

#[test]
fn a_body_of_tiny_strings_costs_a_small_constant_times_its_size() {
    for (name, body) in [
        ("tiny strings", bodies::tiny_strings(TEN_MIB)),
        ("tiny objects", bodies::tiny_objects(TEN_MIB)),
    ] {
        let (_, extra) = counting_alloc::peak_during(|| read_for_decision(b"identity", &body));
        // The body is already in memory; reading it adds almost nothing.
        assert!(
            extra < body.len() / 4,
            "{name}: reading a {} byte body allocated {extra} bytes at its peak",
            body.len()
        );
        assert!(body.len() + extra < 40_000_000);

        // Coded, the decoded copy is the only large allocation.
        let coded = bodies::gzip(&body);
        let (_, extra) = counting_alloc::peak_during(|| read_for_decision(b"gzip", &coded));
        assert!(
            coded.len() + extra < 40_000_000 && extra < body.len() * 2,
            "{name} (gzip): {extra} bytes at the peak for {} decoded bytes",
            body.len()
        );
    }
}
