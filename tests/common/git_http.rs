//! A Git smart-HTTP server for tests: `git http-backend` behind the mock
//! upstream (real TLS), requiring a token as HTTP Basic authentication.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

use bytes::Bytes;

use super::{Handler, MockResponse, Recorded};

pub fn git_http_handler(project_root: PathBuf, expected_authorization: String) -> Handler {
    Arc::new(move |req: &Recorded| {
        if req.header("authorization") != Some(expected_authorization.as_str()) {
            return MockResponse::Full {
                status: 401,
                headers: vec![("www-authenticate".into(), "Basic realm=\"git\"".into())],
                body: Bytes::from_static(b"unauthorized"),
            };
        }
        let (path, query) = req.path.split_once('?').unwrap_or((req.path.as_str(), ""));
        let mut child = Command::new("git")
            .arg("http-backend")
            .env("GIT_PROJECT_ROOT", &project_root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("PATH_INFO", path)
            .env("QUERY_STRING", query)
            .env("REQUEST_METHOD", &req.method)
            .env("CONTENT_TYPE", req.header("content-type").unwrap_or(""))
            .env("CONTENT_LENGTH", req.body.len().to_string())
            .env(
                "HTTP_CONTENT_ENCODING",
                req.header("content-encoding").unwrap_or(""),
            )
            .env("GIT_PROTOCOL", req.header("git-protocol").unwrap_or(""))
            .env("REMOTE_USER", "test")
            .env("REMOTE_ADDR", "127.0.0.1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("git http-backend runs");
        child.stdin.take().unwrap().write_all(&req.body).unwrap();
        let out = child.wait_with_output().unwrap();
        let split = out
            .stdout
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| (i, 4))
            .or_else(|| {
                out.stdout
                    .windows(2)
                    .position(|w| w == b"\n\n")
                    .map(|i| (i, 2))
            })
            .expect("CGI headers end");
        let head = String::from_utf8_lossy(&out.stdout[..split.0]).to_string();
        let body = Bytes::from(out.stdout[split.0 + split.1..].to_vec());
        let mut status = 200;
        let mut headers = Vec::new();
        for line in head.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim().to_string();
            if k.eq_ignore_ascii_case("status") {
                status = v
                    .split_whitespace()
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(500);
            } else {
                headers.push((k.trim().to_ascii_lowercase(), v));
            }
        }
        MockResponse::Full {
            status,
            headers,
            body,
        }
    })
}
