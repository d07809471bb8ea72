//! The HTTP side: every request, inside an intercepted tunnel or in plain
//! absolute form, is checked, read, decided and forwarded from
//! `request_filter`. The hook stays thin; the steps are functions.

pub mod checks;
pub mod forward;
pub mod outbound;
pub mod pool;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use log::warn;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{ProxyHttp, Session};

use crate::audit;
use crate::authority::Authority;
use crate::classify::body::{DecodeError, ReadBody};
use crate::classify::{self, DataDoc, CLASSIFICATION_HEADER, RETENTION_HEADER};
use crate::event::{self, DecisionEvent, RequestFacts, SpanTarget, Stage};
use crate::listener::head_clock::HeadClock;
use crate::llm::{self, usage::Usage, ParsedCall};
use crate::policy::input::{self, DestinationDoc, RequestInput, Scheme};
use crate::policy::verdict::{connect_verdict, request_verdict, RequestVerdict};
use crate::policy::{ConnectAction, Decision, Route, Snapshot};
use crate::redact;
use crate::reply::{self, CallerApi, ProxyError};
use crate::route::answer::AnswerTranslator;
use crate::route::{self, RouteError};
use crate::state::{Gate, Lifecycle, Recorders};
use crate::telemetry::{self, CallSpan};
use crate::tunnel::TunnelTarget;
use crate::upstream::resolve::Resolved;
use forward::{Cut, Forwarder, Outbound, OutboundBody};
use opentelemetry::trace::SpanKind;
use opentelemetry::KeyValue;
use outbound::{BodyFraming, Rewrite};

/// The error `request_filter` ends with when an answer broke off midway.
const CUT_SHORT: ErrorType = ErrorType::new("AnswerCutShort");

/// The rule of a call refused because its decision would change a header
/// that the request's signature covers.
const SIGNED_HEADER_RULE: &str = "ecluse.signed_header_changed";

/// A rerouted call's body is parsed into a document to be translated; a
/// tree of this many values is ~35 MB at worst (one-letter strings).
const MAX_TRANSLATED_JSON_VALUES: u64 = 500_000;

pub struct EgressProxy {
    gate: Arc<Gate>,
    recorders: Arc<Recorders>,
    /// For draining only: a draining proxy keeps no connection alive.
    lifecycle: Arc<Lifecycle>,
    forwarder: Forwarder,
}

/// Per request: what the access log line, the span and the metrics report.
pub struct RequestCtx {
    started: Instant,
    destination: Option<Authority>,
    action: CallAction,
    status: u16,
    outcome: String,
    usage: Usage,
    span: CallSpan,
    /// Set for inspected LLM calls: the GenAI facts of the span and metrics.
    genai: Option<GenAiFacts>,
    error_type: Option<&'static str>,
    time_to_first_chunk: Option<std::time::Duration>,
    /// The call's trace id: the span's, the app's `traceparent`, or one
    /// ecluse made, so that every record joins the app's and the
    /// provider's logs even with tracing off.
    trace_id: Option<String>,
    /// Sent upstream when ecluse made the trace id and tracing is off.
    traceparent: Option<String>,
    /// The answer broke off after its head was sent.
    cut_short: bool,
    /// The id of the call's decision, once made: later records of the same
    /// call (a truncated answer) carry it too.
    decision_id: Option<String>,
    /// The API the app called, once its call was read: errors are answered
    /// in its shape.
    caller: Option<CallerApi>,
}

/// What the GenAI span and metrics say about a call.
struct GenAiFacts {
    operation: &'static str,
    /// The provider actually called (the target's when rerouted).
    provider: &'static str,
    request_model: Option<String>,
    server_address: String,
    server_port: u16,
}

/// What the request path did with a call: the access line's and the
/// request metric's `action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallAction {
    /// Refused before a decision (malformed, misdirected, over a limit).
    Refuse,
    /// Relayed uninspected (plain http to a tunnelled host).
    Pass,
    /// Being read and decided.
    Intercept,
    /// Decided in report mode and forwarded as sent.
    Report,
    Deny,
    Allow,
    Reroute,
}

impl CallAction {
    pub fn as_str(self) -> &'static str {
        match self {
            CallAction::Refuse => "refuse",
            CallAction::Pass => "pass",
            CallAction::Intercept => "intercept",
            CallAction::Report => "report",
            CallAction::Deny => "deny",
            CallAction::Allow => "allow",
            CallAction::Reroute => "reroute",
        }
    }
}

/// The decided action of an egress decision, as records name it.
fn decided_action(decision: &Decision) -> &'static str {
    match (decision.allowed, &decision.route) {
        (false, _) => "deny",
        (true, Some(_)) => "reroute",
        (true, None) => "allow",
    }
}

/// A request admitted for forwarding: where it goes and whether it is read.
struct Admitted {
    authority: Authority,
    scheme: Scheme,
    resolved: Resolved,
    inspect: bool,
}

/// A read call: what it asks for, what it carries, the decision's input.
struct Described {
    parsed: ParsedCall,
    input: RequestInput,
    read: ReadBody,
    destination: Arc<crate::policy::Destination>,
}

