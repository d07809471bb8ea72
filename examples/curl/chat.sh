#!/usr/bin/env sh
# curl honours HTTPS_PROXY / NO_PROXY; trust the bundle with CURL_CA_BUNDLE
# (or --cacert).
#   HTTPS_PROXY=http://127.0.0.1:3128 CURL_CA_BUNDLE=ca-bundle.pem OPENAI_API_KEY=... ./chat.sh
set -eu
curl --fail-with-body -sS https://api.openai.com/v1/chat/completions \
  -H "Authorization: Bearer ${OPENAI_API_KEY}" \
  -H "Content-Type: application/json" \
  -H "x-data-classification: ${DATA_CLASSIFICATION:-internal}" \
  -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}]}'
echo
