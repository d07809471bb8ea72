//! Credentials that travel in URLs (`?key=` as Gemini takes it, signed URLs'
//! `sig`, OAuth's `access_token`) are masked everywhere a URL is shown: the
//! policy input, logs, audit records, spans and error bodies. Only the
//! forwarded request keeps them.

use std::borrow::Cow;

/// What a masked value is replaced with.
pub const MASK: &str = "REDACTED";

/// Query parameters that carry a credential, by exact (lower-case) name.
const CREDENTIAL_PARAMS: &[&str] = &[
    "key",
    "api_key",
    "apikey",
    "api-key",
    "access_token",
    "id_token",
    "refresh_token",
    "token",
    "auth",
    "authorization",
    "bearer",
    "jwt",
    "sig",
    "signature",
    "code",
    "password",
    "passwd",
    "pwd",
    "secret",
    "client_secret",
    "session",
    "sessionid",
    "private_token",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "x-goog-signature",
    "x-goog-credential",
    "x-goog-api-key",
];

/// Fragments that make a parameter name a credential's wherever they stand.
const CREDENTIAL_FRAGMENTS: &[&str] = &[
    "token",
    "secret",
    "password",
    "signature",
    "credential",
    "apikey",
    "api_key",
    "api-key",
];

/// Whether a query parameter's value is a credential.
pub fn is_credential_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    CREDENTIAL_PARAMS.contains(&name.as_str())
        || CREDENTIAL_FRAGMENTS.iter().any(|f| name.contains(f))
        || name.ends_with("_key")
        || name.ends_with("-key")
}

/// The path and query with every credential parameter's value masked. The
/// parameter names stay, so a reader still sees that a key was sent.
pub fn mask_query(path_and_query: &str) -> Cow<'_, str> {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return Cow::Borrowed(path_and_query);
    };
    let needs_mask = query.split('&').any(|pair| {
        let name = pair.split_once('=').map_or(pair, |(n, _)| n);
        is_credential_param(&percent_decoded(name))
    });
    if !needs_mask {
        return Cow::Borrowed(path_and_query);
    }
    let masked: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_credential_param(&percent_decoded(name)) => {
                format!("{name}={MASK}")
            }
            _ => pair.to_string(),
        })
        .collect();
    Cow::Owned(format!("{path}?{}", masked.join("&")))
}

fn percent_decoded(name: &str) -> String {
    form_urlencoded::parse(name.as_bytes())
        .next()
        .map(|(n, _)| n.into_owned())
        .unwrap_or_default()
}

/// Header names that carry credentials or session secrets: never shown to
/// policies, logs or traces.
pub fn is_credential_header(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "api-key",
        "x-api-key",
        "x-goog-api-key",
        "openai-organization",
        "openai-project",
        "x-amz-security-token",
    ];
    const FRAGMENTS: &[&str] = &["token", "secret", "password", "api-key", "apikey", "auth"];
    // Asked for every header of every call: compared without building a
    // lowercase copy of the name.
    let name = name.as_bytes();
    EXACT
        .iter()
        .any(|e| name.eq_ignore_ascii_case(e.as_bytes()))
        || FRAGMENTS.iter().any(|f| {
            name.windows(f.len())
                .any(|w| w.eq_ignore_ascii_case(f.as_bytes()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_parameters_are_masked_and_the_rest_kept() {
        let cases = [
            (
                "/v1beta/models/g:generateContent?key=AIzaCANARY",
                "/v1beta/models/g:generateContent?key=REDACTED",
            ),
            ("/p?alt=sse&key=AIzaCANARY", "/p?alt=sse&key=REDACTED"),
            (
                "/p?api_key=c&x=1&access_token=c&sig=c",
                "/p?api_key=REDACTED&x=1&access_token=REDACTED&sig=REDACTED",
            ),
            (
                "/p?X-Amz-Signature=c&X-Amz-Credential=c&X-Amz-Date=1",
                "/p?X-Amz-Signature=REDACTED&X-Amz-Credential=REDACTED&X-Amz-Date=1",
            ),
            ("/p?Key=c", "/p?Key=REDACTED"),
            ("/p?%6Bey=c", "/p?%6Bey=REDACTED"),
            (
                "/p?subscription_key=c&my-token=c",
                "/p?subscription_key=REDACTED&my-token=REDACTED",
            ),
            ("/p?key", "/p?key"),
            ("/p?key=", "/p?key=REDACTED"),
            ("/p?api-version=2024-10-21", "/p?api-version=2024-10-21"),
            ("/p?alt=sse", "/p?alt=sse"),
            ("/no/query", "/no/query"),
        ];
        for (path, want) in cases {
            assert_eq!(mask_query(path), want, "{path}");
            assert!(!mask_query(path).contains("CANARY"));
        }
    }
}
