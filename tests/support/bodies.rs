//! Request bodies that are hard on a reader's memory, shared by the memory
//! test and bench.

/// A chat call whose metadata holds `size` bytes of one-letter strings: the
/// shape that costs a JSON document tree the most per byte.
pub fn tiny_strings(size: usize) -> Vec<u8> {
    let mut body = String::from(
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"metadata":{"tags":["#,
    );
    while body.len() < size.saturating_sub(8) {
        body.push_str("\"a\",");
    }
    body.push_str("\"a\"]}}");
    body.into_bytes()
}

/// The same number of bytes as tiny objects with keys.
pub fn tiny_objects(size: usize) -> Vec<u8> {
    let mut body = String::from(r#"{"model":"gpt-4o","input":["#);
    while body.len() < size.saturating_sub(16) {
        body.push_str(r#"{"k":"v"},"#);
    }
    body.push_str(r#"{"k":"v"}]}"#);
    body.into_bytes()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}
