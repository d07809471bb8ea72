//! The HTML report: one self-contained file for a person to read and
//! print. Inline CSS and SVG only: no script, nothing fetched (a
//! Content-Security-Policy says so too), and every string from the logs
//! escaped, since the logs are untrusted.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{clip, ActionCount, Report};

/// Text safe in HTML content and in quoted attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn or_none(value: &Option<String>) -> String {
    match value {
        Some(v) => esc(v),
        None => "<span class=\"none\">(none)</span>".into(),
    }
}

/// 1234567 as "1 234 567": readable in any locale.
fn num(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    out
}

const STYLE: &str = r#"
:root { --ink: #1a1a1a; --muted: #5f6368; --rule: #d0d4d9; --band: #f3f5f7; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  color: var(--ink); margin: 2rem auto; max-width: 1100px; padding: 0 1.5rem; line-height: 1.45;
  -webkit-print-color-adjust: exact; print-color-adjust: exact; }
h1 { font-size: 1.6rem; margin: 0 0 .25rem; }
h2 { font-size: 1.2rem; margin: 2rem 0 .5rem; padding-bottom: .2rem; border-bottom: 2px solid var(--ink); }
h3 { font-size: 1rem; margin: 1.2rem 0 .4rem; }
p.lede, p.note { color: var(--muted); margin: .25rem 0 .75rem; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; margin: 1rem 0; }
dl.facts dt { font-weight: 600; }
dl.facts dd { margin: 0; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0 1rem; font-size: .9rem; }
th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid var(--rule); vertical-align: top;
  overflow-wrap: anywhere; }
