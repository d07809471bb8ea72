//! What a stage does with a decision, given the mode. Report mode decides,
//! records and never blocks: one pure function per kind of decision, used
//! by every stage that decides (CONNECT, plain http, request).

use crate::config::Mode;

use super::{ConnectAction, Decision, Route};

/// What the request stage does with an egress decision.
#[derive(Debug, PartialEq, Eq)]
pub enum RequestVerdict<'d> {
    /// Enforced deny: answered with the decision's status and reason.
    Refuse,
    /// Report mode: forwarded as sent, decision headers not applied.
    Report,
    /// Forwarded to its destination with the decision's header changes.
    Allow,
    /// Rewritten for the decision's target.
    Reroute(&'d Route),
}

pub fn request_verdict(decision: &Decision, mode: Mode) -> RequestVerdict<'_> {
    match (mode, decision.allowed, &decision.route) {
        (Mode::Report, _, _) => RequestVerdict::Report,
        (Mode::Enforce, false, _) => RequestVerdict::Refuse,
        (Mode::Enforce, true, Some(route)) => RequestVerdict::Reroute(route),
        (Mode::Enforce, true, None) => RequestVerdict::Allow,
    }
}

/// What the CONNECT (or plain http) stage does. In report mode a refused
/// LLM API is still inspected, so its calls are decided and recorded; any
/// other refused host is tunnelled (plain http: relayed uninspected).
pub fn connect_verdict(action: ConnectAction, mode: Mode, registered: bool) -> ConnectAction {
    match (mode, action) {
        (Mode::Report, ConnectAction::Deny) if registered => ConnectAction::Intercept,
        (Mode::Report, ConnectAction::Deny) => ConnectAction::Tunnel,
        (_, other) => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(allowed: bool, route: Option<&str>) -> Decision {
        Decision {
            allowed,
            reason: "r".into(),
            rule: "x".into(),
            http_status: if allowed { 200 } else { 403 },
            route: route.map(|t| Route {
                target: t.into(),
                model: None,
            }),
            headers: Default::default(),
            remove_headers: Vec::new(),
        }
    }

    #[test]
    fn request_verdicts() {
        let route = Route {
            target: "mistral".into(),
            model: None,
        };
        let cases = [
            (decision(false, None), Mode::Enforce, RequestVerdict::Refuse),
            (decision(false, None), Mode::Report, RequestVerdict::Report),
            (decision(true, None), Mode::Enforce, RequestVerdict::Allow),
            (decision(true, None), Mode::Report, RequestVerdict::Report),
            (
                decision(true, Some("mistral")),
                Mode::Enforce,
                RequestVerdict::Reroute(&route),
            ),
            (
                decision(true, Some("mistral")),
                Mode::Report,
                RequestVerdict::Report,
            ),
        ];
        for (d, mode, want) in &cases {
            assert_eq!(request_verdict(d, *mode), *want, "{d:?} {mode:?}");
        }
    }

    #[test]
    fn connect_verdicts() {
        use ConnectAction::*;
        let cases = [
            (Deny, Mode::Enforce, true, Deny),
            (Deny, Mode::Enforce, false, Deny),
            (Deny, Mode::Report, true, Intercept),
            (Deny, Mode::Report, false, Tunnel),
            (Intercept, Mode::Report, true, Intercept),
            (Tunnel, Mode::Report, false, Tunnel),
            (Intercept, Mode::Enforce, false, Intercept),
            (Tunnel, Mode::Enforce, true, Tunnel),
        ];
        for (action, mode, registered, want) in cases {
            assert_eq!(
                connect_verdict(action, mode, registered),
                want,
                "{action:?} {mode:?} {registered}"
            );
        }
    }
}
