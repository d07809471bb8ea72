//! The official SDKs of five APIs, unmodified, through `HTTPS_PROXY`: a call
//! that the default policy refuses raises each SDK's own permission error,
//! with ecluse's reason as its message; a SigV4-signed Bedrock call reaches
//! the upstream with a signature that botocore's signer still verifies.

mod common;

use std::process::Command;
use std::sync::Arc;

use common::*;

/// One refused call per SDK; prints the exception the SDK raised.
const REFUSED: &str = r#"
import json, sys
sdk = sys.argv[1]
# Personal data (an IBAN and an e-mail address) bound for a provider within
# US CLOUD Act reach, with no reroute target configured.
PROMPT = "Refund IBAN DE89 3704 0044 0532 0130 00 to jane.doe@example.com"

def report(e, **facts):
    print(json.dumps(dict(exception=type(e).__module__ + "." + type(e).__name__,
                          text=str(e), **facts)))

if sdk == "openai":
    import openai
    client = openai.OpenAI(api_key="sk-test-canary-0000", max_retries=0, timeout=30)
    try:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": PROMPT}])
        print(json.dumps({"passed": True}))
    except openai.PermissionDeniedError as e:
        report(e, message=e.message, status=e.status_code)
elif sdk == "anthropic":
    import anthropic
    client = anthropic.Anthropic(api_key="sk-ant-test-canary-0000", max_retries=0, timeout=30)
    try:
        client.messages.create(model="claude-sonnet-4-5", max_tokens=64,
                               messages=[{"role": "user", "content": PROMPT}])
        print(json.dumps({"passed": True}))
    except anthropic.PermissionDeniedError as e:
        report(e, message=e.message, status=e.status_code,
               type=e.body.get("error", {}).get("type") if isinstance(e.body, dict) else None)
elif sdk == "gemini":
    from google import genai
    from google.genai import errors
    client = genai.Client(api_key="AIza-test-canary-0000")
    try:
        client.models.generate_content(model="gemini-2.5-flash", contents=PROMPT)
        print(json.dumps({"passed": True}))
    except errors.ClientError as e:
        report(e, message=e.message, status=e.code, rpc_status=e.status)
elif sdk == "bedrock":
    import boto3
    from botocore.config import Config
    client = boto3.client("bedrock-runtime", region_name="us-east-1",
                          aws_access_key_id="AKIDTESTCANARY0000",
                          aws_secret_access_key="test-secret-canary-0000",
                          config=Config(retries={"max_attempts": 1}))
    try:
        client.converse(modelId="anthropic.claude-3-haiku-20240307-v1:0",
                        messages=[{"role": "user", "content": [{"text": PROMPT}]}])
        print(json.dumps({"passed": True}))
    except client.exceptions.AccessDeniedException as e:
        report(e, message=e.response["Error"]["Message"], code=e.response["Error"]["Code"],
               status=e.response["ResponseMetadata"]["HTTPStatusCode"])
elif sdk == "cohere":
    import cohere
    from cohere.errors import ForbiddenError
    client = cohere.ClientV2(api_key="co-test-canary-0000", timeout=30)
    try:
        client.chat(model="command-a-03-2025", messages=[{"role": "user", "content": PROMPT}])
        print(json.dumps({"passed": True}))
    except ForbiddenError as e:
        report(e, message=e.body.get("message") if isinstance(e.body, dict) else None,
               status=e.status_code)
"#;

/// A Converse call with `x-data-classification: public` (and an
/// `Accept-Encoding`) added before botocore signs it.
const SIGNED: &str = r#"
import json
import boto3
from botocore.config import Config
client = boto3.client("bedrock-runtime", region_name="us-east-1",
                      aws_access_key_id="AKIDTESTCANARY0000",
                      aws_secret_access_key="test-secret-canary-0000",
                      config=Config(retries={"max_attempts": 1}))

def declare(request, **kwargs):
    request.headers["x-data-classification"] = "public"
    request.headers["Accept-Encoding"] = "gzip"

client.meta.events.register("before-sign.bedrock-runtime.Converse", declare)
try:
    r = client.converse(modelId="anthropic.claude-3-haiku-20240307-v1:0",
                        messages=[{"role": "user", "content": [{"text": "What is the capital of France?"}]}])
    print(json.dumps({"text": r["output"]["message"]["content"][0]["text"],
                      "stop": r["stopReason"], "tokens": r["usage"]["totalTokens"]}))
