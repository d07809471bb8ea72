//! Policies follow a Git repository (made and committed to by the test) or a
//! directory, without a restart; broken revisions never take effect.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::git_repo::{git, PolicyRepo};
use common::*;
use serde_json::Value;

struct Env {
    _pki: TestPki,
    mock: MockUpstream,
    proxy: Arc<Proxy>,
}

async fn start(policy_yaml: &str, state: Option<tempfile::TempDir>) -> Env {
    let pki = TestPki::new();
    let mock = MockUpstream::start(
        Some(pki.server_config(&["api.openai.com"])),
        openai_handler(),
    )
    .await;
    let dir = state.unwrap_or_else(|| tempfile::tempdir().unwrap());
    let audit = dir.path().join("audit.log");
    // These tests reload back to back; the rate limit has a test of its own.
    let admin = if policy_yaml.contains("admin:") {
        ""
    } else {
        "admin: { reload_min_interval: 0s }\n"
    };
    let yaml = format!(
        "{}audit: {{ file: {} }}\n{admin}{policy_yaml}",
        upstream_yaml(&[("api.openai.com:443", mock.addr)], Some(&pki.ca_path)),
        audit.display()
    );
    let proxy = tokio::task::spawn_blocking(move || Proxy::start_in(dir, &yaml))
        .await
        .unwrap();
    Env {
        _pki: pki,
        mock,
        proxy: Arc::new(proxy),
    }
}

fn git_policy(repo: &PolicyRepo, poll: &str, extra: &str) -> String {
    format!(
        "policy:\n  git:\n    url: {}\n    ref: main\n    subdir: policies\n    poll_interval: {poll}\n{extra}",
        repo.url()
    )
}

/// An undeclared chat call: 200 while default_classification is internal,
/// 403 once it is personal (no reroute target configured).
async fn call(proxy: &Proxy) -> u16 {
    let tls = proxy
        .connect_tls("api.openai.com:443", &[b"http/1.1"])
        .await;
    let resp = http1_send(
        tls,
        post_json(
            "api.openai.com",
            "/v1/chat/completions",
            r#"{"model":"gpt-4o","messages":[]}"#,
        ),
    )
    .await;
    let status = resp.status().as_u16();
    let _ = body_text(resp).await;
    status
}

async fn admin(proxy: &Arc<Proxy>, method: &str, path: &str) -> (u16, Value) {
    let (addr, method, path) = (proxy.admin, method.to_string(), path.to_string());
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let status = parse_status(&out);
        let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        (
            status,
            serde_json::from_str(body).unwrap_or(Value::String(body.to_string())),
        )
    })
    .await
    .unwrap()
}

async fn reload(proxy: &Arc<Proxy>) -> (u16, Value) {
    admin(proxy, "POST", "/policy/reload").await
}

