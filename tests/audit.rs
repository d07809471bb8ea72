//! Evidence an auditor accepts: the audit log of a real run is chained
//! (`ecluse audit verify` finds every edit, removal, insertion and
//! reordering) and replayable (`ecluse audit replay` reproduces every
//! decision under the embedded, a directory's and a Git commit's revision,
//! and catches a forged decision whose chain was re-made).

mod common;

use std::path::Path;
use std::process::Command;

use common::git_repo::PolicyRepo;
use common::*;
use serde_json::Value;

fn ecluse(args: &[&str]) -> (i32, String) {
    let out = Command::new(ecluse_bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Runs ecluse with `policy_yaml`, makes allowed, refused and connect-stage
/// decisions, and returns the audit log's path (the proxy is stopped, so
/// the log is complete).
async fn a_run(policy_yaml: &str, dir: &Path) -> std::path::PathBuf {
    let pki = TestPki::new();
    let mock = MockUpstream::start(
        Some(pki.server_config(&["api.openai.com"])),
        openai_handler(),
    )
    .await;
    let audit = dir.join("audit.log");
    let yaml = format!(
        "{}audit: {{ file: {} }}\n{policy_yaml}",
        upstream_yaml(&[("api.openai.com:443", mock.addr)], Some(&pki.ca_path)),
        audit.display()
    );
    let mut proxy = tokio::task::spawn_blocking(move || Proxy::start(&yaml))
        .await
        .unwrap();
    for (classification, want) in [("public", 200), ("personal", 403), ("internal", 200)] {
        let tls = proxy
            .connect_tls("api.openai.com:443", &[b"http/1.1"])
            .await;
        let mut req = post_json(
            "api.openai.com",
            "/v1/chat/completions",
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#,
        );
        req.headers_mut()
            .insert("x-data-classification", classification.parse().unwrap());
        let resp = http1_send(tls, req).await;
        assert_eq!(resp.status(), want, "{classification}");
    }
    assert_eq!(
        proxy.connect("api.siliconflow.cn:443").await.unwrap_err().0,
        403
    );
    proxy.terminate(std::time::Duration::from_secs(10));
    audit
}

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn sha256_hex(line: &str) -> String {
    use std::fmt::Write;
    let digest = ring::digest::digest(&ring::digest::SHA256, line.as_bytes());
    digest.as_ref().iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_chained_replayable_and_tampering_shows() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    copy_default_policies(&policies);
    let audit = a_run(
        &format!("policy: {{ dir: {} }}\n", policies.display()),
        dir.path(),
    )
    .await;
    let path = audit.to_str().unwrap();

    // The records: chained, with input, result and a trace id.
    let all = records(&audit);
    assert_eq!(all.len(), 7, "3 requests and 4 connect decisions");
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r["chain"]["seq"], i as u64);
        assert!(r["input"].is_object() && r["result"].is_object(), "{r}");
        if r["stage"] == "request" {
            assert_eq!(r["trace_id"].as_str().unwrap().len(), 32, "{r}");
            assert!(r["input"]["data"]["declared_classification"].is_string());
        }
    }
    assert_eq!(all[0]["chain"]["prev"], "0".repeat(64));

    let (code, out) = ecluse(&["audit", "verify", path]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("7 records, chain intact"), "{out}");
    let (code, out) = ecluse(&[
        "audit",
        "replay",
        path,
        "--policy",
        policies.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("7 reproduced, 0 mismatched, 0 not replayed"),
        "{out}"
    );
    // Without the directory the revision cannot be had: said, not guessed.
    let (code, out) = ecluse(&["audit", "replay", path]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("give it with --policy DIR"), "{out}");

    let text = std::fs::read_to_string(&audit).unwrap();
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let deny_line = lines
        .iter()
        .position(|l| l.contains("\"stage\":\"request\"") && l.contains("\"action\":\"deny\""))
        .unwrap();
    let edited_message = format!("(seq {deny_line}) was edited");
    let tampered = dir.path().join("tampered.log");
    let tampered_path = tampered.to_str().unwrap();
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "edited",
            {
                let mut l = lines.clone();
                l[deny_line] = l[deny_line].replace("\"deny\"", "\"allow\"");
                l
            },
            &edited_message,
        ),
        (
            "removed",
            {
                let mut l = lines.clone();
                l.remove(3);
                l
            },
            "were removed",
        ),
        (
            "inserted",
            {
                let mut l = lines.clone();
                l.insert(4, lines[3].clone());
                l
            },
            "comes again",
        ),
        (
            "reordered",
            {
                let mut l = lines.clone();
                l.swap(1, 5);
                l
            },
            "reordered",
        ),
    ];
    for (name, tampered_lines, fragment) in cases {
        write_lines(&tampered, &tampered_lines);
        let (code, out) = ecluse(&["audit", "verify", tampered_path]);
        assert_eq!(code, 1, "{name}: {out}");
        assert!(out.contains(fragment), "{name}: {out}");
    }

    // A forged decision with a re-made chain passes verify; replay catches it.
    let mut forged: Vec<Value> = all.clone();
    let denied = forged
        .iter()
        .position(|r| r["stage"] == "request" && r["action"] == "deny")
        .unwrap();
    let forged_id = forged[denied]["decision_id"].as_str().unwrap().to_string();
    forged[denied]["action"] = "allow".into();
    forged[denied]["result"]["allowed"] = true.into();
    forged[denied]["result"]["http_status"] = 200.into();
    let mut prev = "0".repeat(64);
    let mut remade = Vec::new();
    for (seq, r) in forged.iter_mut().enumerate() {
        r["chain"] = serde_json::json!({"seq": seq, "prev": prev});
        let line = r.to_string();
        prev = sha256_hex(&line);
        remade.push(line);
    }
    write_lines(&tampered, &remade);
    let (code, out) = ecluse(&["audit", "verify", tampered_path]);
    assert_eq!(code, 0, "a re-made chain verifies: {out}");
    let (code, out) = ecluse(&[
        "audit",
        "replay",
        tampered_path,
        "--policy",
        policies.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("MISMATCH decision {forged_id}")),
        "{out}"
    );
    assert!(out.contains("6 reproduced, 1 mismatched"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_and_git_revisions_replay() {
    let dir = tempfile::tempdir().unwrap();
    let audit = a_run("", dir.path()).await;
    let revision = records(&audit)[0]["revision"].as_str().unwrap().to_string();
    assert!(revision.starts_with("embedded-"), "{revision}");
    let (code, out) = ecluse(&["audit", "replay", audit.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("7 reproduced"), "{out}");

    let repo = PolicyRepo::new();
    let git_dir = tempfile::tempdir().unwrap();
    let audit = a_run(
        &format!(
            "policy:\n  git:\n    url: {}\n    ref: main\n    subdir: policies\n",
            repo.url()
        ),
        git_dir.path(),
    )
    .await;
    let revision = records(&audit)[0]["revision"].as_str().unwrap().to_string();
    assert_eq!(revision, repo.head());
    // The branch moves on; replay fetches the recorded commit by its SHA.
    repo.set_setting("default_classification", "personal".into());
    repo.commit_all("stricter default", &[]);
    let config = git_dir.path().join("replay.yaml");
    std::fs::write(
        &config,
        "policy:\n  git:\n    url: unused\n    subdir: policies\n",
    )
    .unwrap();
    let (code, out) = ecluse(&[
        "audit",
        "replay",
        audit.to_str().unwrap(),
        "--git",
        &repo.url(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("7 reproduced, 0 mismatched"), "{out}");
}

/// Refusals made before any policy was asked leave a record too: an
/// upgrade (WebSocket, the Realtime API), a misdirected request, a body
/// over the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_leaves_a_record() {
    let pki = TestPki::new();
    let mock = MockUpstream::start(
        Some(pki.server_config(&["api.openai.com"])),
        openai_handler(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let yaml = format!(
        "{}audit: {{ file: {} }}\nlimits: {{ max_request_body: 1KiB }}\n",
        upstream_yaml(&[("api.openai.com:443", mock.addr)], Some(&pki.ca_path)),
        audit.display()
    );
    let mut proxy = tokio::task::spawn_blocking(move || Proxy::start(&yaml))
        .await
        .unwrap();
    let cases: Vec<(hyper::Request<http_body_util::Full<bytes::Bytes>>, u16)> = vec![
        (
            hyper::Request::get("/v1/realtime?model=gpt-4o-realtime")
                .header("host", "api.openai.com")
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .body(Default::default())
                .unwrap(),
            403,
        ),
        (
            post_json("elsewhere.example", "/v1/chat/completions", "{}"),
            421,
        ),
        (
            post_json("api.openai.com", "/v1/chat/completions", &"x".repeat(4096)),
            413,
        ),
    ];
    for (req, status) in cases {
        let tls = proxy
            .connect_tls("api.openai.com:443", &[b"http/1.1"])
            .await;
        assert_eq!(http1_send(tls, req).await.status(), status);
    }
    // Destinations refused at CONNECT: one record each, with the reason.
    let connects = [
        ("no-such-host.invalid", 502, "does not resolve"),
        ("localhost", 403, "loopback"),
    ];
    for (host, status, _) in connects {
        let authority = format!("{host}:443");
        assert_eq!(proxy.connect(&authority).await.unwrap_err().0, status);
    }
    proxy.terminate(std::time::Duration::from_secs(10));
    let all = records(&audit);
    for (host, _, reason) in connects {
        let theirs: Vec<&Value> = all
            .iter()
            .filter(|r| r["destination"]["host"] == host)
            .collect();
        assert_eq!(theirs.len(), 1, "{host}: {theirs:?}");
        assert_eq!(theirs[0]["stage"], "connect", "{host}");
        // The policy's decision, and the refusal that overrode it.
        let why = theirs[0]["error"].as_str().unwrap_or_default();
        assert!(why.contains(reason), "{host}: {:?}", theirs[0]);
    }
    let refusals: Vec<Value> = records(&audit)
        .into_iter()
        .filter(|r| r["stage"] == "request")
        .collect();
    let rules: Vec<&str> = refusals
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    assert_eq!(
        rules,
        [
            "builtin.no_upgrade",
            "ecluse.refused.misdirected_request",
            "ecluse.refused.body_too_large"
        ],
        "{refusals:?}"
    );
    for r in &refusals {
        assert_eq!(r["destination"]["host"], "api.openai.com");
        assert_eq!(r["trace_id"].as_str().unwrap().len(), 32);
        assert!(r["chain"]["seq"].is_u64());
    }
    let (code, out) = ecluse(&["audit", "verify", audit.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
}

/// A FIFO that is opened for reading and never read: the audit writer
/// stalls once the pipe's buffer is full, as on a stuck disk.
fn stalled_fifo(dir: &Path) -> (std::path::PathBuf, std::thread::JoinHandle<std::fs::File>) {
    let fifo = dir.join("audit.fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let path = fifo.clone();
    // Opening for reading waits for ecluse to open it for writing.
    let reader = std::thread::spawn(move || std::fs::File::open(path).unwrap());
    (fifo, reader)
}

/// One call on a new connection; the status of the CONNECT when it is
/// refused, else of the request, with the body.
async fn one_call(proxy: &Proxy) -> (u16, String) {
    let tcp = match proxy.connect("api.openai.com:443").await {
        Ok(tcp) => tcp,
        Err((status, text)) => return (status, text),
    };
    let tls = tls_connect(tcp, "api.openai.com", &[proxy.ca_path()], &[b"http/1.1"])
        .await
        .unwrap();
    let resp = http1_send(
        tls,
        post_json(
            "api.openai.com",
            "/v1/chat/completions",
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#,
        ),
    )
    .await;
    let status = resp.status().as_u16();
    (status, body_text(resp).await)
}

fn metric(proxy: &Proxy, name: &str) -> f64 {
    let (_, text) = proxy.admin_get("/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_audit_writer_blocks_or_drops_as_configured() {
    let pki = TestPki::new();
    let mock = MockUpstream::start(
        Some(pki.server_config(&["api.openai.com"])),
        openai_handler(),
    )
    .await;
    for on_full in ["block", "drop"] {
        let dir = tempfile::tempdir().unwrap();
        let (fifo, reader) = stalled_fifo(dir.path());
        let yaml = format!(
            "{}audit: {{ file: {}, on_full: {on_full}, max_wait: 300ms, queue_records: 4 }}\n",
            upstream_yaml(&[("api.openai.com:443", mock.addr)], Some(&pki.ca_path)),
            fifo.display()
        );
        let proxy = tokio::task::spawn_blocking(move || Proxy::start(&yaml))
            .await
            .unwrap();
        let _held_open = reader.join().unwrap();
        // Each call makes two records of ~1.5 KB; the pipe holds 64 KiB.
        let mut refused = None;
        for _ in 0..150 {
            let (status, text) = one_call(&proxy).await;
            if status == 503 {
                refused = Some(text);
                break;
            }
            assert_eq!(status, 200, "{text}");
        }
        match on_full {
            "block" => {
                let text = refused.expect("calls are refused once the audit queue is full");
                assert!(
                    text.contains("audit log") && text.contains("not keeping up"),
                    "{text}"
                );
                assert!(metric(&proxy, "ecluse_audit_queue_depth") >= 4.0);
                assert_eq!(metric(&proxy, "ecluse_audit_dropped_total"), 0.0);
            }
            _ => {
                assert!(refused.is_none(), "drop mode keeps serving: {refused:?}");
                assert!(metric(&proxy, "ecluse_audit_dropped_total") > 0.0);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_while_the_audit_log_cannot_be_written() {
    let pki = TestPki::new();
    let mock = MockUpstream::start(
        Some(pki.server_config(&["api.openai.com"])),
        openai_handler(),
    )
    .await;
    let yaml = format!(
        "{}audit: {{ file: /dev/full }}\n",
        upstream_yaml(&[("api.openai.com:443", mock.addr)], Some(&pki.ca_path)),
    );
    let proxy = tokio::task::spawn_blocking(move || Proxy::start(&yaml))
        .await
        .unwrap();
    assert_eq!(proxy.admin_get("/readyz").0, 200);
    let _ = one_call(&proxy).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, body) = proxy.admin_get("/readyz");
        if status == 503 {
            assert!(
                body.contains("audit log /dev/full cannot be written"),
                "{body}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz stayed {status}: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(metric(&proxy, "ecluse_audit_write_failing"), 1.0);
}