except client.exceptions.AccessDeniedException as e:
    print(json.dumps({"denied": e.response["Error"]["Message"]}))
"#;

/// Recomputes the SigV4 signature of a received request with botocore's
/// signer, over the headers its `Authorization` says were signed.
const VERIFY_SIGV4: &str = r#"
import base64, json, sys
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
got = json.load(sys.stdin)
headers = got["headers"]
auth = next(v for k, v in headers if k.lower() == "authorization")
fields = dict(part.strip().split("=", 1) for part in auth.split(" ", 1)[1].split(","))
signed = fields["SignedHeaders"].split(";")
_, date, region, service, _ = fields["Credential"].split("/")
request = AWSRequest(method=got["method"],
                     url="https://" + next(v for k, v in headers if k.lower() == "host") + got["path"],
                     data=base64.b64decode(got["body"]))
# A header sent twice is signed as its values joined: keep each one.
for k, v in headers:
    if k.lower() in signed:
        request.headers[k] = v
request.context["timestamp"] = next(v for k, v in headers if k.lower() == "x-amz-date")
signer = SigV4Auth(Credentials("AKIDTESTCANARY0000", "test-secret-canary-0000"), service, region)
canonical = signer.canonical_request(request)
expected = signer.signature(signer.string_to_sign(request, canonical), request)
print(json.dumps({"valid": expected == fields["Signature"], "signed": signed}))
"#;

const HOSTS: [&str; 5] = [
    "api.openai.com",
    "api.anthropic.com",
    "generativelanguage.googleapis.com",
    "bedrock-runtime.us-east-1.amazonaws.com",
    "api.cohere.com",
];

