//! Revisions named by their content, so that the same policy files loaded
//! from a directory, the binary or an audit replay name the same revision.

/// `sha256:` and the first 12 hex digits of the content's digest.
pub fn content_revision(content: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, content);
    let hex: String = digest.as_ref()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}