th { background: var(--band); font-weight: 600; white-space: nowrap; }
tr.group th { background: #e4e8ec; white-space: normal; overflow-wrap: anywhere; padding-top: .5rem; }
table.fixed { table-layout: fixed; }
table.fixed th { white-space: normal; }
table.compact { width: auto; min-width: 50%; }
.muted { color: var(--muted); font-weight: 400; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.total td { font-weight: 600; border-top: 2px solid var(--ink); }
.none { color: var(--muted); font-style: italic; font-weight: 400; }
.flag { display: inline-block; padding: 0 .35rem; border-radius: .25rem; font-size: .8rem;
  background: #fff3cd; border: 1px solid #c9a227; color: #5c4400; }
.cards { display: flex; flex-wrap: wrap; gap: .75rem; margin: 1rem 0; }
.card { border: 1px solid var(--rule); border-radius: .4rem; padding: .6rem .9rem; min-width: 9rem; }
.card .v { font-size: 1.5rem; font-weight: 700; font-variant-numeric: tabular-nums; }
.card .k { color: var(--muted); font-size: .85rem; }
figure { margin: .5rem 0 1rem; break-inside: avoid; }
figure svg { width: 100%; height: auto; display: block; }
figcaption { color: var(--muted); font-size: .85rem; }
.legend { display: flex; flex-wrap: wrap; gap: .3rem 1rem; font-size: .85rem; margin: .3rem 0; }
.legend span::before { content: ""; display: inline-block; width: .8rem; height: .8rem; margin-right: .3rem;
  vertical-align: -.1rem; background: var(--swatch); border: 1px solid rgba(0,0,0,.25); }
code { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: .85em; }
@page { size: A4 landscape; margin: 12mm; }
@media print {
  body { margin: 0; max-width: none; padding: 0; font-size: 10pt; }
  h2 { break-after: avoid; }
  table { font-size: 8.5pt; }
  thead { display: table-header-group; }
  tr { break-inside: avoid; }
}
"#;

const ACTION_COLOURS: [(&str, &str); 3] = [
    ("allow", "#2e7d32"),
    ("reroute", "#f2a900"),
    ("deny", "#c62828"),
];

const CLASS_COLOURS: [(&str, &str); 5] = [
    ("public", "#43a047"),
    ("internal", "#1e88e5"),
    ("confidential", "#fb8c00"),
    ("personal", "#e53935"),
    ("special-category", "#8e24aa"),
];

const SPARE_COLOURS: [&str; 5] = ["#00897b", "#6d4c41", "#3949ab", "#c0ca33", "#546e7a"];

const NONE_COLOUR: &str = "#9e9e9e";

/// Classifications past the spare colours, summed as one.
const OTHER_CLASSES: &str = "(other classifications)";
const OTHER_COLOUR: &str = "#cfd8dc";

fn legend(items: &[(String, &str)]) -> String {
    let mut out = String::from("<div class=\"legend\">");
    for (name, colour) in items {
        let _ = write!(
            out,
            "<span style=\"--swatch:{colour}\">{}</span>",
            esc(name)
        );
    }
    out.push_str("</div>");
    out
}

/// An axis for values up to `max`: a round step (1, 2 or 5 times a power
/// of ten) and the number of steps, at most five, that reach `max`.
fn axis(max: u64) -> (u64, u64) {
    let mut power = 1u64;
    loop {
        for m in [1, 2, 5] {
            let step = power.saturating_mul(m);
            if max.div_ceil(step) <= 5 {
                return (step, max.div_ceil(step).max(1));
            }
        }
        power = power.saturating_mul(10);
    }
}

/// Request-stage calls per day, stacked by action.
fn day_chart(report: &Report) -> String {
    let days: Vec<(&str, [u64; 4])> = report
        .days
        .iter()
        .filter_map(|d| {
            let actions = d.stages.get("request")?;
            let mut stack = [0u64; 4];
            for (action, count) in actions {
                let at = ACTION_COLOURS
                    .iter()
                    .position(|(a, _)| a == action)
                    .unwrap_or(3);
                stack[at] += count;
            }
            Some((d.day.as_deref().unwrap_or("(none)"), stack))
        })
        .collect();
    if days.is_empty() {
        return "<p class=\"note\">No request-stage calls in the period.</p>".into();
    }
    let (width, height, left, bottom, top) = (960.0, 300.0, 56.0, 70.0, 12.0);
    let plot_w = width - left - 12.0;
    let plot_h = height - bottom - top;
    let (step, steps) = axis(
        days.iter()
            .map(|(_, s)| s.iter().sum::<u64>())
            .max()
            .unwrap_or(0),
    );
    let max = step.saturating_mul(steps);
    let slot = plot_w / days.len() as f64;
    let bar = (slot * 0.8).max(0.5);
    let mut svg = format!(
        "<svg viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"Request-stage calls per day, stacked by action\">"
    );
    for i in 0..=steps {
        let value = step.saturating_mul(i);
        let y = top + plot_h - plot_h * i as f64 / steps as f64;
        let _ = write!(
            svg,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#d0d4d9\"/>\
             <text x=\"{}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"#5f6368\">{}</text>",
            width - 12.0,
            left - 6.0,
            y + 4.0,
            num(value)
        );
    }
    let label_every = (days.len() / 31).max(1);
    for (i, (day, stack)) in days.iter().enumerate() {
        let x = left + slot * i as f64 + (slot - bar) / 2.0;
        let mut y = top + plot_h;
        for (at, count) in stack.iter().enumerate() {
            if *count == 0 {
                continue;
            }
            let (name, colour) = ACTION_COLOURS
                .get(at)
                .copied()
                .unwrap_or(("other", NONE_COLOUR));
            let h = plot_h * *count as f64 / max as f64;
            y -= h;
            let _ = write!(
                svg,
                "<rect x=\"{x:.2}\" y=\"{y:.2}\" width=\"{bar:.2}\" height=\"{h:.2}\" fill=\"{colour}\">\
                 <title>{}: {} {name}</title></rect>",
                esc(day),
                num(*count)
            );
        }
        if i % label_every == 0 {
            let lx = x + bar / 2.0;
            let ly = top + plot_h + 10.0;
            let _ = write!(
                svg,
                "<text x=\"{lx:.1}\" y=\"{ly:.1}\" font-size=\"10\" fill=\"#5f6368\" text-anchor=\"end\" \
                 transform=\"rotate(-45 {lx:.1} {ly:.1})\">{}</text>",
                esc(day)
            );
        }
    }
    let _ = write!(
        svg,
        "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#1a1a1a\"/></svg>",
        width - 12.0,
        y = top + plot_h
    );
    let mut items: Vec<(String, &str)> = ACTION_COLOURS
        .iter()
        .map(|(a, c)| (a.to_string(), *c))
        .collect();
    if days.iter().any(|(_, s)| s[3] > 0) {
        items.push(("other".into(), NONE_COLOUR));
    }
    format!(
        "<figure>{svg}{}<figcaption>Request-stage calls per UTC day, by the decided action \
         (report-mode decisions included).</figcaption></figure>",
        legend(&items)
    )
}

/// Where a classification goes in a stack: from the least to the most
/// sensitive, then any other names, then none.
fn class_rank(class: Option<&str>) -> (usize, Option<&str>) {
    match class {
        None => (CLASS_COLOURS.len() + 1, None),
        Some(c) => match CLASS_COLOURS.iter().position(|(k, _)| *k == c) {
            Some(at) => (at, None),
            None => (CLASS_COLOURS.len(), Some(c)),
        },
    }
}

/// Classifications that reached each jurisdiction (allowed, or sent in
/// report mode), one stacked bar per jurisdiction. A log may name any
/// number of classifications and jurisdictions: the busiest jurisdictions
/// and the known classifications (plus a few others) get a bar and a
/// colour, the rest is summed.
fn jurisdiction_chart(report: &Report) -> String {
    const BARS: usize = 30;
    let mut others: BTreeMap<&str, u64> = BTreeMap::new();
    for row in report.processing.iter().filter(|r| r.sent > 0) {
        if let (_, Some(name)) = class_rank(row.classification.as_deref()) {
            *others.entry(name).or_default() += row.sent;
        }
    }
    let mut others: Vec<(&str, u64)> = others.into_iter().collect();
    others.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let coloured: BTreeMap<&str, &str> = others
        .iter()
        .zip(SPARE_COLOURS)
        .map(|((name, _), colour)| (*name, colour))
        .collect();
    // A segment: its order in the stack, its name, its colour.
    let segment = |class: Option<&str>| -> ((usize, usize), String, &'static str) {
        match (class_rank(class), class) {
            ((rank, None), Some(c)) => ((rank, 0), c.to_string(), CLASS_COLOURS[rank].1),
            ((rank, None), None) => ((rank, 0), "(none)".into(), NONE_COLOUR),
            ((rank, Some(name)), _) => match coloured.get(name) {
                Some(colour) => {
                    let at = others.iter().position(|o| o.0 == name).unwrap_or(0);
                    ((rank, at), name.to_string(), colour)
                }
                None => (
                    (rank, SPARE_COLOURS.len()),
                    OTHER_CLASSES.into(),
                    OTHER_COLOUR,
                ),
            },
        }
    };

    type Stack = BTreeMap<(usize, usize), (String, &'static str, u64)>;
    let mut per: BTreeMap<Option<&str>, Stack> = BTreeMap::new();
    for row in report.processing.iter().filter(|r| r.sent > 0) {
        let (order, name, colour) = segment(row.classification.as_deref());
        per.entry(row.jurisdiction.as_deref())
            .or_default()
            .entry(order)
            .or_insert((name, colour, 0))
            .2 += row.sent;
    }
    if per.is_empty() {
        return "<p class=\"note\">No request-stage call reached a destination in the period.</p>"
            .into();
    }
    let mut bars: Vec<(Option<&str>, Stack, u64)> = per
        .into_iter()
        .map(|(j, stack)| {
            let total = stack.values().map(|s| s.2).sum();
            (j, stack, total)
        })
        .collect();
    bars.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    let hidden = bars.len().saturating_sub(BARS);
    bars.truncate(BARS);

    let (width, row_h, left, right) = (960.0, 26.0, 150.0, 90.0);
    let height = row_h * bars.len() as f64 + 10.0;
    let max = bars.iter().map(|b| b.2).max().unwrap_or(1).max(1) as f64;
    let mut used: BTreeMap<(usize, usize), (String, &'static str)> = BTreeMap::new();
    let mut svg = format!(
        "<svg viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"Classifications sent to each jurisdiction\">"
    );
    for (i, (jurisdiction, stack, total)) in bars.iter().enumerate() {
        let y = 5.0 + row_h * i as f64;
        let name = jurisdiction.unwrap_or("(unknown)");
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"end\">{}</text>",
            left - 8.0,
            y + row_h / 2.0 + 4.0,
            esc(&clip(name, 24))
        );
        let mut x = left;
        for (order, (class, colour, count)) in stack {
            used.insert(*order, (class.clone(), colour));
            let w = (width - left - right) * *count as f64 / max;
            let _ = write!(
                svg,
                "<rect x=\"{x:.2}\" y=\"{:.1}\" width=\"{w:.2}\" height=\"{:.1}\" fill=\"{colour}\">\
                 <title>{}: {} {}</title></rect>",
                y + 3.0,
                row_h - 6.0,
                esc(name),
                num(*count),
                esc(class)
            );
            x += w;
        }
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" fill=\"#5f6368\">{}</text>",
            x + 6.0,
            y + row_h / 2.0 + 4.0,
            num(*total)
        );
    }
    svg.push_str("</svg>");
    let items: Vec<(String, &str)> = used.into_values().collect();
    let more = if hidden > 0 {
        format!(
            " {} more jurisdiction(s) are in the table above.",
            num(hidden as u64)
        )
    } else {
        String::new()
    };
    format!(
        "<figure>{svg}{}<figcaption>Request-stage calls that reached each jurisdiction (allowed, \
         or sent in report mode), by classification.{more}</figcaption></figure>",
        legend(&items)
    )
}

fn count_cell(n: u64) -> String {
    format!("<td class=\"n\">{}</td>", num(n))
}

fn opt_count(n: u64) -> String {
    if n == 0 {
        "<td class=\"n\"></td>".into()
    } else {
        count_cell(n)
    }
}

pub fn render(report: &Report) -> String {
    let mut h = String::with_capacity(64 * 1024);
    h.push_str(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>ecluse audit report</title><style>",
    );
    h.push_str(STYLE);
    h.push_str("</style></head><body>\n");
    header(&mut h, report);
    decisions(&mut h, report);
    processing(&mut h, report);
    outside(&mut h, report);
    rules(&mut h, report);
    data_found(&mut h, report);
    revisions(&mut h, report);
    if !report.folded.is_empty() {
        h.push_str(
            "<h2>Grouped values</h2><p class=\"note\">The logs held more distinct values than the \
             report keeps; past the limit, values are grouped as <code>(other)</code>. Records \
             grouped, per dimension:</p><table class=\"compact\"><thead><tr><th>dimension</th><th class=\"n\">records</th>\
             </tr></thead><tbody>",
        );
        for (dimension, n) in &report.folded {
            let _ = write!(h, "<tr><td>{}</td>{}</tr>", esc(dimension), count_cell(*n));
        }
        h.push_str("</tbody></table>");
    }
    h.push_str("</body></html>\n");
    h
}

fn header(h: &mut String, r: &Report) {
    h.push_str(
        "<header><h1>Record of LLM processing</h1><p class=\"lede\">From ecluse decision audit \
         logs: which workloads sent which data to which legal entities, and what the policies \
         decided.</p><dl class=\"facts\">",
    );
    let period = match (&r.period.since, &r.period.until) {
        (None, None) => "all records".to_string(),
        (since, until) => format!(
            "{} to {}",
            since
                .as_deref()
                .map(esc)
                .unwrap_or_else(|| "the start".into()),
            until
                .as_deref()
                .map(esc)
                .unwrap_or_else(|| "the end".into())
        ),
    };
    let seen = match (&r.period.first_record, &r.period.last_record) {
        (Some(first), Some(last)) => format!("; records from {} to {}", esc(first), esc(last)),
        _ => String::new(),
    };
    let _ = write!(
        h,
        "<dt>Period</dt><dd>{period}{seen}</dd>\
         <dt>Records</dt><dd>{}</dd>\
         <dt>Unreadable lines</dt><dd>{}</dd>",
        num(r.records),
        num(r.unreadable_lines)
    );
    if r.outside_period + r.without_time > 0 {
        let _ = write!(
            h,
            "<dt>Left out</dt><dd>{} outside the period, {} without a readable time</dd>",
            num(r.outside_period),
            num(r.without_time)
        );
    }
    let _ = write!(
        h,
        "<dt>Report mode</dt><dd>{} record(s) with <code>enforced: false</code>: decided and \
         logged, not applied (the calls went out as sent)</dd>\
         <dt>Generated</dt><dd>{}</dd><dt>Files read</dt><dd>",
        num(r.report_only),
        esc(&r.generated_at)
    );
    h.push_str(
        "<table><thead><tr><th>file</th><th class=\"n\">records</th>\
         <th class=\"n\">unreadable lines</th><th class=\"n\">left out by the period</th></tr></thead><tbody>",
    );
    for f in &r.files {
        let _ = write!(
            h,
            "<tr><td><code>{}</code></td>{}{}{}</tr>",
            esc(&f.path),
            count_cell(f.records),
            count_cell(f.unreadable_lines),
            count_cell(f.skipped)
        );
    }
    h.push_str("</tbody></table></dd></dl></header>\n");
}

fn decisions(h: &mut String, r: &Report) {
    h.push_str("<section><h2>Decisions</h2><div class=\"cards\">");
    let request = r.stages.get("request").cloned().unwrap_or_default();
    let action = |a: &str| request.actions.get(a).copied().unwrap_or_default();
    for (name, count) in [
        (
            "calls decided",
            ActionCount {
                count: request.total,
                report_only: request.report_only,
            },
        ),
        ("allowed", action("allow")),
        ("rerouted", action("reroute")),
        ("denied", action("deny")),
    ] {
        let flag = if count.report_only > 0 {
            format!(
                "<div><span class=\"flag\">{} report only</span></div>",
                num(count.report_only)
            )
        } else {
            String::new()
        };
        let _ = write!(
            h,
            "<div class=\"card\"><div class=\"v\">{}</div><div class=\"k\">{name}</div>{flag}</div>",
            num(count.count)
        );
    }
    h.push_str("</div>");
    h.push_str(
        "<table class=\"compact\"><thead><tr><th>stage</th><th>action</th><th class=\"n\">records</th>\
         <th class=\"n\">of which report only</th></tr></thead><tbody>",
    );
    for (stage, summary) in &r.stages {
        for (action, count) in &summary.actions {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td>{}{}</tr>",
                esc(stage),
                esc(action),
                count_cell(count.count),
                opt_count(count.report_only)
            );
        }
    }
    h.push_str(
        "</tbody></table><p class=\"note\">Connect-stage records decide a connection \
        (<code>intercept</code>: opened and inspected, its calls are the request-stage records; \
        <code>tunnel</code>: relayed uninspected; <code>deny</code>: refused).</p>",
    );

    h.push_str("<h3>Reroutes, by target</h3>");
    if r.reroutes.is_empty() {
        h.push_str("<p class=\"note\">No call was rerouted.</p>");
    } else {
        h.push_str(
            "<table class=\"compact\"><thead><tr><th>target</th><th class=\"n\">calls</th>\
             <th class=\"n\">of which report only</th></tr></thead><tbody>",
        );
        for row in &r.reroutes {
            let _ = write!(
                h,
                "<tr><td>{}</td>{}{}</tr>",
                or_none(&row.route),
                count_cell(row.count),
                opt_count(row.report_only)
            );
        }
        h.push_str("</tbody></table>");
    }

    h.push_str("<h3>Calls per day</h3>");
    h.push_str(&day_chart(r));
    h.push_str(
        "<table><thead><tr><th>day (UTC)</th><th class=\"n\">allowed</th><th class=\"n\">rerouted</th>\
         <th class=\"n\">denied</th><th class=\"n\">connect: intercept</th><th class=\"n\">tunnel</th>\
         <th class=\"n\">deny</th><th class=\"n\">report only</th></tr></thead><tbody>",
    );
    for day in &r.days {
        let get = |stage: &str, action: &str| {
            day.stages
                .get(stage)
                .and_then(|a| a.get(action))
                .copied()
                .unwrap_or(0)
        };
        let _ = write!(
            h,
            "<tr><td>{}</td>{}{}{}{}{}{}{}</tr>",
            or_none(&day.day),
            opt_count(get("request", "allow")),
            opt_count(get("request", "reroute")),
            opt_count(get("request", "deny")),
            opt_count(get("connect", "intercept")),
            opt_count(get("connect", "tunnel")),
            opt_count(get("connect", "deny")),
            opt_count(day.report_only)
        );
    }
    h.push_str("</tbody></table></section>\n");
}

fn processing(h: &mut String, r: &Report) {
    h.push_str(
        "<section><h2>Processing by workload</h2><p class=\"note\">Request-stage calls per \
         workload and namespace: the legal entity each was addressed to, its jurisdiction, and \
         the classification the policies decided on. A rerouted call went to the reroute target \
         instead; a denied one went nowhere; a report-only one went out as sent.</p>",
    );
    if r.processing.is_empty() {
        h.push_str("<p class=\"note\">No request-stage calls in the period.</p>");
    } else {
        h.push_str(
            "<table><thead><tr><th>entity</th><th>jurisdiction</th><th>classification</th>\
             <th class=\"n\">allowed</th><th class=\"n\">rerouted</th><th class=\"n\">denied</th>\
             <th class=\"n\">report only</th><th class=\"n\">total</th>\
             <th class=\"n\">reached the entity</th></tr></thead>",
        );
        // The rows come sorted by workload and namespace: one group each.
        for group in r
            .processing
            .chunk_by(|a, b| (&a.workload, &a.namespace) == (&b.workload, &b.namespace))
        {
            let total: u64 = group.iter().map(|g| g.total).sum();
            let sent: u64 = group.iter().map(|g| g.sent).sum();
            let _ = write!(
                h,
                "<tbody><tr class=\"group\"><th colspan=\"9\">workload {} · namespace {} \
                 <span class=\"muted\">· {} call(s), {} reached the entity</span></th></tr>",
                or_none(&group[0].workload),
                or_none(&group[0].namespace),
                num(total),
                num(sent)
            );
            for row in group {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td>{}{}{}{}{}{}</tr>",
                    or_none(&row.entity),
                    or_none(&row.jurisdiction),
                    or_none(&row.classification),
                    opt_count(row.allow),
                    opt_count(row.reroute),
                    opt_count(row.deny),
                    opt_count(row.report_only),
                    count_cell(row.total),
                    count_cell(row.sent)
                );
            }
            h.push_str("</tbody>");
        }
        h.push_str("</table>");
    }
    h.push_str("<h3>Classifications by jurisdiction</h3>");
    h.push_str(&jurisdiction_chart(r));
    if !r.tunnels.is_empty() {
        h.push_str(
            "<h3>Tunnels (not inspected)</h3><p class=\"note\">Connections relayed without \
             inspection: what they carried is not known.</p><table><thead><tr><th>workload</th>\
             <th>namespace</th><th>entity</th><th>jurisdiction</th><th class=\"n\">connections</th>\
             <th class=\"n\">report only</th></tr></thead><tbody>",
        );
        for row in &r.tunnels {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td>{}{}</tr>",
                or_none(&row.workload),
                or_none(&row.namespace),
                or_none(&row.entity),
                or_none(&row.jurisdiction),
                count_cell(row.count),
                opt_count(row.report_only)
            );
        }
        h.push_str("</tbody></table>");
    }
    h.push_str("</section>\n");
}