/// Where an allowed call goes.
struct Delivery {
    authority: Authority,
    resolved: Resolved,
    tls: bool,
    header: RequestHeader,
    body: Bytes,
    response_headers: Vec<(&'static str, String)>,
    rerouted: bool,
    /// Rewrites a rerouted call's answer into the API the app called.
    answer: Option<Box<dyn AnswerTranslator>>,
}

impl EgressProxy {
    pub fn new(
        gate: Arc<Gate>,
        recorders: Arc<Recorders>,
        lifecycle: Arc<Lifecycle>,
        forwarder: Forwarder,
    ) -> EgressProxy {
        EgressProxy {
            gate,
            recorders,
            lifecycle,
            forwarder,
        }
    }

    /// The request path: admit -> (pass | read -> describe -> decide ->
    /// record -> act) -> deliver. Each stage is one function below.
    async fn handle(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<(), ProxyError> {
        // No decision without its record: wait for room in the audit queue.
        self.recorders
            .audit
            .room()
            .await
            .map_err(ProxyError::Unavailable)?;
        // One snapshot for the whole request: one revision decides it.
        let snapshot = self.gate.snapshot.load_full();
        let admitted = self.admit(session, &snapshot).await?;
        ctx.destination = Some(admitted.authority.clone());
        if !admitted.inspect {
            ctx.action = CallAction::Pass;
            return self.pass(session, ctx, &admitted).await;
        }
        ctx.action = CallAction::Intercept;
        // A client waiting for `100 Continue` hears of bad headers before it
        // sends its body; any other is refused after it, as it sent it.
        let declared = declared_data(session.req_header());
        if let (Err(e), true) = (&declared, expects_continue(session.req_header())) {
            return Err(e.clone());
        }
        let config = &self.gate.config;
        let body = read_body(
            session,
            config.limits.max_request_body,
            config.timeouts.header_read,
        )
        .await?;
        let call = self.describe(session.req_header(), &snapshot, &admitted, declared?, &body)?;
        ctx.caller = Some(CallerApi::from_api(call.parsed.api.as_deref()));
        let decision = self.decide(ctx, &snapshot, &call);
        let decision_id = audit::new_decision_id();
        self.record(ctx, &snapshot, &call, &body, &decision, &decision_id);
        let delivery = self
            .act(
                session,
                ctx,
                &snapshot,
                &admitted,
                &call,
                body,
                &decision,
                decision_id,
            )
            .await?;
        self.deliver(session, ctx, delivery).await
    }

    /// Head checks, the destination (the tunnel's, or the absolute-form
    /// URL's after its connect decision), upgrades refused, the address.
    async fn admit(&self, session: &Session, snapshot: &Snapshot) -> Result<Admitted, ProxyError> {
        let limits = &self.gate.config.limits;
        let req = session.req_header();
        let raw_head = session
            .downstream_session
            .as_http1()
            .map(|h1| h1.get_headers_raw_bytes());
        checks::check_head_size(
            req,
            raw_head.as_ref().map(|r| r.len()),
            limits.max_header_bytes,
            limits.max_header_count,
        )?;
        if let Some(raw) = &raw_head {
            checks::check_framing(raw)?;
        }
        let (authority, scheme, pinned, inspect) = match tunnel_target(session) {
            Some(t) => {
                checks::check_tunnel_authority(req, &t.authority)?;
                (t.authority.clone(), Scheme::Https, Some(t.resolved), true)
            }
            None => {
                let authority = checks::plain_destination(req)?;
                let inspect = self.decide_plain(snapshot, &authority)?;
                (authority, Scheme::Http, None, inspect)
            }
        };
        checks::check_no_upgrade(req)?;
        let resolved = match pinned {
            Some(r) => r,
            None => self.gate.resolver.resolve(&authority).await?,
        };
        Ok(Admitted {
            authority,
            scheme,
            resolved,
            inspect,
        })
    }

    /// Relays an uninspected call as the client sent it.
    async fn pass(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        admitted: &Admitted,
    ) -> Result<(), ProxyError> {
        let none = std::collections::BTreeMap::new();
        let header = outbound::build(
            session.req_header(),
            &outbound::Spec {
                path: request_path(session.req_header()),
                authority: &admitted.authority,
                default_port: default_port(admitted.scheme),
                body: BodyFraming::Streamed,
                rewrite: Rewrite::Passthrough,
                add: &none,
                remove: &[],
            },
        )?;
        let outbound = Outbound {
            authority: &admitted.authority,
            addr: admitted.resolved.addr,
            tls: false,
            header,
            body: OutboundBody::Streamed,
            response_headers: Vec::new(),
            translate_errors: None,
            answer: None,
        };
        self.send(session, ctx, outbound).await
    }

    /// Reads the call (decoded, parsed, scanned) and builds the policy
    /// input (version 1).
    fn describe(
        &self,
        req: &RequestHeader,
        snapshot: &Snapshot,
        admitted: &Admitted,
        declared: DataDoc,
        body: &Bytes,
    ) -> Result<Described, ProxyError> {
        let destination = self
            .gate
            .destination(snapshot, &admitted.authority, admitted.scheme);
        let headers = &req.headers;
        let limits = &self.gate.config.limits;
        let read = classify::body::read_request(
            headers
                .get_all(http::header::CONTENT_ENCODING)
                .iter()
                .map(|v| v.as_bytes()),
            headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            body,
            limits.max_request_body,
            limits.max_decoded_ratio,
        )
        .map_err(|e| match e {
            DecodeError::Corrupt { .. } => ProxyError::BadRequest(e.to_string()),
            DecodeError::TooLarge { .. } | DecodeError::Ratio { .. } => {
                ProxyError::DecodedTooLarge(e.to_string())
            }
        })?;
        let method = req.method.as_str();
        let path = request_path(req);
        let parsed = llm::parse_request(
            destination.doc.api.as_deref(),
            method,
            path,
            read.plain(body),
        );
        let mut pii = read.scan.pii.clone();
        pii.add(&classify::scan_call_metadata(
            path,
            headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes())),
        ));
        let data = declared.with_scan(
            pii,
            read.scan.unread.clone(),
            snapshot.trust_declared_classification,
        );
        let request = input::request_doc(
            method,
            &redact::mask_query(path),
            headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes())),
            body.len(),
            &parsed,
        );
        let input = input::request_input(
            destination.doc.clone(),
            request,
            data,
            self.gate.source.clone(),
        );
        Ok(Described {
            parsed,
            input,
            read,
            destination,
        })
    }

    /// Evaluates the egress policy under its own span.
    fn decide(&self, ctx: &RequestCtx, snapshot: &Snapshot, call: &Described) -> Decision {
        let policy_span =
            self.recorders
                .telemetry
                .child(&ctx.span, "ecluse.policy", SpanKind::Internal);
        let decision = snapshot.decide_request_at(
            &call.destination,
            &call.input.request,
            &call.input.data,
            &self.gate.source_value,
        );
        policy_span.set(vec![
            KeyValue::new("ecluse.rule", decision.rule.clone()),
            KeyValue::new("ecluse.policy.revision", snapshot.revision.clone()),
        ]);
        if decision.rule == crate::policy::POLICY_ERROR_RULE {
            policy_span.fail(&decision.reason);
        }
        decision
    }

    /// Puts the decision on record (log, metric, audit, span) and names the
    /// call's span after what it asks for.
    fn record(
        &self,
        ctx: &mut RequestCtx,
        snapshot: &Snapshot,
        call: &Described,
        body: &Bytes,
        decision: &Decision,
        decision_id: &str,
    ) {
        self.describe_call(
            ctx,
            &call.parsed,
            (call.read.plain(body), call.read.scan.json_values),
            &call.input,
            &call.input.destination,
        );
        let request = &call.input.request;
        let event = DecisionEvent {
            stage: Stage::Request,
            decision_id,
            revision: &snapshot.revision,
            action: decided_action(decision),
            rule: &decision.rule,
            reason: &decision.reason,
            enforced: self.gate.enforcing(),
            destination: &call.input.destination,
            request: Some(RequestFacts {
                method: &request.method,
                path: &request.path,
                operation: request.operation.as_deref(),
                model: request.model.as_deref(),
                data: &call.input.data,
                route: decision.route.as_ref().map(|r| r.target.as_str()),
            }),
            workload: self.gate.source.workload.as_deref(),
            namespace: self.gate.source.namespace.as_deref(),
            trace_id: ctx.trace_id.clone(),
            error: None,
            error_code: None,
            input: event::raw_json(&call.input),
            result: event::raw_json(decision),
        };
        event::emit(&self.recorders, &event, SpanTarget::Call(&ctx.span));
        ctx.decision_id = Some(decision_id.to_string());
    }

    /// A record for what ended a call without (or after) its decision: a
    /// refusal before the policy was asked (framing, limits, upgrades, a
    /// misdirected request) or an answer the upstream cut short. Without a
    /// destination there is nothing to name, and the log line says it.
    fn record_outcome(
        &self,
        session: &Session,
        ctx: &RequestCtx,
        action: &'static str,
        rule: &str,
        reason: &str,
    ) {
        let (authority, scheme) = match (&ctx.destination, tunnel_target(session)) {
            (Some(a), Some(_)) => (a.clone(), Scheme::Https),
            (Some(a), None) => (a.clone(), Scheme::Http),
            (None, Some(t)) => (t.authority.clone(), Scheme::Https),
            (None, None) => return,
        };
        let snapshot = self.gate.snapshot.load();
        let destination = self.gate.destination(&snapshot, &authority, scheme);
        let req = session.req_header();
        let path = redact::mask_query(request_path(req));
        let data = DataDoc::default();
        let decision_id = ctx
            .decision_id
            .clone()
            .unwrap_or_else(audit::new_decision_id);
        let span = if ctx.decision_id.is_some() {
            // The call's span already says its decision.
            SpanTarget::None
        } else {
            SpanTarget::Call(&ctx.span)
        };
        event::emit(
            &self.recorders,
            &DecisionEvent {
                stage: Stage::Request,
                decision_id: &decision_id,
                revision: &snapshot.revision,
                action,
                rule,
                reason,
                enforced: true,
                destination: &destination.doc,
                request: Some(RequestFacts {
                    method: req.method.as_str(),
                    path: &path,
                    operation: None,
                    model: None,
                    data: &data,
                    route: None,
                }),
                workload: self.gate.source.workload.as_deref(),
                namespace: self.gate.source.namespace.as_deref(),
                trace_id: ctx.trace_id.clone(),
                error: None,
                error_code: None,
                input: None,
                result: None,
            },
            span,
        );
    }

    /// Turns the decision into what is sent: refused, as sent (report),
    /// allowed with the decision's header changes, or rerouted.
    #[allow(clippy::too_many_arguments)]
    async fn act(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        snapshot: &Snapshot,
        admitted: &Admitted,
        call: &Described,
        body: Bytes,
        decision: &Decision,
        decision_id: String,
    ) -> Result<Delivery, ProxyError> {
        let id_header = ("x-ecluse-decision-id", decision_id.clone());
        let (add, remove, action) = match request_verdict(decision, self.gate.config.mode) {
            RequestVerdict::Refuse => {
                ctx.action = CallAction::Deny;
                ctx.error_type = Some("policy_denied");
                return Err(ProxyError::Denied {
                    reason: decision.reason.clone(),
                    rule: decision.rule.clone(),
                    status: decision.http_status,
                    decision_id: Some(decision_id),
                });
            }
            RequestVerdict::Reroute(route) => {
                ctx.action = CallAction::Reroute;
                let mut delivery = self
                    .reroute(
                        session,
                        call,
                        call.read.plain(&body),
                        decision,
                        route,
                        &decision_id,
                    )
                    .await?;
                self.describe_reroute(ctx, snapshot, call, route, &delivery);
                delivery.response_headers.insert(0, id_header);
                return Ok(delivery);
            }
            RequestVerdict::Report => (None, &[][..], CallAction::Report),
            RequestVerdict::Allow => (
                Some(&decision.headers),
                &decision.remove_headers[..],
                CallAction::Allow,
            ),
        };
        ctx.action = action;
        let none = std::collections::BTreeMap::new();
        let conflicts =
            outbound::signed_conflicts(session.req_header(), add.unwrap_or(&none), remove);
        if !conflicts.is_empty() {
            ctx.action = CallAction::Deny;
            let reason = format!(
                "{}; but the decision changes {}, which the request's signature covers",
                decision.reason,
                conflicts.join(", ")
            );
            // The decision on record allowed the call: this says why it
            // did not leave, under the same decision id.
            self.record_outcome(session, ctx, "deny", SIGNED_HEADER_RULE, &reason);
            return Err(ProxyError::Denied {
                reason,
                rule: SIGNED_HEADER_RULE.into(),
                status: 403,
                decision_id: Some(decision_id),
            });
        }
        let header = outbound::build(
            session.req_header(),
            &outbound::Spec {
                path: request_path(session.req_header()),
                authority: &admitted.authority,
                default_port: default_port(admitted.scheme),
                body: BodyFraming::Buffered(body.len()),
                rewrite: Rewrite::Inspected,
                add: add.unwrap_or(&none),
                remove,
            },
        )?;
        Ok(Delivery {
            authority: admitted.authority.clone(),
            resolved: admitted.resolved,
            tls: admitted.scheme == Scheme::Https,
            header,
            body,
            response_headers: vec![id_header],
            rerouted: false,
            answer: None,
        })
    }

    /// The connect-stage decision for an absolute-form plain-HTTP request;
    /// true when the request is to be inspected.
    fn decide_plain(&self, snapshot: &Snapshot, authority: &Authority) -> Result<bool, ProxyError> {
        let cached = self.gate.destination(snapshot, authority, Scheme::Http);
        let decision = snapshot.decide_connect_at(&cached, &self.gate.source_value);
        let destination = &cached.doc;
        let decision_id = audit::new_decision_id();
        event::emit(
            &self.recorders,
            &DecisionEvent::connect(
                &self.gate,
                Stage::Plain,
                &decision_id,
                &snapshot.revision,
                &decision,
                destination,
            ),
            SpanTarget::Connect,
        );
        let registered = destination.provider.is_some();
        match connect_verdict(decision.action, self.gate.config.mode, registered) {
            ConnectAction::Deny => Err(ProxyError::Denied {
                reason: decision.reason,
                rule: decision.rule,
                status: 403,
                decision_id: Some(decision_id),
            }),
            ConnectAction::Tunnel => Ok(false),
            ConnectAction::Intercept => Ok(true),
        }
    }

    /// Names the call's span and gives it the call's GenAI facts.
    fn describe_call(
        &self,
        ctx: &mut RequestCtx,
        call: &ParsedCall,
        (body, json_values): (&[u8], u64),
        input: &RequestInput,
        destination: &DestinationDoc,
    ) {
        let operation = telemetry::operation_name(call.operation);
        ctx.genai = Some(GenAiFacts {
            operation,
            provider: telemetry::provider_name(input.destination.provider.as_deref()),
            request_model: call.model.clone(),
            server_address: destination.host.clone(),
            server_port: destination.port,
        });
        if !self.recorders.telemetry.enabled() {
            return;
        }
        let name = match &call.model {
            Some(model) => format!("{operation} {model}"),
            None => operation.to_string(),
        };
        ctx.span.rename(name);
        let mut attributes = vec![KeyValue::new("gen_ai.operation.name", operation)];
        if let Some(model) = &call.model {
            attributes.push(KeyValue::new("gen_ai.request.model", model.clone()));
        }
        if let Some(top) = &call.top {
            attributes.extend(telemetry::request_parameters(top));
        }
        if self.recorders.telemetry.capture_content && json_values <= MAX_TRANSLATED_JSON_VALUES {
            // Opt-in: only here is the whole body parsed into a document.
            if let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) {
                if let Some(messages) = json
                    .get("messages")
                    .or_else(|| json.get("input"))
                    .or_else(|| json.get("prompt"))
                {
                    let mut text = messages.to_string();
                    let mut cut = text.len().min(64 << 10);
                    while !text.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    text.truncate(cut);
                    attributes.push(KeyValue::new("gen_ai.input.messages", text));
                }
            }
        }
        ctx.span.set(attributes);
    }

    /// The span and GenAI facts of a rerouted call name the target.
    fn describe_reroute(
        &self,
        ctx: &mut RequestCtx,
        snapshot: &Snapshot,
        call: &Described,
        route: &Route,
        delivery: &Delivery,
    ) {
        if let Some(facts) = ctx.genai.as_mut() {
            let provider = snapshot.registry.lookup(&delivery.authority.host);
            facts.provider = telemetry::provider_name(provider.map(|p| p.id.as_str()));
            facts.server_address = delivery.authority.host.clone();
            facts.server_port = delivery.authority.port;
        }
        ctx.span.set(vec![
            KeyValue::new("ecluse.route.target", route.target.clone()),
            KeyValue::new(
                "ecluse.original.provider",
                telemetry::provider_name(call.input.destination.provider.as_deref()),
            ),
            KeyValue::new(
                "ecluse.original.model",
                call.input.request.model.clone().unwrap_or_default(),
            ),
        ]);
    }

    /// Plans the call to the decision's target: translated body, the
    /// target's key instead of every client credential.
    async fn reroute(
        &self,
        session: &Session,
        call: &Described,
        body: &[u8],
        decision: &Decision,
        route: &Route,
        decision_id: &str,
    ) -> Result<Delivery, ProxyError> {
        let route_refused = |e: RouteError| match e {
            RouteError::Key { .. } => ProxyError::Unavailable(e.to_string()),
            other => ProxyError::Denied {
                reason: format!("{}; but {other}", decision.reason),
                rule: decision.rule.clone(),
                status: 403,
                decision_id: Some(decision_id.to_string()),
            },
        };
        let target = self
            .gate
            .targets
            .get(&route.target)
            .ok_or_else(|| route_refused(RouteError::UnknownTarget(route.target.clone())))?;
        // Only a call that is translated is parsed whole, and only when its
        // tree stays within bounds: tiny values cost ~70 bytes each as a tree.
        let json_values = call.read.scan.json_values;
        if json_values > MAX_TRANSLATED_JSON_VALUES {
            return Err(ProxyError::DecodedTooLarge(format!(
                "{}; but the call holds {json_values} JSON values and a rerouted call is translated in memory, at most {MAX_TRANSLATED_JSON_VALUES}",
                decision.reason
            )));
        }
        let json = serde_json::from_slice::<serde_json::Value>(body).ok();
        let req = session.req_header();
        let routed = route::Call {
            api: call.input.destination.api.as_deref(),
            operation: call.parsed.operation,
            method: req.method.as_str(),
            path: request_path(req),
            body: json.as_ref(),
        };
        let plan = route::plan(target, &routed, route.model.as_deref()).map_err(route_refused)?;
        let key = match &target.key {
            Some(key) => Some(key.read().map_err(|why| {
                route_refused(RouteError::Key {
                    target: target.name.clone(),
                    why,
                })
            })?),
            None => None,
        };
        let resolved = self
            .gate
            .resolver
            .resolve_target(&target.url.authority)
            .await?;
        let body = Bytes::from(plan.body.unwrap_or_default());
        let header = outbound::build(
            session.req_header(),
            &outbound::Spec {
                path: &plan.path,
                authority: &target.url.authority,
                default_port: target.url.default_port(),
                body: BodyFraming::Buffered(body.len()),
                rewrite: Rewrite::Reroute {
                    key: key.as_ref().map(|k| k.expose()),
                    target_headers: &target.headers,
                },
                add: &decision.headers,
                remove: &decision.remove_headers,
            },
        )?;
        let answer = plan
            .answer
            .translator(plan.target_model.as_deref().unwrap_or_default());
        let mut response_headers = vec![("x-ecluse-route", target.name.clone())];
        if let Some(original) = plan.original_model {
            response_headers.push(("x-ecluse-original-model", original));
        }
        Ok(Delivery {
            authority: target.url.authority.clone(),
            resolved,
            tls: target.url.tls,
            header,
            body,
            response_headers,
            rerouted: true,
            answer,
        })
    }

    async fn deliver(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        delivery: Delivery,
    ) -> Result<(), ProxyError> {
        let tel = &self.recorders.telemetry;
        let upstream_span = tel.child(&ctx.span, "ecluse.upstream", SpanKind::Client);
        let mut header = delivery.header;
        // A trace header the app signed goes as it is (see outbound).
        let signed = outbound::signed_headers(&header);
        let traced = !signed.contains("traceparent") && !signed.contains("tracestate");
        if let (Some(traceparent), true) = (&ctx.traceparent, traced) {
            let _ = header.insert_header("traceparent", traceparent.as_str());
        }
        if tel.enabled() {
            if traced {
                // The upstream continues ecluse's trace, not the app's directly.
                header.remove_header("traceparent");
                header.remove_header("tracestate");
                tel.inject(&upstream_span, |k, v| {
                    let _ = header.insert_header(k.to_string(), v);
                });
            }
            upstream_span.set(vec![
                KeyValue::new("server.address", delivery.authority.host.clone()),
                KeyValue::new("server.port", i64::from(delivery.authority.port)),
                KeyValue::new("http.request.method", header.method.to_string()),
                KeyValue::new("url.path", header.uri.path().to_string()),
            ]);
        }
        let outbound = Outbound {
            authority: &delivery.authority,
            addr: delivery.resolved.addr,
            tls: delivery.tls,
            header,
            body: OutboundBody::Buffered(delivery.body),
            response_headers: delivery.response_headers,
            translate_errors: delivery.rerouted.then(|| ctx.caller.unwrap_or_default()),
            answer: delivery.answer,
        };
        let result = self.send(session, ctx, outbound).await;
        match &result {
            Ok(()) => {
                upstream_span.set(vec![KeyValue::new(
                    "http.response.status_code",
                    i64::from(ctx.status),
                )]);
                if ctx.status >= 500 {
                    upstream_span.fail(&format!("status {}", ctx.status));
                }
            }
            Err(e) => upstream_span.fail(e.code()),
        }
        result
    }

    async fn send(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        outbound: Outbound<'_>,
    ) -> Result<(), ProxyError> {
        if self.lifecycle.is_draining() {
            session.set_keepalive(None);
        }
        let capture = self.recorders.telemetry.capture_content;
        let authority = outbound.authority;
        let forwarded = self.forwarder.forward(session, outbound, capture).await?;
        ctx.status = forwarded.status;
        ctx.usage = forwarded.usage;
        if forwarded.streamed {
            ctx.time_to_first_chunk = forwarded
                .first_chunk_at
                .map(|t| t.saturating_duration_since(ctx.started));
        }
        if let Some(cut) = &forwarded.aborted {
            ctx.error_type = Some("aborted");
            ctx.cut_short = true;
            if let Cut::Upstream(why) = cut {
                let reason = format!(
                    "upstream {authority} cut its answer short after {} body bytes were relayed: {why}",
                    forwarded.body_bytes
                );
                warn!("{reason}");
                self.record_outcome(
                    session,
                    ctx,
                    "truncated",
                    "ecluse.upstream_truncated",
                    &reason,
                );
                self.recorders
                    .metrics
                    .upstream_truncated
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        } else if forwarded.status >= 400 {
            ctx.error_type = Some(status_error_type(forwarded.status));
        }
        ctx.outcome = match forwarded.aborted {
            Some(why) => format!("aborted after {} bytes: {why}", forwarded.body_bytes),
            None => format!("{} bytes", forwarded.body_bytes),
        };
        Ok(())
    }

    async fn send_error(&self, session: &mut Session, ctx: &mut RequestCtx, error: &ProxyError) {
        ctx.status = error.status();
        ctx.outcome = error.to_string();
        ctx.error_type = Some(error.code());
        match error {
            // A policy refusal is on record already, with its decision.
            ProxyError::Denied {
                decision_id: Some(_),
                ..
            } => {}
            // A built-in refusal (an upgrade) has no decision of its own.
            ProxyError::Denied { rule, reason, .. } => {
                self.record_outcome(session, ctx, "deny", rule, reason)
            }
            other => {
                let rule = format!("ecluse.refused.{}", other.code());
                self.record_outcome(session, ctx, "refuse", &rule, &other.to_string());
            }
        }
        self.recorders
            .metrics
            .count("ecluse_errors_total", &[("code", error.code())]);
        if matches!(
            error,
            ProxyError::Upstream { .. }
                | ProxyError::UpstreamCertificate { .. }
                | ProxyError::UpstreamTimeout { .. }
                | ProxyError::Unresolvable(_)
        ) {
            self.recorders
                .metrics
                .count("ecluse_upstream_errors_total", &[("kind", error.code())]);
        }
        // A 100 Continue is no answer: the final one is still owed.
        let answered = session
            .response_written()
            .is_some_and(|r| !r.status.is_informational());
        if answered {
            session.set_keepalive(None);
            return;
        }
        if !error.keeps_connection() {
            // Unread request bytes must never be parsed as the next request.
            session.set_keepalive(None);
        }
        let caller = ctx.caller.unwrap_or_else(|| self.caller_api(session, ctx));
        let rendered = error.render(caller);
        let body = rendered.body;
        let Ok(mut header) = ResponseHeader::build(rendered.status, Some(4)) else {
            return;
        };
        let _ = header.insert_header(http::header::CONTENT_TYPE, rendered.content_type);
        let _ = header.insert_header(http::header::CONTENT_LENGTH, body.len().to_string());
        for (name, value) in rendered.headers {
            let _ = header.insert_header(name, value);
        }
        if let ProxyError::Denied {
            decision_id: Some(id),
            ..
        } = error
        {
            let _ = header.insert_header("x-ecluse-decision-id", id.as_str());
        }
        // An HTTP/2 stream dropped while its request body is still open is
        // reset (RST_STREAM NO_ERROR) right behind the answer, and curl then
        // reports an empty reply: a client told to wait for a `100 Continue`
        // (which pingora never sends on HTTP/2) sees no refusal. Draining
        // lets the client end the stream itself.
        if session
            .write_response_header(Box::new(header), false)
            .await
            .is_ok()
            && session.write_response_body(Some(body), true).await.is_ok()
            && (matches!(error, ProxyError::BodyTooLarge { .. })
                || (session.is_http2() && !session.is_body_done()))
        {
            discard_unread_body(session).await;
        }
    }
}

