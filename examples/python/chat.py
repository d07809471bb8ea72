"""An unmodified OpenAI SDK app. Through ecluse it needs only:

    HTTPS_PROXY=http://127.0.0.1:3128
    NO_PROXY=localhost,127.0.0.1,.svc,.cluster.local
    SSL_CERT_FILE=/etc/ecluse-ca/ca-bundle.pem   # public roots + ecluse's CA
    OPENAI_API_KEY=...

and, to declare what the prompt holds, a default header (optional):
    x-data-classification: public|internal|confidential|personal|special-category
"""
import os
import sys

from openai import OpenAI

classification = os.environ.get("DATA_CLASSIFICATION", "internal")
client = OpenAI(default_headers={"x-data-classification": classification})
prompt = " ".join(sys.argv[1:]) or "Say hello in one short sentence."
answer = client.chat.completions.create(
    model="gpt-4o-mini",
    messages=[{"role": "user", "content": prompt}],
)
print(answer.choices[0].message.content)