fn outside(h: &mut String, r: &Report) {
    let o = &r.outside_eea;
    let _ = write!(
        h,
        "<section><h2>Personal or confidential data sent outside the EEA</h2>\
         <p class=\"note\">Request-stage calls classified personal, special-category or \
         confidential that were allowed (or sent in report mode) to an entity whose \
         jurisdiction is not the EU, an EEA country or your own cluster (<code>self</code>); an \
         unknown jurisdiction is listed too. Rerouted and denied calls are not.</p>\
         <div class=\"cards\"><div class=\"card\"><div class=\"v\" id=\"outside-eea-total\">{}</div>\
         <div class=\"k\">calls</div></div></div>",
        num(o.total)
    );
    if o.rows.is_empty() {
        h.push_str("<p class=\"note\">None in the period.</p></section>\n");
        return;
    }
    // Fixed column widths: a long value from a log wraps inside its
    // column instead of squeezing the others.
    h.push_str(
        "<table class=\"fixed\"><colgroup><col style=\"width:12%\"><col style=\"width:15%\">\
         <col style=\"width:15%\"><col style=\"width:11%\"><col style=\"width:11%\">\
         <col style=\"width:24%\"><col style=\"width:12%\"></colgroup><thead><tr><th>time</th>\
         <th>workload (namespace)</th><th>entity</th><th>jurisdiction</th><th>classification</th>\
         <th>rule, decision id</th><th>note</th></tr></thead><tbody>",
    );
    for row in &o.rows {
        let mut note = String::new();
        if !row.enforced {
            let _ = write!(
                note,
                "<span class=\"flag\">report only: {}</span> ",
                esc(row.action.as_deref().unwrap_or("(none)"))
            );
        }
        if let Some(error) = &row.error {
            let _ = write!(note, "not carried out: {}", esc(error));
        }
        // A line break offered after the date, the text unchanged.
        let time = or_none(&row.time).replacen('T', "T<wbr>", 1);
        let _ = write!(
            h,
            "<tr><td>{time}</td><td>{}<br><span class=\"muted\">{}</span></td><td>{}</td>\
             <td>{}</td><td>{}</td><td><code>{}</code><br><code class=\"muted\">{}</code></td>\
             <td>{note}</td></tr>",
            or_none(&row.workload),
            or_none(&row.namespace),
            or_none(&row.entity),
            or_none(&row.jurisdiction),
            or_none(&row.classification),
            or_none(&row.rule),
            or_none(&row.decision_id),
        );
    }
    h.push_str("</tbody></table>");
    if o.not_listed > 0 {
        let _ = write!(
            h,
            "<p class=\"note\">The first {} read are listed; {} more are not: narrow the \
             period with <code>--since</code> and <code>--until</code> to list them.</p>",
            num(o.rows.len() as u64),
            num(o.not_listed)
        );
    }
    h.push_str("</section>\n");
}