impl EgressProxy {
    /// The API of a call refused before its body was read: the registry's
    /// for the destination host, else the one its path looks like.
    fn caller_api(&self, session: &Session, ctx: &RequestCtx) -> CallerApi {
        let host = ctx
            .destination
            .as_ref()
            .map(|a| a.host.clone())
            .or_else(|| tunnel_target(session).map(|t| t.authority.host));
        let snapshot = self.gate.snapshot.load();
        let registry_api = host
            .and_then(|h| snapshot.registry.lookup(&h))
            .map(|p| p.api.as_str());
        let req = session.req_header();
        reply::caller_before_read(registry_api, req.method.as_str(), request_path(req))
    }
}

/// `error.type` for an HTTP error status from the upstream.
fn status_error_type(status: u16) -> &'static str {
    match status {
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        408 => "408",
        413 => "413",
        422 => "422",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        s if s >= 500 => "5xx",
        _ => "4xx",
    }
}

fn default_port(scheme: Scheme) -> u16 {
    match scheme {
        Scheme::Https => 443,
        Scheme::Http => 80,
    }
}

/// The request's origin-form path and query.
fn request_path(req: &RequestHeader) -> &str {
    req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
}

/// The tunnel an intercepted request arrived through, if any.
fn tunnel_target(session: &Session) -> Option<TunnelTarget> {
    let digest = session.digest()?.proxy_digest.as_ref()?;
    digest
        .user_data
        .as_ref()?
        .downcast_ref::<Arc<TunnelTarget>>()
        .map(|t| (**t).clone())
}

