// An unmodified OpenAI SDK app. Run it through ecluse with the preload:
//
//   NODE_OPTIONS=--import=./ecluse-proxy.mjs
//   HTTPS_PROXY=http://127.0.0.1:3128
//   NO_PROXY=localhost,127.0.0.1,.svc,.cluster.local
//   NODE_EXTRA_CA_CERTS=/etc/ecluse-ca/ca.pem   # added to Node's own roots
//   OPENAI_API_KEY=...
//
// On Node >= 22.21 or >= 24.5, NODE_USE_ENV_PROXY=1 does the same job for
// fetch and node:http without a preload; on Node 20 only the preload works.
import OpenAI from "openai";

const client = new OpenAI({
  defaultHeaders: { "x-data-classification": process.env.DATA_CLASSIFICATION ?? "internal" },
});
const answer = await client.chat.completions.create({
  model: "gpt-4o-mini",
  messages: [{ role: "user", content: process.argv.slice(2).join(" ") || "Say hello." }],
});
console.log(answer.choices[0].message.content);
