// Preload that sends Node's global fetch through HTTPS_PROXY / HTTP_PROXY,
// honouring NO_PROXY, on every Node.js version undici 7 supports (>= 20.18.1).
//
//   NODE_OPTIONS=--import=/opt/ecluse-node/ecluse-proxy.mjs
//   HTTPS_PROXY=http://127.0.0.1:3128
//   NO_PROXY=localhost,127.0.0.1,.svc,.cluster.local
//   NODE_EXTRA_CA_CERTS=/etc/ecluse-ca/ca.pem
//
// Why: Node 20 never reads the proxy variables, and Node 22.21+/24 only
// with NODE_USE_ENV_PROXY=1. SDKs built on global fetch (the openai npm
// package since v5, @anthropic-ai/sdk, @mistralai/mistralai) then connect
// straight to the provider. Node's fetch and the npm undici share one global
// dispatcher, so installing EnvHttpProxyAgent here reroutes every fetch in
// the process without touching the app.
//
// It does not cover node:http / node:https (axios, got, node-fetch v2):
// those need NODE_USE_ENV_PROXY=1 on Node >= 22.21 / 24.5, or an agent of
// their own. The ecluse CA reaches undici's TLS through NODE_EXTRA_CA_CERTS,
// which Node reads once at start: set it in the environment, not in code.
import { EnvHttpProxyAgent, setGlobalDispatcher } from "undici";

const proxy =
  process.env.HTTPS_PROXY ?? process.env.https_proxy ?? process.env.HTTP_PROXY ?? process.env.http_proxy;
if (!proxy) {
  process.emitWarning("ecluse-proxy: no HTTPS_PROXY/HTTP_PROXY set; fetch connects directly");
}
setGlobalDispatcher(new EnvHttpProxyAgent());