fn rules(h: &mut String, r: &Report) {
    h.push_str(
        "<section><h2>Decisions by rule</h2><table><thead><tr><th>stage</th><th>rule</th>\
         <th>action</th><th class=\"n\">records</th><th class=\"n\">of which report only</th>\
         </tr></thead><tbody>",
    );
    for row in &r.rules {
        let _ = write!(
            h,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td>{}{}</tr>",
            or_none(&row.stage),
            or_none(&row.rule),
            or_none(&row.action),
            count_cell(row.count),
            opt_count(row.report_only)
        );
    }
    h.push_str("</tbody></table></section>\n");
}

fn data_found(h: &mut String, r: &Report) {
    let _ = write!(
        h,
        "<section><h2>Personal data found, and what the scan could not read</h2>\
         <p class=\"note\">Counts of personal data the scan found in request bodies, by kind \
         (summed over {} record(s)); the matched text is never logged.</p>",
        num(r.pii.records)
    );
    if r.pii.kinds.is_empty() {
        h.push_str("<p class=\"note\">None found.</p>");
    } else {
        h.push_str("<table class=\"compact\"><thead><tr><th>kind</th><th class=\"n\">found</th></tr></thead><tbody>");
        for (kind, n) in &r.pii.kinds {
            let _ = write!(h, "<tr><td>{}</td>{}</tr>", esc(kind), count_cell(*n));
        }
        h.push_str("</tbody></table>");
    }
    let _ = write!(
        h,
        "<h3>Not read by the scan</h3><p class=\"note\">{} record(s) whose body the scan could \
         not read in full, by reason (one record may give several).</p>",
        num(r.scan.incomplete_records)
    );
    if !r.scan.reasons.is_empty() {
        h.push_str(
            "<table class=\"compact\"><thead><tr><th>reason</th><th class=\"n\">parts</th></tr></thead><tbody>",
        );
        for (reason, n) in &r.scan.reasons {
            let _ = write!(h, "<tr><td>{}</td>{}</tr>", esc(reason), count_cell(*n));
        }
        h.push_str("</tbody></table>");
    }
    h.push_str("</section>\n");
}