/// `POST /policy/reload` with extra header lines: status, head and body.
async fn reload_with(proxy: &Arc<Proxy>, headers: &[&str]) -> (u16, String, String) {
    let addr = proxy.admin;
    let headers: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(
            s,
            "POST /policy/reload HTTP/1.1\r\nHost: a\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        (parse_status(head), head.to_ascii_lowercase(), body.to_string())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_needs_the_token_and_is_rate_limited() {
    let repo = PolicyRepo::new();
    let secrets = tempfile::tempdir().unwrap();
    let token = "reload-canary-token-7781";
    let token_file = secrets.path().join("reload-token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let env = start(
        &format!(
            "admin:\n  reload_min_interval: 2s\n  reload_token_file: {}\n{}",
            token_file.display(),
            git_policy(&repo, "1h", "")
        ),
        None,
    )
    .await;
    let bearer = format!("Authorization: Bearer {token}");

    let (code, head, body) = reload_with(&env.proxy, &[]).await;
    assert_eq!(code, 401, "{body}");
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    assert!(body.contains("admin.reload_token_file"), "{body}");
    let (code, _, _) = reload_with(
        &env.proxy,
        &["Authorization: Bearer reload-canary-token-7782"],
    )
    .await;
    assert_eq!(code, 401);
    let (code, _, _) = reload_with(&env.proxy, &[&format!("Authorization: Basic {token}")]).await;
    assert_eq!(code, 401);
    // Read-only endpoints stay open.
    let (code, status) = admin(&env.proxy, "GET", "/policy").await;
    assert_eq!(code, 200);
    assert_eq!(status["revision"], repo.head());

    // The right token reloads; the refused attempts above did not count.
    repo.set_setting("notes", "reloaded".into());
    let next = repo.commit_all("next", &[]);
    let (code, _, body) = reload_with(&env.proxy, &[&bearer]).await;
    assert_eq!(code, 200, "{body}");
    let outcome: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(outcome["outcome"]["swapped"]["revision"], next, "{outcome}");

    // At once again: 429 with when to come back, and nothing fetched.
    let (code, head, body) = reload_with(&env.proxy, &[&bearer]).await;
    assert_eq!(code, 429, "{body}");
    let retry: u64 = head
        .lines()
        .find_map(|l| l.strip_prefix("retry-after: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After: {head}"));
    assert!((1..=2).contains(&retry), "{head}");
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let (code, _, body) = reload_with(&env.proxy, &[&bearer]).await;
    assert_eq!(code, 200, "{body}");

    assert!(
        !env.proxy.logs().contains(token),
        "the reload token reached the log"
    );
}

#[test]
fn a_git_url_with_a_token_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ecluse.yaml");
    let token = "ghp_canary_in_url_0043";
    std::fs::write(
        &config,
        format!("policy:\n  git:\n    url: https://x-access-token:{token}@github.com/acme/policies.git\n"),
    )
    .unwrap();
    for args in [&["check", "--config"][..], &["run", "--config"]] {
        let out = Command::new(ecluse_bin())
            .args(args)
            .arg(&config)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{args:?} accepted it: {text}");
        assert!(text.contains("policy.git.token_file"), "{args:?}: {text}");
        assert!(!text.contains(token), "{args:?} echoed the token: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_takes_effect_within_the_poll_interval_and_reload_makes_it_immediate() {
    let repo = PolicyRepo::new();
    let env = start(&git_policy(&repo, "1s", ""), None).await;
    assert_eq!(call(&env.proxy).await, 200);
    let (_, status) = admin(&env.proxy, "GET", "/policy").await;
    assert_eq!(status["revision"], repo.head());
    assert_eq!(status["ref"], repo.head());

    repo.set_setting("default_classification", "personal".into());
    let flipped = repo.commit_all("treat undeclared data as personal", &[]);
    let started = Instant::now();
    loop {
        if call(&env.proxy).await == 403 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_millis(1200) + Duration::from_secs(4),
            "the new commit did not take effect within the poll interval:\n{}",
            env.proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, status) = admin(&env.proxy, "GET", "/policy").await;
    assert_eq!(status["revision"], flipped);

    // POST /policy/reload applies the next commit at once.
    repo.set_setting("default_classification", "internal".into());
    let back = repo.commit_all("back to internal", &[]);
    let (code, outcome) = reload(&env.proxy).await;
    assert_eq!(code, 200, "{outcome}");
    assert_eq!(outcome["outcome"]["swapped"]["revision"], back, "{outcome}");
    assert_eq!(call(&env.proxy).await, 200);
    let lines: Vec<Value> = std::fs::read_to_string(env.proxy.dir.path().join("audit.log"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines
        .iter()
        .any(|l| l["revision"] == flipped.as_str() && l["action"] == "deny"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_commits_are_rejected_and_the_old_revision_keeps_deciding() {
    let repo = PolicyRepo::new();
    let good = repo.head();
    let env = start(&git_policy(&repo, "1h", ""), None).await;
    let broken: [(&str, &str, &str); 3] = [
        (
            "egress.rego",
            "package ecluse.egress\ndecision := {\n",
            "compile",
        ),
        (
            "always_fails_test.rego",
            "package ecluse.always_fails_test\n\ntest_wrong if {\n\t1 == 2\n}\n",
            "test",
        ),
        (
            "data/entities.json",
            "{\"version\": 1, \"providers\": {\"x\": {}}}",
            "registry",
        ),
    ];
    for (file, text, step) in broken {
        let before = std::fs::read_to_string(repo.path().join("policies").join(file)).ok();
        repo.write(file, text);
        // This commit would also flip the decision, were it accepted.
        repo.set_setting("default_classification", "personal".into());
        let sha = repo.commit_all(&format!("break {file}"), &[]);
        let (code, outcome) = reload(&env.proxy).await;
        assert_eq!(code, 422, "{file}: {outcome}");
        assert_eq!(
            outcome["outcome"]["rejected"]["step"], step,
            "{file}: {outcome}"
        );
        assert_eq!(outcome["outcome"]["rejected"]["revision"], sha);
        let (_, status) = admin(&env.proxy, "GET", "/policy").await;
        assert_eq!(status["revision"], good, "{status}");
        assert_eq!(status["last_error"]["step"], step);
        assert_eq!(status["last_error"]["revision"], sha);
        assert_eq!(
            call(&env.proxy).await,
            200,
            "the broken revision took effect"
        );
        match before {
            Some(text) => repo.write(file, &text),
            None => std::fs::remove_file(repo.path().join("policies").join(file)).unwrap(),
        }
        repo.set_setting("default_classification", "internal".into());
    }
    let (_, metrics) = tokio::task::spawn_blocking({
        let proxy = env.proxy.clone();
        move || proxy.admin_get("/metrics")
    })
    .await
    .unwrap();
    assert!(
        metrics.contains("ecluse_policy_reloads_total{result=\"failure\",step=\"compile\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("ecluse_policy_reloads_total{result=\"failure\",step=\"test\"} 1"));
    assert!(metrics.contains("ecluse_policy_reloads_total{result=\"failure\",step=\"registry\"} 1"));
    assert!(env.proxy.logs().contains("rejected at the compile step"));

    // A fixed commit is accepted.
    let fixed = repo.commit_all("fix", &[]);
    let (code, outcome) = reload(&env.proxy).await;
    assert_eq!(code, 200, "{outcome}");
    assert_eq!(outcome["policy"]["revision"], fixed);
    assert!(outcome["policy"]["last_error"].is_null());
}

fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .output()
        .expect("ssh-keygen is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    (key, public.trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_commits_signed_by_an_allowed_key_are_accepted() {
    let repo = PolicyRepo::new();
    let keys = tempfile::tempdir().unwrap();
    let (allowed, allowed_pub) = keygen(keys.path(), "allowed");
    let (stranger, _) = keygen(keys.path(), "stranger");
    let signers = keys.path().join("allowed_signers");
    std::fs::write(
        &signers,
        format!("compliance@example.com namespaces=\"git\" {allowed_pub}\n"),
    )
    .unwrap();
    let sign = |key: &Path, message: &str| {
        git(repo.path(), &["add", "-A"]);
        let key_arg = format!("user.signingkey={}", key.display());
        git(
            repo.path(),
            &[
                "-c",
                "gpg.format=ssh",
                "-c",
                &key_arg,
                "commit",
                "--quiet",
                "--allow-empty",
                "-S",
                "-m",
                message,
            ],
        );
        repo.head()
    };
    let first = sign(&allowed, "signed initial");
    let env = start(
        &git_policy(
            &repo,
            "1h",
            &format!("    allowed_signers: {}\n", signers.display()),
        ),
        None,
    )
    .await;
    let (_, status) = admin(&env.proxy, "GET", "/policy").await;
    assert_eq!(status["revision"], first, "{status}\n{}", env.proxy.logs());

    let unsigned = repo.commit_all("unsigned", &[]);
    let (code, outcome) = reload(&env.proxy).await;
    assert_eq!(code, 422, "{outcome}");
    assert_eq!(outcome["outcome"]["rejected"]["step"], "signature");
    assert_eq!(outcome["outcome"]["rejected"]["revision"], unsigned);

    let unknown = sign(&stranger, "signed by a stranger");
    let (code, outcome) = reload(&env.proxy).await;
    assert_eq!(code, 422, "{outcome}");
    assert_eq!(outcome["outcome"]["rejected"]["step"], "signature");
    assert_eq!(outcome["outcome"]["rejected"]["revision"], unknown);

    let good = sign(&allowed, "signed by compliance");
    let (code, outcome) = reload(&env.proxy).await;
    assert_eq!(code, 200, "{outcome}");
    assert_eq!(outcome["policy"]["revision"], good);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewound_ref_is_rejected() {
    let repo = PolicyRepo::new();
    let first = repo.head();
    repo.set_setting("notes", "second revision".into());
    let second = repo.commit_all("second", &[]);
    let env = start(&git_policy(&repo, "1h", ""), None).await;
    let (_, status) = admin(&env.proxy, "GET", "/policy").await;
    assert_eq!(status["revision"], second);
    git(repo.path(), &["reset", "--quiet", "--hard", &first]);
    let (code, outcome) = reload(&env.proxy).await;
    assert_eq!(code, 422, "{outcome}");
    assert_eq!(
        outcome["outcome"]["rejected"]["step"], "ancestry",
        "{outcome}"
    );
    let (_, status) = admin(&env.proxy, "GET", "/policy").await;
    assert_eq!(status["revision"], second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_remote_at_start_serves_the_persisted_revision_or_is_not_ready() {
    let repo = PolicyRepo::new();
    let state = tempfile::tempdir().unwrap();
    let state_path = state.path().to_path_buf();
    let first = start(&git_policy(&repo, "1s", ""), Some(state)).await;
    let revision = repo.head();
    let (_, status) = admin(&first.proxy, "GET", "/policy").await;
    assert_eq!(status["revision"], revision);
    let reused = tempfile::TempDir::new().unwrap();
    copy_dir(&state_path.join("state"), &reused.path().join("state"));
    drop(first);

    // The repository goes away; the same state dir serves the persisted revision.
    let moved = repo.path().with_extension("moved");
    std::fs::rename(repo.path(), &moved).unwrap();
    let env = start(&git_policy(&repo, "1s", ""), Some(reused)).await;
    let (_, status) = admin(&env.proxy, "GET", "/policy").await;
    assert_eq!(status["revision"], revision, "{status}");
    assert_eq!(status["from_persisted"], true);
    assert_eq!(status["last_error"]["step"], "fetch");
    assert_eq!(env.proxy.admin_get("/readyz").0, 200);
    assert_eq!(call(&env.proxy).await, 200);
    assert!(env
        .proxy
        .logs()
        .contains("serving the persisted policy revision"));

    // No persisted revision: not ready, and calls are denied.
    let fresh = start(&git_policy(&repo, "1s", ""), None).await;
    let (code, text) = fresh.proxy.admin_get("/readyz");
    assert_eq!(code, 503, "{text}");
    let (status, text) = fresh.proxy.connect("api.openai.com:443").await.unwrap_err();
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("no policy revision is loaded"), "{text}");
    assert!(fresh.mock.recorded().is_empty());

    // When the repository comes back, the next poll loads it.
    std::fs::rename(&moved, repo.path()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while fresh.proxy.admin_get("/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "{}", fresh.proxy.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(call(&fresh.proxy).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_source_works_with_the_default_relative_state_dir() {
    let repo = PolicyRepo::new();
    // Told apart from the embedded policies: undeclared data is personal here.
    repo.set_setting("default_classification", "personal".into());
    let head = repo.commit_all("treat undeclared data as personal", &[]);
    let pki = TestPki::new();
    let mock = MockUpstream::start(
        Some(pki.server_config(&["api.openai.com"])),
        openai_handler(),
    )
    .await;
    let yaml = format!(
        "{}{}",
        upstream_yaml(&[("api.openai.com:443", mock.addr)], Some(&pki.ca_path)),
        git_policy(&repo, "30s", "")
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = tokio::task::spawn_blocking(move || Proxy::start_in_working_dir(dir, &yaml))
        .await
        .unwrap();
    let proxy = Arc::new(proxy);
    let deadline = Instant::now() + Duration::from_secs(15);
    while proxy.admin_get("/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "never ready:\n{}", proxy.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, status) = admin(&proxy, "GET", "/policy").await;
    assert_eq!(status["revision"], head, "{status}");
    assert_eq!(call(&proxy).await, 403, "{}", proxy.logs());
    assert!(proxy.state_dir().join("policy-git/repo.git/HEAD").exists());
    assert!(mock.recorded().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_is_followed_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    copy_default_policies(&policies);
    let env = start(
        &format!(
            "policy: {{ dir: {}, poll_interval: 200ms }}\n",
            policies.display()
        ),
        None,
    )
    .await;
    assert_eq!(call(&env.proxy).await, 200);
    let path = policies.join("data/settings.json");
    let mut settings: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    settings["default_classification"] = "personal".into();
    std::fs::write(&path, settings.to_string()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while call(&env.proxy).await != 403 {
        assert!(Instant::now() < deadline, "{}", env.proxy.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_swaps_under_load_fail_no_call() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    copy_default_policies(&policies);
    let env = start(
        &format!(
            "policy: {{ dir: {}, poll_interval: 1h }}\n",
            policies.display()
        ),
        None,
    )
    .await;
    let (_, status) = admin(&env.proxy, "GET", "/policy").await;
    let mut revisions = vec![status["revision"].as_str().unwrap().to_string()];

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..3 {
        let (proxy, stop) = (env.proxy.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let tls = proxy
                .connect_tls("api.openai.com:443", &[b"http/1.1"])
                .await;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                sender.ready().await.unwrap();
                let resp = sender
                    .send_request(post_json(
                        "api.openai.com",
                        "/v1/chat/completions",
                        r#"{"model":"gpt-4o","messages":[]}"#,
                    ))
                    .await
                    .unwrap();
                statuses.push(resp.status().as_u16());
                let _ = body_text(resp).await;
            }
            statuses
        }));
    }
    let path = policies.join("data/settings.json");
    let mut settings: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for i in 0..50 {
        settings["notes"] = format!("revision {i}").into();
        std::fs::write(&path, settings.to_string()).unwrap();
        let (code, outcome) = reload(&env.proxy).await;
        assert_eq!(code, 200, "{outcome}");
        revisions.push(
            outcome["outcome"]["swapped"]["revision"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for w in workers {
        let statuses = w.await.unwrap();
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
        total += statuses.len();
    }
    assert!(total >= 50, "only {total} calls during the swaps");
    // The audit writer runs behind the answers: wait for every record.
    let audit_log = env.proxy.dir.path().join("audit.log");
    let read_audit = || -> Vec<Value> {
        std::fs::read_to_string(&audit_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let request_count = |lines: &[Value]| lines.iter().filter(|l| l["stage"] == "request").count();
    wait_until_async(Duration::from_secs(10), || {
        request_count(&read_audit()) >= total
    })
    .await;
    let lines = read_audit();
    let requests: Vec<&Value> = lines.iter().filter(|l| l["stage"] == "request").collect();
    assert_eq!(requests.len(), total);
    for r in requests {
        let revision = r["revision"].as_str().unwrap();
        assert!(
            revisions.iter().any(|x| x == revision),
            "unknown revision {revision}"
        );
    }
    assert_eq!(env.mock.recorded().len(), total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_remotes_with_a_token_and_plain_paths_work() {
    let repo = PolicyRepo::new();
    // Serve a bare clone over HTTPS, demanding the token.
    let served = tempfile::tempdir().unwrap();
    git(
        served.path(),
        &[
            "clone",
            "--quiet",
            "--bare",
            repo.path().to_str().unwrap(),
            "policies.git",
        ],
    );
    let pki = TestPki::new();
    let token = "ghp_canary_token_0042";
    let basic = format!(
        "Basic {}",
        base64_of(format!("x-access-token:{token}").as_bytes())
    );
    let server = MockUpstream::start(
        Some(pki.server_config(&["localhost"])),
        common::git_http::git_http_handler(served.path().to_path_buf(), basic.clone()),
    )
    .await;
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let policy = format!(
        "policy:\n  git:\n    url: https://localhost:{}/policies.git\n    ref: main\n    subdir: policies\n    poll_interval: 1h\n    token_file: {}\n",
        server.addr.port(),
        token_file.display()
    );
    let mock = MockUpstream::start(
        Some(pki.server_config(&["api.openai.com"])),
        openai_handler(),
    )
    .await;
    let yaml = format!(
        "{}{policy}",
        upstream_yaml(&[("api.openai.com:443", mock.addr)], Some(&pki.ca_path))
    );
    // A `git` first on ecluse's PATH that records every command line it is
    // given, then runs the real one: the token must be on none of them.
    let shims = tempfile::tempdir().unwrap();
    let argv_log = shims.path().join("argv.log");
    let real_git = Command::new("sh")
        .args(["-c", "command -v git"])
        .output()
        .unwrap();
    let real_git = String::from_utf8(real_git.stdout).unwrap();
    let shim = shims.path().join("git");
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
            argv_log.display(),
            real_git.trim()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        shims.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let proxy = Arc::new(
        tokio::task::spawn_blocking(move || {
            Proxy::start_with_env(tempfile::tempdir().unwrap(), &yaml, &[("PATH", &path)])
        })
        .await
        .unwrap(),
    );
    let (_, status) = admin(&proxy, "GET", "/policy").await;
    assert_eq!(
        status["revision"],
        repo.head(),
        "{status}\n{}",
        proxy.logs()
    );
    assert!(!proxy.logs().contains(token), "the token reached the log");
    assert!(server
        .recorded()
        .iter()
        .all(|r| r.header("authorization").is_some()));

    // A wrong token is a fetch failure that keeps the revision.
    std::fs::write(&token_file, "wrong-token").unwrap();
    git(
        repo.path(),
        &["commit", "--quiet", "--allow-empty", "-m", "next"],
    );
    git(
        repo.path(),
        &[
            "push",
            "--quiet",
            served.path().join("policies.git").to_str().unwrap(),
            "main",
        ],
    );
    let (code, outcome) = reload(&proxy).await;
    assert_eq!(code, 422, "{outcome}");
    assert_eq!(outcome["outcome"]["rejected"]["step"], "fetch");
    assert!(!outcome.to_string().contains("wrong-token"));
    // Every git command line ecluse ran, fetches included, is free of both
    // tokens and of the Basic credential built from them.
    let argv = std::fs::read_to_string(&argv_log).unwrap();
    assert!(argv.contains("fetch"), "the shim saw no fetch: {argv}");
    let wrong_basic = base64_of(b"x-access-token:wrong-token");
    for secret in [token, "wrong-token", basic.as_str(), wrong_basic.as_str()] {
        let bare = secret.trim_start_matches("Basic ");
        assert!(
            !argv.contains(bare),
            "a token on a git command line: {argv}"
        );
    }

    // A plain local path as the URL.
    let local = start(
        &format!(
            "policy:\n  git:\n    url: {}\n    subdir: policies\n    poll_interval: 1h\n",
            repo.path().display()
        ),
        None,
    )
    .await;
    let (_, status) = admin(&local.proxy, "GET", "/policy").await;
    assert_eq!(status["revision"], repo.head());
}

fn base64_of(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char
            } else {
                '='
            });
        }
    }
    out
}

/// An sshd on a loopback port that lets one key in and runs git.
struct TestSshd {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
    known_hosts: PathBuf,
    client_key: PathBuf,
}

impl Drop for TestSshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_sshd() -> TestSshd {
    let dir = tempfile::tempdir().unwrap();
    let (host_key, host_pub) = keygen(dir.path(), "host_key");
    let (client_key, client_pub) = keygen(dir.path(), "client_key");
    let authorized = dir.path().join("authorized_keys");
    std::fs::write(&authorized, format!("{client_pub}\n")).unwrap();
    let port = free_port();
    let config = dir.path().join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nStrictModes no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             UsePAM no\nPidFile {}\nLogLevel ERROR\n",
            host_key.display(),
            authorized.display(),
            dir.path().join("sshd.pid").display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all("/run/sshd").ok();
    let child = Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .spawn()
        .expect("sshd (openssh-server) is installed");
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {host_pub}\n")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "sshd did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    TestSshd {
        child,
        port,
        _dir: dir,
        known_hosts,
        client_key,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_remotes_with_a_key_and_checked_host_keys_work() {
    let repo = PolicyRepo::new();
    let sshd = tokio::task::spawn_blocking(start_sshd).await.unwrap();
    let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    let url = format!(
        "ssh://{}@127.0.0.1:{}{}",
        user.trim(),
        sshd.port,
        repo.path().display()
    );
    let policy = format!(
        "policy:\n  git:\n    url: {url}\n    subdir: policies\n    poll_interval: 1h\n    ssh_key_file: {}\n    known_hosts_file: {}\n",
        sshd.client_key.display(),
        sshd.known_hosts.display()
    );
    let env = start(&policy, None).await;
    let (_, status) = admin(&env.proxy, "GET", "/policy").await;
    assert_eq!(
        status["revision"],
        repo.head(),
        "{status}\n{}",
        env.proxy.logs()
    );

    // A host key that does not match known_hosts is refused.
    let other = tempfile::tempdir().unwrap();
    let (_, wrong_pub) = keygen(other.path(), "wrong");
    let wrong_hosts = other.path().join("known_hosts");
    std::fs::write(
        &wrong_hosts,
        format!("[127.0.0.1]:{} {wrong_pub}\n", sshd.port),
    )
    .unwrap();
    let policy = format!(
        "policy:\n  git:\n    url: {url}\n    subdir: policies\n    poll_interval: 1h\n    ssh_key_file: {}\n    known_hosts_file: {}\n",
        sshd.client_key.display(),
        wrong_hosts.display()
    );
    let refused = start(&policy, None).await;
    let (_, status) = admin(&refused.proxy, "GET", "/policy").await;
    assert_eq!(status["last_error"]["step"], "fetch", "{status}");
    assert_eq!(refused.proxy.admin_get("/readyz").0, 503);
}