/// The `x-data-classification` and `x-data-retention` values of a request.
fn declared_data(req: &RequestHeader) -> Result<DataDoc, ProxyError> {
    let headers = &req.headers;
    classify::declared_values(
        headers
            .get_all(CLASSIFICATION_HEADER)
            .iter()
            .map(|v| v.as_bytes()),
        headers
            .get_all(RETENTION_HEADER)
            .iter()
            .map(|v| v.as_bytes()),
    )
}

fn expects_continue(req: &RequestHeader) -> bool {
    req.headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// The clock of the tunnel's request heads (see `listener::head_clock`).
fn head_clock(session: &Session) -> Option<&HeadClock> {
    let digest = session.digest()?.proxy_digest.as_ref()?;
    digest
        .user_data
        .as_ref()?
        .downcast_ref::<Arc<TunnelTarget>>()
        .map(|t| &*t.head_clock)
}

/// After an early 413 the client is usually still sending its body.
/// Closing with unread bytes makes the kernel reset the connection, and the
/// client then sees a broken pipe instead of the 413. So read and drop what
/// follows, bounded in bytes and time (nginx's lingering close).
async fn discard_unread_body(session: &mut Session) {
    const MAX_BYTES: usize = 4 << 20;
    const MAX_TIME: std::time::Duration = std::time::Duration::from_secs(2);
    let deadline = tokio::time::Instant::now() + MAX_TIME;
    let mut discarded = 0;
    while discarded < MAX_BYTES {
        match tokio::time::timeout_at(deadline, session.downstream_session.read_request_body())
            .await
        {
            Ok(Ok(Some(chunk))) => discarded += chunk.len(),
            _ => break,
        }
    }
}

/// Reads the whole body, refusing it as soon as it exceeds `limit`.
async fn read_body(
    session: &mut Session,
    limit: usize,
    read_timeout: std::time::Duration,
) -> Result<Bytes, ProxyError> {
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    if expects_continue(session.req_header()) {
        session
            .write_continue_response()
            .await
            .map_err(|e| ProxyError::BadRequest(format!("client went away: {e}")))?;
    }
    let mut body = BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
    while let Some(chunk) = session
        .downstream_session
        .read_request_body()
        .await
        .map_err(|e| match e.etype() {
            ErrorType::ReadTimedout => ProxyError::ClientTimeout(read_timeout),
            _ => ProxyError::BadRequest(format!("reading request body: {e}")),
        })?
    {
        if body.len() + chunk.len() > limit {
            return Err(ProxyError::BodyTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

impl EgressProxy {
    /// Ends the call's span and records the GenAI metrics.
    fn finish_call(&self, ctx: &mut RequestCtx) {
        let usage = &ctx.usage;
        if let Some(facts) = &ctx.genai {
            let metrics = &self.recorders.metrics;
            let request_model = facts.request_model.as_deref().unwrap_or("");
            let response_model = usage.response_model.as_deref().unwrap_or("");
            let error_type = ctx.error_type.unwrap_or("");
            let base = [
                ("gen_ai_operation_name", facts.operation),
                ("gen_ai_provider_name", facts.provider),
                ("gen_ai_request_model", request_model),
                ("gen_ai_response_model", response_model),
            ];
            let mut with_error = base.to_vec();
            with_error.push(("error_type", error_type));
            metrics
                .operation_duration
                .observe(&with_error, ctx.started.elapsed().as_secs_f64());
            for (kind, tokens) in [
                ("input", usage.input_tokens),
                ("output", usage.output_tokens),
            ] {
                if let Some(n) = tokens {
                    let mut labels = base.to_vec();
                    labels.push(("gen_ai_token_type", kind));
                    metrics.token_usage.observe(&labels, n as f64);
                }
            }
            if let Some(ttft) = ctx.time_to_first_chunk {
                metrics
                    .time_to_first_chunk
                    .observe(&base, ttft.as_secs_f64());
            }
            if self.recorders.telemetry.enabled() {
                let mut attributes = vec![
                    KeyValue::new("gen_ai.provider.name", facts.provider),
                    KeyValue::new("server.address", facts.server_address.clone()),
                    KeyValue::new("server.port", i64::from(facts.server_port)),
                ];
                if let Some(m) = &usage.response_model {
                    attributes.push(KeyValue::new("gen_ai.response.model", m.clone()));
                }
                if let Some(id) = &usage.response_id {
                    attributes.push(KeyValue::new("gen_ai.response.id", id.clone()));
                }
                if !usage.finish_reasons.is_empty() {
                    attributes.push(KeyValue::new(
                        "gen_ai.response.finish_reasons",
                        telemetry::strings(&usage.finish_reasons),
                    ));
                }
                if let Some(n) = usage.input_tokens {
                    attributes.push(KeyValue::new("gen_ai.usage.input_tokens", n as i64));
                }
                if let Some(n) = usage.output_tokens {
                    attributes.push(KeyValue::new("gen_ai.usage.output_tokens", n as i64));
                }
                if let Some(ttft) = ctx.time_to_first_chunk {
                    attributes.push(KeyValue::new(
                        "gen_ai.response.time_to_first_chunk",
                        ttft.as_secs_f64(),
                    ));
                }
                if let Some(content) = &usage.content {
                    attributes.push(KeyValue::new("gen_ai.output.messages", content.clone()));
                }
                if let Some(e) = ctx.error_type {
                    attributes.push(KeyValue::new("error.type", e));
                }
                if ctx.status > 0 {
                    attributes.push(KeyValue::new(
                        "http.response.status_code",
                        i64::from(ctx.status),
                    ));
                }
                ctx.span.set(attributes);
            }
        } else if let Some(destination) = &ctx.destination {
            ctx.span.rename(format!(
                "ecluse.{} {}",
                ctx.action.as_str(),
                destination.host
            ));
            if let Some(e) = ctx.error_type {
                ctx.span.set(vec![KeyValue::new("error.type", e)]);
            }
        }
        let error = ctx.error_type.map(|e| e.to_string());
        ctx.span.end(error.as_deref());
    }
}

#[async_trait]
impl ProxyHttp for EgressProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            destination: None,
            action: CallAction::Refuse,
            status: 0,
            outcome: String::new(),
            usage: Usage::default(),
            span: CallSpan::none(),
            genai: None,
            error_type: None,
            time_to_first_chunk: None,
            trace_id: None,
            traceparent: None,
            cut_short: false,
            decision_id: None,
            caller: None,
        }
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> pingora_error::Result<()> {
        if let Some(clock) = head_clock(session) {
            clock.head_complete();
        }
        let timeouts = &self.gate.config.timeouts;
        session.set_read_timeout(Some(timeouts.header_read));
        let idle = timeouts.keepalive_idle.as_secs();
        if idle > 0 && !self.lifecycle.is_draining() {
            session.set_keepalive(Some(idle));
        }
        Ok(())
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<bool> {
        let _in_flight = crate::metrics::track(&self.recorders.metrics.requests_active);
        let telemetry = &self.recorders.telemetry;
        let parent = telemetry.extract(&session.req_header().headers);
        ctx.span = telemetry.start_call(&parent);
        ctx.trace_id = ctx.span.trace_id();
        if ctx.trace_id.is_none() {
            let (trace_id, traceparent) = telemetry::new_trace_context();
            ctx.trace_id = Some(trace_id);
            ctx.traceparent = Some(traceparent);
        }
        session.downstream_session.set_abort_on_close(true);
        if let Err(e) = self.handle(session, ctx).await {
            self.send_error(session, ctx, &e).await;
        }
        if ctx.cut_short {
            // `Ok(true)` has pingora finish the response (the last chunk,
            // END_STREAM): the client would take a broken answer for a whole
            // one. So the stream is reset here (HTTP/2) or the connection
            // closed (HTTP/1), and the error keeps pingora from finishing it.
            session.downstream_session.shutdown().await;
            return Error::e_explain(CUT_SHORT, "the answer was cut short");
        }
        Ok(true)
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, _error: &Error) -> bool {
        // Logged where it happened, with its cause.
        ctx.cut_short
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> pingora_error::Result<Box<HttpPeer>> {
        // request_filter answers every request, so pingora never asks for a
        // peer; refusing here keeps an unforeseen path from proxying blind.
        Error::e_explain(
            ErrorType::InternalError,
            "ecluse answers every request in request_filter",
        )
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        if let Some(clock) = head_clock(session) {
            clock.request_done();
        }
        let req = session.req_header();
        let status = if ctx.status == 0 {
            session
                .response_written()
                .map(|r| r.status.as_u16())
                .unwrap_or(0)
        } else {
            ctx.status
        };
        self.recorders.metrics.request(ctx.action.as_str(), status);
        self.finish_call(ctx);
        let level = if status >= 500 {
            log::Level::Warn
        } else {
            log::Level::Info
        };
        // The access line is off at the usual `warn`: do not build it then.
        if !log::log_enabled!(level) {
            return;
        }
        let destination = ctx
            .destination
            .as_ref()
            .map(|d| d.to_string())
            .unwrap_or_else(|| "-".into());
        let tokens = match (ctx.usage.input_tokens, ctx.usage.output_tokens) {
            (None, None) => String::new(),
            (i, o) => format!(
                ", tokens {}/{}",
                i.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
                o.map(|n| n.to_string()).unwrap_or_else(|| "-".into())
            ),
        };
        log::log!(
            level,
            "{} {} {}{} -> {status} in {:?} ({}{tokens})",
            ctx.action.as_str(),
            req.method,
            destination,
            req.uri.path(),
            ctx.started.elapsed(),
            ctx.outcome
        );
    }
}