fn revisions(h: &mut String, r: &Report) {
    h.push_str(
        "<section><h2>Policy revisions in force</h2><table><thead><tr><th>revision</th>\
         <th>first seen</th><th>last seen</th><th class=\"n\">records</th></tr></thead><tbody>",
    );
    for row in &r.revisions {
        let _ = write!(
            h,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td>{}</tr>",
            or_none(&row.revision),
            or_none(&row.first_seen),
            or_none(&row.last_seen),
            count_cell(row.records)
        );
    }
    h.push_str("</tbody></table></section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit_report::{Aggregator, Limits, Period};

    fn report(records: &[serde_json::Value]) -> Report {
        let mut a = Aggregator::new(Period::default(), Limits::default());
        for r in records {
            a.add_line(&serde_json::to_vec(r).unwrap());
        }
        a.finish(Vec::new(), "now".into())
    }

    fn call(workload: &str, jurisdiction: &str, classification: &str) -> serde_json::Value {
        serde_json::json!({
            "time": "2026-01-01T00:00:00Z", "stage": "request", "action": "allow",
            "enforced": true, "workload": workload, "classification": classification,
            "destination": {"entity": "E", "jurisdiction": jurisdiction}
        })
    }

    #[test]
    fn the_html_fetches_and_runs_nothing() {
        let html = render(&report(&[call("w", "US", "personal")]));
        for forbidden in [
            "<script", "src=", "href=", "http://", "https://", "@import", "url(",
        ] {
            assert!(!html.contains(forbidden), "{forbidden}");
        }
        assert_eq!(html.matches("<svg").count(), 2);
    }

    #[test]
    fn many_classifications_share_the_spare_colours_and_one_other() {
        let records: Vec<_> = (0..12)
            .map(|i| call("w", "US", &format!("class-{i:02}")))
            .chain([call("w", "US", "personal")])
            .collect();
        let chart = jurisdiction_chart(&report(&records));
        assert!(chart.contains("(other classifications)"));
        assert!(chart.contains("class-00") && !chart.contains("class-11"));
        // Known classifications stack first.
        assert!(chart.find("personal").unwrap() < chart.find("class-00").unwrap());
    }

    #[test]
    fn axes_take_round_steps() {
        assert_eq!(axis(0), (1, 1));
        assert_eq!(axis(7), (2, 4));
        assert_eq!(axis(46), (10, 5));
        assert_eq!(axis(120), (50, 3));
        assert_eq!(axis(500), (100, 5));
        let (step, steps) = axis(u64::MAX);
        assert_eq!(step.saturating_mul(steps), u64::MAX);
        assert_eq!(num(1234567), "1\u{202f}234\u{202f}567");
    }
}