/// One mock for all [`HOSTS`], that no call should reach (a 500 if one
/// does), and ecluse in front of it with its default policy.
async fn refusing_hosts() -> (TestPki, MockUpstream, Proxy) {
    let pki = TestPki::new();
    let mock = MockUpstream::start(
        Some(pki.server_config(&HOSTS)),
        Arc::new(|_: &Recorded| MockResponse::json(500, serde_json::json!({"unexpected": true}))),
    )
    .await;
    let resolve: Vec<(String, std::net::SocketAddr)> = HOSTS
        .iter()
        .map(|h| (format!("{h}:443"), mock.addr))
        .collect();
    let resolve: Vec<(&str, std::net::SocketAddr)> =
        resolve.iter().map(|(h, a)| (h.as_str(), *a)).collect();
    let proxy = Proxy::start(&upstream_yaml(&resolve, Some(&pki.ca_path)));
    (pki, mock, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sdk_raises_its_own_permission_error_with_ecluses_reason() {
    let (_pki, mock, proxy) = refusing_hosts().await;
    let proxy = Arc::new(proxy);
    let bundle = Arc::new(sdk::ca_bundle(&proxy));

    // (sdk, exception class, status field, expected status, extra field, expected)
    let cases: [(&str, &str, &str, &str); 5] = [
        ("openai", "openai.PermissionDeniedError", "status", "403"),
        (
            "anthropic",
            "anthropic.PermissionDeniedError",
            "type",
            "permission_error",
        ),
        (
            "gemini",
            "google.genai.errors.ClientError",
            "rpc_status",
            "PERMISSION_DENIED",
        ),
        (
            "bedrock",
            "botocore.errorfactory.AccessDeniedException",
            "code",
            "AccessDeniedException",
        ),
        (
            "cohere",
            "cohere.errors.forbidden_error.ForbiddenError",
            "status",
            "403",
        ),
    ];
    let runs: Vec<_> = cases
        .iter()
        .map(|(sdk, ..)| {
            let (proxy, bundle, sdk) = (proxy.clone(), bundle.clone(), sdk.to_string());
            tokio::task::spawn_blocking(move || {
                sdk::run_python_sdk(REFUSED, &[&sdk], &proxy, &bundle, &[])
            })
        })
        .collect();
    for ((sdk, exception, field, want), run) in cases.iter().zip(runs) {
        let stdout = run.await.unwrap();
        let got: serde_json::Value =
            serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{sdk}: {e}: {stdout}"));
        assert_eq!(got["exception"], *exception, "{sdk}: {got}");
        let value = match &got[*field] {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        assert_eq!(value, *want, "{sdk}: {got}");
        for text in [&got["message"], &got["text"]] {
            let text = text.as_str().unwrap_or_default();
            assert!(
                text.contains("may not reach") && text.contains("CLOUD Act"),
                "{sdk}: the SDK does not show ecluse's reason: {got}"
            );
        }
    }
    assert!(
        mock.recorded().is_empty(),
        "a refused call reached the upstream"
    );
    let logs = proxy.logs();
    for canary in ["canary-0000", "DE89"] {
        assert!(!logs.contains(canary), "{canary} in ecluse's log");
    }
}

type Verdicts = Arc<std::sync::Mutex<Vec<serde_json::Value>>>;

/// A mock Bedrock for `host` with Bedrock's own check: the signature is
/// recomputed by botocore's signer over what arrived, and a mismatch is
/// Bedrock's 403. The verdicts, one per call.
async fn bedrock_verifying_signatures(pki: &TestPki, host: &str) -> (MockUpstream, Verdicts) {
    let verdicts: Verdicts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = verdicts.clone();
    let mock = MockUpstream::start(
        Some(pki.server_config(&[host])),
        Arc::new(move |req: &Recorded| {
            let verdict = verify_sigv4(req);
            seen.lock().unwrap().push(verdict.clone());
            if verdict["valid"] != true {
                return MockResponse::Full {
                    status: 403,
                    headers: vec![
                        ("content-type".into(), "application/json".into()),
                        ("x-amzn-ErrorType".into(), "InvalidSignatureException".into()),
                    ],
                    body: bytes::Bytes::from_static(
                        br#"{"message":"The request signature we calculated does not match the signature you provided."}"#,
                    ),
                };
            }
            MockResponse::json(
                200,
                serde_json::json!({
                    "output": {"message": {"role": "assistant", "content": [{"text": "Paris."}]}},
                    "stopReason": "end_turn",
                    "usage": {"inputTokens": 9, "outputTokens": 2, "totalTokens": 11},
                    "metrics": {"latencyMs": 12}
                }),
            )
        }),
    )
    .await;
    (mock, verdicts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigv4_signed_bedrock_call_reaches_the_upstream_verifiable() {
    let host = "bedrock-runtime.us-east-1.amazonaws.com";
    let pki = TestPki::new();
    let (mock, verdicts) = bedrock_verifying_signatures(&pki, host).await;
    let proxy = Arc::new(Proxy::start(&upstream_yaml(
        &[(&format!("{host}:443"), mock.addr)],
        Some(&pki.ca_path),
    )));
    let got = run_signed(&proxy).await;
    assert_eq!(got["text"], "Paris.", "{got}");
    assert_eq!(got["tokens"], 11);

    let verdicts = verdicts.lock().unwrap().clone();
    assert_eq!(verdicts.len(), 1, "{verdicts:?}");
    assert_eq!(verdicts[0]["valid"], true, "{verdicts:?}");
    let signed: Vec<&str> = verdicts[0]["signed"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    for name in [
        "host",
        "x-amz-date",
        "x-data-classification",
        "accept-encoding",
    ] {
        assert!(signed.contains(&name), "{name} not signed: {signed:?}");
    }
    let recorded = mock.recorded();
    assert_eq!(recorded[0].header("x-data-classification"), Some("public"));
    assert_eq!(recorded[0].header("accept-encoding"), Some("gzip"));
    assert!(
        recorded[0].path.ends_with("/converse"),
        "{}",
        recorded[0].path
    );
    assert!(
        !proxy.logs().contains("canary-0000"),
        "credential in the log"
    );
}

/// Signs a Converse request with botocore, as the SDK does, and prints its
/// URL, headers and body for another client (curl) to send as they are.
const SIGN_ONLY: &str = r#"
import json, sys
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
body = json.dumps({"messages": [{"role": "user", "content": [{"text": "What is the capital of France?"}]}]})
request = AWSRequest(method="POST", url="https://" + sys.argv[1] + "/model/test-model/converse", data=body,
                     headers={"content-type": "application/json", "x-data-classification": "public",
                              "accept-encoding": "gzip", "x-app-signed": "kept"})
SigV4Auth(Credentials("AKIDTESTCANARY0000", "test-secret-canary-0000"), "bedrock", "us-east-1").add_auth(request)
print(json.dumps({"url": request.url, "headers": dict(request.headers), "body": body}))
"#;

/// SECURITY #41 over HTTP/1.1 and HTTP/2: a request signed over its
/// headers (SigV4) reaches the upstream with every signed header and the
/// body as signed, whichever protocol the client spoke inside the tunnel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigv4_signed_request_stays_verifiable_over_h1_and_h2() {
    let host = "bedrock-runtime.us-east-1.amazonaws.com";
    let pki = TestPki::new();
    let (mock, verdicts) = bedrock_verifying_signatures(&pki, host).await;
    let proxy = Proxy::start(&upstream_yaml(
        &[(&format!("{host}:443"), mock.addr)],
        Some(&pki.ca_path),
    ));
    let ca = proxy.ca_path();
    for http in ["--http1.1", "--http2"] {
        let out = run_ok(
            Command::new(common::python::python()).args(["-c", SIGN_ONLY, host]),
            "botocore signing",
        );
        let signed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut args: Vec<String> = [
            http,
            "--proxy",
            &proxy.proxy_url(),
            "--cacert",
            ca.to_str().unwrap(),
            "-w",
            "\n%{http_code} %{http_version}",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        for (k, v) in signed["headers"].as_object().unwrap() {
            args.push("-H".into());
            args.push(format!("{k}: {}", v.as_str().unwrap()));
        }
        args.push("--data-binary".into());
        args.push(signed["body"].as_str().unwrap().into());
        args.push(signed["url"].as_str().unwrap().into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = curl(&args);
        assert_eq!(code, 0, "{http}: {err}");
        let (body, tail) = out.rsplit_once('\n').unwrap();
        let want = if http == "--http2" {
            "200 2"
        } else {
            "200 1.1"
        };
        assert_eq!(tail, want, "{http}: {body}\n{}", proxy.logs());
    }
    let verdicts = verdicts.lock().unwrap().clone();
    assert_eq!(verdicts.len(), 2, "{verdicts:?}");
    for verdict in &verdicts {
        assert_eq!(verdict["valid"], true, "{verdicts:?}");
        let signed = verdict["signed"].to_string();
        for name in [
            "host",
            "x-amz-date",
            "x-data-classification",
            "x-app-signed",
        ] {
            assert!(signed.contains(name), "{name} not signed: {signed}");
        }
    }
    for r in mock.recorded() {
        assert_eq!(r.header("x-data-classification"), Some("public"));
        assert_eq!(r.header("x-app-signed"), Some("kept"));
        assert_eq!(r.header("accept-encoding"), Some("gzip"));
    }
}

/// [`SIGNED`] through `proxy`, off the async runtime: what it printed.
async fn run_signed(proxy: &Arc<Proxy>) -> serde_json::Value {
    let proxy = proxy.clone();
    let stdout = tokio::task::spawn_blocking(move || {
        let bundle = sdk::ca_bundle(&proxy);
        sdk::run_python_sdk(SIGNED, &[], &proxy, &bundle, &[])
    })
    .await
    .unwrap();
    serde_json::from_str(stdout.trim()).unwrap()
}

/// Runs botocore's signer over a received request (see [`VERIFY_SIGV4`]).
fn verify_sigv4(req: &Recorded) -> serde_json::Value {
    use base64::Engine;
    use std::io::Write;
    let input = serde_json::json!({
        "method": req.method,
        "path": req.path,
        "headers": req.headers,
        "body": base64::engine::general_purpose::STANDARD.encode(&req.body),
    });
    let mut child = Command::new(common::python::python())
        .args(["-c", VERIFY_SIGV4])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(
        |_| serde_json::json!({"valid": false, "error": String::from_utf8_lossy(&out.stderr)}),
    )
}

/// A call refused before its body is read (a bad declaration, announced
/// with `Expect: 100-continue`) is answered in the shape of its host's API,
/// as the registry names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_before_the_body_is_read_take_the_hosts_api_shape() {
    let (_pki, mock, proxy) = refusing_hosts().await;
    let ca = proxy.ca_path();
    // (url, pointer to the message, pointer to the kind, kind, header)
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        Option<(&'a str, &'a str)>,
    );
    let cases: [Case; 5] = [
        (
            "https://api.openai.com/v1/chat/completions",
            "/error/message",
            "/error/type",
            "invalid_request_error",
            None,
        ),
        (
            "https://api.anthropic.com/v1/messages",
            "/error/message",
            "/error/type",
            "invalid_request_error",
            None,
        ),
        (
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent",
            "/error/message",
            "/error/status",
            "INVALID_ARGUMENT",
            None,
        ),
        (
            "https://bedrock-runtime.us-east-1.amazonaws.com/model/m/converse",
            "/message",
            "/code",
            "",
            Some(("x-amzn-errortype", "ValidationException")),
        ),
        (
            "https://api.cohere.com/v2/chat",
            "/message",
            "/code",
            "invalid_header",
            None,
        ),
    ];
    let over = [
        ("--http1.1", "HTTP/1.1 400", "expect: 100-continue"),
        ("--http2", "HTTP/2 400", "expect: 100-continue"),
    ];
    for ((url, message_at, kind_at, kind, header), (http, status_line, expect)) in cases
        .into_iter()
        .flat_map(|case| over.into_iter().map(move |h| (case, h)))
    {
        let (code, out, err) = curl(&[
            "-x",
            &proxy.proxy_url(),
            "--cacert",
            ca.to_str().unwrap(),
            http,
            "-i",
            "-H",
            "content-type: application/json",
            "-H",
            "x-data-classification: top-secret",
            "-H",
            expect,
            "--data-binary",
            "{}",
            url,
        ]);
        assert_eq!(code, 0, "{url}: {err}\n{}", proxy.logs());
        let (head, body) = out.rsplit_once("\r\n\r\n").unwrap();
        // The proxy's own `200 Connection Established` comes first.
        let head = &head[head.rfind("HTTP/").unwrap_or(0)..];
        assert!(head.starts_with(status_line), "{url} {http}: {head}");
        let v: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{url}: {e}: {body}"));
        let message = v
            .pointer(message_at)
            .and_then(|m| m.as_str())
            .unwrap_or_default();
        assert!(
            message.contains("invalid x-data-classification header"),
            "{url}: {v}"
        );
        if !kind.is_empty() {
            assert_eq!(
                v.pointer(kind_at).and_then(|k| k.as_str()),
                Some(kind),
                "{url}: {v}"
            );
        } else {
            assert!(v.pointer(kind_at).is_none(), "{url}: {v}");
        }
        if let Some((name, value)) = header {
            let line = format!("{name}: {value}");
            assert!(
                head.to_ascii_lowercase()
                    .contains(&line.to_ascii_lowercase()),
                "{url}: {head}"
            );
        }
    }
    assert!(mock.recorded().is_empty());
}

/// A policy that would remove a header the app signed refuses the call, in
/// Bedrock's shape, rather than send a call whose signature fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_that_would_break_a_signature_refuses_the_call() {
    let host = "bedrock-runtime.us-east-1.amazonaws.com";
    let pki = TestPki::new();
    let mock = MockUpstream::start(
        Some(pki.server_config(&[host])),
        Arc::new(|_: &Recorded| MockResponse::json(500, serde_json::json!({"unexpected": true}))),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    copy_default_policies(&policies);
    let egress = policies.join("egress.rego");
    let rego = std::fs::read_to_string(&egress).unwrap();
    let allowed = r#""allowed": true, "rule": "egress.allowed","#;
    assert!(rego.contains(allowed));
    std::fs::write(
        &egress,
        rego.replace(
            allowed,
            &format!(r#"{allowed} "request_headers_to_remove": ["x-data-classification"],"#),
        ),
    )
    .unwrap();
    let yaml = format!(
        "policy:\n  dir: {}\n{}",
        policies.display(),
        upstream_yaml(&[(&format!("{host}:443"), mock.addr)], Some(&pki.ca_path))
    );
    let proxy = Arc::new(Proxy::start_in(dir, &yaml));
    let got = run_signed(&proxy).await;
    let denied = got["denied"].as_str().unwrap_or_default();
    assert!(
        denied.contains("x-data-classification") && denied.contains("signature"),
        "{got}"
    );
    assert!(mock.recorded().is_empty(), "the call left");
    assert!(
        proxy.logs().contains("ecluse.signed_header_changed"),
        "no record of the refusal"
    );
}
