//! What reading a request body for the decision costs in memory: the peak
//! of bytes allocated while decoding, parsing and scanning it, beyond the
//! body itself, for shapes that are hard on a reader. Prints a table; the
//! README quotes it. Run: `cargo bench --bench body_memory`.

#[path = "../tests/support/bodies.rs"]
mod bodies;
#[path = "../tests/support/counting_alloc.rs"]
mod counting_alloc;

use std::time::Instant;

#[global_allocator]
static ALLOC: counting_alloc::Counting = counting_alloc::Counting;

fn main() {
    const TEN_MIB: usize = 10 << 20;
    println!("| body | sent bytes | peak extra bytes | extra / decoded size | time |");
    println!("|---|---:|---:|---:|---:|");
    let plain = [
        (
            "10 MiB of one-letter JSON strings",
            bodies::tiny_strings(TEN_MIB),
        ),
        ("10 MiB of tiny JSON objects", bodies::tiny_objects(TEN_MIB)),
    ];
    for (name, body) in &plain {
        for (coding, sent) in [("identity", body.clone()), ("gzip", bodies::gzip(body))] {
            let started = Instant::now();
            let (_, extra) = counting_alloc::peak_during(|| {
                let read = ecluse::classify::body::read_request(
                    [coding.as_bytes()],
                    Some("application/json"),
                    &sent,
                    TEN_MIB + 1024,
                    100_000,
                )
                .unwrap();
                ecluse::llm::parse_request(
                    Some("openai"),
                    "POST",
                    "/v1/chat/completions",
                    read.plain(&sent),
                )
            });
            println!(
                "| {name}, {coding} | {} | {extra} | {:.2} | {:.0} ms |",
                sent.len(),
                extra as f64 / body.len() as f64,
                started.elapsed().as_secs_f64() * 1000.0
            );
        }
        // What the document tree the reader no longer builds would cost.
        let (_, tree) = counting_alloc::peak_during(|| {
            serde_json::from_slice::<serde_json::Value>(body).unwrap()
        });
        println!(
            "| {name}, as a serde_json::Value tree (before) | {} | {tree} | {:.2} | |",
            body.len(),
            tree as f64 / body.len() as f64
        );
    }
}
