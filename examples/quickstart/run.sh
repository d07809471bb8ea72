#!/usr/bin/env bash
# Local quick-start: ecluse, a mock OpenAI upstream and the Python example
# on one machine. Needs: openssl, python3 with the `openai` package
# (PYTHON=...), and ecluse (ECLUSE=..., default: cargo run --release).
#
#   ./examples/quickstart/run.sh            # the example's answer comes back through ecluse
#   DATA_CLASSIFICATION=personal ./examples/quickstart/run.sh   # ... or is refused by policy
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
ECLUSE="${ECLUSE:-}"
PYTHON="${PYTHON:-python3}"
if [ -z "$ECLUSE" ]; then
  (cd "$root" && cargo build --release --quiet)
  ECLUSE="$root/target/release/ecluse"
fi
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mock_port="$(free_port)"; proxy_port="$(free_port)"; admin_port="$(free_port)"

# 1. A CA and a certificate for api.openai.com, for the mock.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj "/CN=quick-start upstream CA" -keyout "$work/up-ca.key" -out "$work/up-ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -subj "/CN=api.openai.com" -keyout "$work/mock.key" -out "$work/mock.csr" 2>/dev/null
printf 'subjectAltName=DNS:api.openai.com\nextendedKeyUsage=serverAuth\n' > "$work/ext"
openssl x509 -req -in "$work/mock.csr" -CA "$work/up-ca.pem" -CAkey "$work/up-ca.key" \
  -CAcreateserial -days 1 -extfile "$work/ext" -out "$work/mock.pem" 2>/dev/null

# 2. The mock upstream.
"$PYTHON" "$here/mock_openai.py" "$mock_port" "$work/mock.pem" "$work/mock.key" &
pids+=($!)

# 3. ecluse, with api.openai.com pointed at the mock.
cat > "$work/ecluse.yaml" <<YAML
listen: 127.0.0.1:$proxy_port
admin_listen: 127.0.0.1:$admin_port
state_dir: $work/state
ca: { bundle_out: $work/ca-bundle.pem }
upstream:
  resolve: { "api.openai.com:443": "127.0.0.1:$mock_port" }
  extra_ca_file: $work/up-ca.pem
YAML
"$ECLUSE" run --config "$work/ecluse.yaml" > "$work/audit.log" 2> "$work/ecluse.log" &
pids+=($!)
for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$admin_port/readyz" >/dev/null 2>&1; then break; fi
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$admin_port/readyz" >/dev/null

# 4. The unmodified Python example, through ecluse.
HTTPS_PROXY="http://127.0.0.1:$proxy_port" \
SSL_CERT_FILE="$work/ca-bundle.pem" \
OPENAI_API_KEY="sk-quickstart-not-a-real-key" \
NO_PROXY="" no_proxy="" \
  "$PYTHON" "$root/examples/python/chat.py" "Hello?"
