//! `ecluse audit report`: audit logs summarised for a data protection
//! officer and an auditor, in the spirit of a GDPR Art. 30 record of
//! processing. Reading the files is the only IO here ([`run`]); parsing,
//! aggregation and the three renderings are plain functions.
//!
//! The logs are untrusted input: a line is read only up to
//! [`Limits::line_bytes`], every kept string is clipped, and each dimension
//! (workload, entity, rule, ...) keeps at most [`Limits::distinct`] values
//! before the rest is grouped as [`OTHER`], so a hostile file can neither
//! exhaust memory nor smuggle markup into the HTML.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use serde::Serialize;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime, Time, UtcOffset};

mod html;

/// The value that stands for every value past a dimension's cap.
pub const OTHER: &str = "(other)";

/// Classifications whose calls, sent outside the EEA, the report lists.
const SENSITIVE: [&str; 3] = ["personal", "special-category", "confidential"];

/// Jurisdictions inside the EEA: the registry says `EU` for EU entities; a
/// custom registry may name a member state, or Norway, Iceland or
/// Liechtenstein. `self` is the organisation's own in-cluster servers: no
/// transfer to anyone.
const EEA: [&str; 32] = [
    "EU", "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT",
    "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE", "NO", "IS", "LI",
    "self",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Html,
    Json,
    Csv,
}

/// What the report keeps in memory at most, whatever the files hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Distinct values per dimension before the rest is [`OTHER`].
    pub distinct: usize,
    /// Rows of each table (per workload and entity, per day, per rule)
    /// before the rest is counted in one all-[`OTHER`] row.
    pub combinations: usize,
    /// Rows of the detailed table (the CSV), likewise.
    pub rows: usize,
    /// Rows of the outside-EEA list; the rest are counted.
    pub listed: usize,
    /// Bytes kept of any one string from a record.
    pub value_bytes: usize,
    /// A longer line is counted unreadable without being parsed.
    pub line_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            distinct: 10_000,
            combinations: 100_000,
            rows: 500_000,
            listed: 1000,
            value_bytes: 256,
            line_bytes: 1 << 20,
        }
    }
}

/// `--since` and `--until`, both inclusive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Period {
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
}

impl Period {
    pub fn parse(since: Option<&str>, until: Option<&str>) -> Result<Period, String> {
        let period = Period {
            since: since.map(|s| parse_bound(s, false)).transpose()?,
            until: until.map(|s| parse_bound(s, true)).transpose()?,
        };
        if let (Some(since), Some(until)) = (period.since, period.until) {
            if since > until {
                return Err("--since is after --until".into());
            }
        }
        Ok(period)
    }

    fn bounded(&self) -> bool {
        self.since.is_some() || self.until.is_some()
    }

    fn contains(&self, time: OffsetDateTime) -> bool {
        self.since.is_none_or(|s| time >= s) && self.until.is_none_or(|u| time <= u)
    }
}

/// An RFC 3339 time, or a UTC date: its first instant, or as an upper bound
/// its last, so that `--until 2026-03-31` includes that whole day.
fn parse_bound(text: &str, end_of_day: bool) -> Result<OffsetDateTime, String> {
    if let Ok(time) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(time.to_offset(UtcOffset::UTC));
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    match Date::parse(text, &format) {
        Ok(date) => {
            let at = if end_of_day {
                Time::from_hms_nano(23, 59, 59, 999_999_999).unwrap_or(Time::MIDNIGHT)
            } else {
                Time::MIDNIGHT
            };
            Ok(date.with_time(at).assume_utc())
        }
        Err(_) => Err(format!(
            "{text:?} is neither an RFC 3339 time (2026-01-31T12:00:00Z) nor a date (2026-01-31)"
        )),
    }
}

fn rfc3339(time: OffsetDateTime) -> String {
    time.format(&Rfc3339).unwrap_or_default()
}

/// At most `max` bytes of `text`, cut at a character boundary, with control
/// and bidirectional-override characters shown as U+FFFD: they would
/// otherwise be invisible, or reorder what a reader sees, in the report.
fn clip(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut out: String = text[..end]
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect();
    if end < text.len() {
        out.push('…');
    }
    out
}

type Key = Option<Rc<str>>;

/// The values of one dimension seen so far.
#[derive(Default)]
struct Dim {
    values: HashSet<Rc<str>>,
    /// Records whose value was grouped as [`OTHER`].
    folded: u64,
}

impl Dim {
    fn key(&mut self, raw: Option<&str>, limits: &Limits) -> Key {
        let text = clip(raw?, limits.value_bytes);
        if let Some(known) = self.values.get(text.as_str()) {
            return Some(known.clone());
        }
        if self.values.len() < limits.distinct {
            let value: Rc<str> = text.into();
            self.values.insert(value.clone());
            return Some(value);
        }
        self.folded += 1;
        Some(OTHER.into())
    }
}

#[derive(Default)]
struct Dims {
    workload: Dim,
    namespace: Dim,
    entity: Dim,
    jurisdiction: Dim,
    classification: Dim,
    stage: Dim,
    action: Dim,
    rule: Dim,
    route: Dim,
    revision: Dim,
    day: Dim,
    pii_kind: Dim,
    scan_reason: Dim,
}

/// One CSV row's dimensions.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Combo {
    day: Key,
    workload: Key,
    namespace: Key,
    entity: Key,
    jurisdiction: Key,
    classification: Key,
    stage: Key,
    action: Key,
    enforced: bool,
}

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct RuleKey {
    stage: Key,
    rule: Key,
    action: Key,
}

#[derive(Default, Clone, Copy)]
struct Tally {
    count: u64,
    report_only: u64,
}

impl Tally {
    fn add(&mut self, enforced: bool) {
        self.count += 1;
        self.report_only += u64::from(!enforced);
    }
}

/// Figures under keys that may come from a hostile file: past the cap, new
/// keys land on `overflow`.
struct Capped<K, V> {
    counts: HashMap<K, V>,
    cap: usize,
    overflow: K,
    /// Records that landed on `overflow`.
    folded: u64,
}

impl<K: std::hash::Hash + Eq + Clone, V: Default> Capped<K, V> {
    fn new(cap: usize, overflow: K) -> Capped<K, V> {
        Capped {
            counts: HashMap::new(),
            cap,
            overflow,
            folded: 0,
        }
    }

    fn entry(&mut self, key: K) -> &mut V {
        let key = if self.counts.len() < self.cap || self.counts.contains_key(&key) {
            key
        } else {
            self.folded += 1;
            self.overflow.clone()
        };
        self.counts.entry(key).or_default()
    }

    fn sorted(self) -> Vec<(K, V)>
    where
        K: Ord,
    {
        let mut all: Vec<(K, V)> = self.counts.into_iter().collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

fn other() -> Key {
    Some(OTHER.into())
}

fn others<const N: usize>() -> [Key; N] {
    std::array::from_fn(|_| other())
}

struct Seen {
    first: Option<(OffsetDateTime, Rc<str>)>,
    last: Option<(OffsetDateTime, Rc<str>)>,
    records: u64,
}

/// What became of one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    Record,
    /// Not a JSON object with an `action`, not UTF-8, or too long.
    Unreadable,
    /// Outside `--since`/`--until`, or without a readable time while they
    /// are given.
    Skipped,
    Blank,
}

/// The running totals over every line read.
pub struct Aggregator {
    limits: Limits,
    period: Period,
    dims: Dims,
    /// Each figure of the report is counted under its own key, not derived
    /// from the detailed rows: past their cap, those lose detail first.
    actions: Capped<[Key; 2], Tally>,
    days: Capped<[Key; 3], Tally>,
    /// workload, namespace, entity, jurisdiction, classification; the
    /// strings of the row are filled in at the end.
    processing: Capped<[Key; 5], ProcessingRow>,
    tunnels: Capped<[Key; 4], Tally>,
    rules: Capped<RuleKey, Tally>,
    combos: Capped<Combo, Tally>,
    routes: HashMap<Key, Tally>,
    pii: HashMap<Key, u64>,
    pii_records: u64,
    scan: HashMap<Key, u64>,
    scan_incomplete: u64,
    revisions: HashMap<Key, Seen>,
    /// With the time each is sorted by.
    outside: Vec<(Option<OffsetDateTime>, OutsideRow)>,
    outside_total: u64,
    records: u64,
    report_only: u64,
    unreadable: u64,
    outside_period: u64,
    without_time: u64,
    first: Option<(OffsetDateTime, Rc<str>)>,
    last: Option<(OffsetDateTime, Rc<str>)>,
}

fn text<'a>(record: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(record, |value, field| value.get(field))?
        .as_str()
}

fn earlier(a: &mut Option<(OffsetDateTime, Rc<str>)>, at: OffsetDateTime, shown: &Rc<str>) {
    if a.as_ref().is_none_or(|(t, _)| at < *t) {
        *a = Some((at, shown.clone()));
    }
}

fn later(a: &mut Option<(OffsetDateTime, Rc<str>)>, at: OffsetDateTime, shown: &Rc<str>) {
    if a.as_ref().is_none_or(|(t, _)| at > *t) {
        *a = Some((at, shown.clone()));
    }
}

impl Aggregator {
    pub fn new(period: Period, limits: Limits) -> Aggregator {
        let overflow = Combo {
            day: other(),
            workload: other(),
            namespace: other(),
            entity: other(),
            jurisdiction: other(),
            classification: other(),
            stage: other(),
            action: other(),
            enforced: true,
        };
        let rule_overflow = RuleKey {
            stage: other(),
            rule: other(),
            action: other(),
        };
        Aggregator {
            limits,
            period,
            dims: Dims::default(),
            actions: Capped::new(limits.combinations, others()),
            days: Capped::new(limits.combinations, others()),
            processing: Capped::new(limits.combinations, others()),
            tunnels: Capped::new(limits.combinations, others()),
            rules: Capped::new(limits.combinations, rule_overflow),
            combos: Capped::new(limits.rows, overflow),
            routes: HashMap::new(),
            pii: HashMap::new(),
            pii_records: 0,
            scan: HashMap::new(),
            scan_incomplete: 0,
            revisions: HashMap::new(),
            outside: Vec::new(),
            outside_total: 0,
            records: 0,
            report_only: 0,
            unreadable: 0,
            outside_period: 0,
            without_time: 0,
            first: None,
            last: None,
        }
    }

    /// Counts one line of an audit log (without its newline).
    pub fn add_line(&mut self, line: &[u8]) -> Line {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Line::Blank;
        }
        let record: Value = match serde_json::from_slice(line) {
            Ok(v @ Value::Object(_)) if v.get("action").is_some_and(Value::is_string) => v,
            _ => {
                self.unreadable += 1;
                return Line::Unreadable;
            }
        };
        let time = text(&record, &["time"]).and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok());
        if self.period.bounded() {
            match time {
                None => {
                    self.without_time += 1;
                    return Line::Skipped;
                }
                Some(t) if !self.period.contains(t) => {
                    self.outside_period += 1;
                    return Line::Skipped;
                }
                Some(_) => {}
            }
        }
        self.add_record(&record, time);
        Line::Record
    }

    /// Counts a line that was too long to parse.
    pub fn add_unreadable(&mut self) {
        self.unreadable += 1;
    }

    fn add_record(&mut self, record: &Value, time: Option<OffsetDateTime>) {
        let limits = self.limits;
        let dims = &mut self.dims;
        let enforced = record
            .get("enforced")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let time = time.map(|t| t.to_offset(UtcOffset::UTC));
        let shown_time: Option<Rc<str>> = text(record, &["time"])
            .filter(|_| time.is_some())
            .map(|t| clip(t, limits.value_bytes).into());
        let day_text = time.map(|t| t.date().to_string());
        let combo = Combo {
            day: dims.day.key(day_text.as_deref(), &limits),
            workload: dims.workload.key(text(record, &["workload"]), &limits),
            namespace: dims.namespace.key(text(record, &["namespace"]), &limits),
            entity: dims
                .entity
                .key(text(record, &["destination", "entity"]), &limits),
            jurisdiction: dims
                .jurisdiction
                .key(text(record, &["destination", "jurisdiction"]), &limits),
            classification: dims
                .classification
                .key(text(record, &["classification"]), &limits),
            stage: dims.stage.key(text(record, &["stage"]), &limits),
            action: dims.action.key(text(record, &["action"]), &limits),
            enforced,
        };
        self.records += 1;
        self.report_only += u64::from(!enforced);
        if let (Some(at), Some(shown)) = (time, &shown_time) {
            earlier(&mut self.first, at, shown);
            later(&mut self.last, at, shown);
        }

        let rule = dims.rule.key(text(record, &["rule"]), &limits);
        let c = &combo;
        self.rules
            .entry(RuleKey {
                stage: c.stage.clone(),
                rule: rule.clone(),
                action: c.action.clone(),
            })
            .add(enforced);
        self.actions
            .entry([c.stage.clone(), c.action.clone()])
            .add(enforced);
        self.days
            .entry([c.day.clone(), c.stage.clone(), c.action.clone()])
            .add(enforced);
        let allowed = c.action.as_deref() == Some("allow");
        match c.stage.as_deref() {
            Some("request") => {
                let row = self.processing.entry([
                    c.workload.clone(),
                    c.namespace.clone(),
                    c.entity.clone(),
                    c.jurisdiction.clone(),
                    c.classification.clone(),
                ]);
                match c.action.as_deref() {
                    Some("allow") => row.allow += 1,
                    Some("reroute") => row.reroute += 1,
                    Some("deny") => row.deny += 1,
                    _ => row.other += 1,
                }
                row.report_only += u64::from(!enforced);
                row.sent += u64::from(allowed || !enforced);
                row.total += 1;
            }
            Some("connect") if c.action.as_deref() == Some("tunnel") => {
                self.tunnels
                    .entry([
                        c.workload.clone(),
                        c.namespace.clone(),
                        c.entity.clone(),
                        c.jurisdiction.clone(),
                    ])
                    .add(enforced);
            }
            _ => {}
        }
        if combo.action.as_deref() == Some("reroute") {
            let route = dims.route.key(text(record, &["route"]), &limits);
            self.routes.entry(route).or_default().add(enforced);
        }

        if let Some(pii) = record.get("pii").and_then(Value::as_object) {
            let mut any = false;
            for (kind, count) in pii {
                let Some(count) = count.as_u64().filter(|c| *c > 0) else {
                    continue;
                };
                any = true;
                let kind = dims.pii_kind.key(Some(kind), &limits);
                let total = self.pii.entry(kind).or_default();
                *total = total.saturating_add(count);
            }
            self.pii_records += u64::from(any);
        }
        if let Some(unread) = record.get("scan").and_then(Value::as_array) {
            self.scan_incomplete += 1;
            for entry in unread {
                let reason = dims.scan_reason.key(text(entry, &["reason"]), &limits);
                *self.scan.entry(reason).or_default() += 1;
            }
        }

        let revision = dims.revision.key(text(record, &["revision"]), &limits);
        let seen = self.revisions.entry(revision).or_insert(Seen {
            first: None,
            last: None,
            records: 0,
        });
        seen.records += 1;
        if let (Some(at), Some(shown)) = (time, &shown_time) {
            earlier(&mut seen.first, at, shown);
            later(&mut seen.last, at, shown);
        }

        if sent_outside_eea(&combo) {
            self.outside_total += 1;
            if self.outside.len() < limits.listed {
                let string =
                    |path: &[&str]| text(record, path).map(|t| clip(t, limits.value_bytes));
                self.outside.push((
                    time,
                    OutsideRow {
                        time: string(&["time"]),
                        workload: string(&["workload"]),
                        namespace: string(&["namespace"]),
                        entity: string(&["destination", "entity"]),
                        jurisdiction: string(&["destination", "jurisdiction"]),
                        classification: string(&["classification"]),
                        action: string(&["action"]),
                        enforced,
                        rule: string(&["rule"]),
                        decision_id: string(&["decision_id"]),
                        error: string(&["error"]),
                    },
                ));
            }
        }
        self.combos.entry(combo).add(enforced);
    }
}

/// A request-stage call that reached its destination (allowed, or any
/// decision in report mode, which sends every call as it came) with
/// personal, special-category or confidential data, where that destination
/// is not known to be in the EEA: an unknown jurisdiction is listed too.
fn sent_outside_eea(combo: &Combo) -> bool {
    combo.stage.as_deref() == Some("request")
        && combo
            .classification
            .as_deref()
            .is_some_and(|c| SENSITIVE.contains(&c))
        && (combo.action.as_deref() == Some("allow") || !combo.enforced)
        && !combo
            .jurisdiction
            .as_deref()
            .is_some_and(|j| EEA.contains(&j))
}

// ---------------------------------------------------------------------------
// The report: every figure, as the three renderings show it.

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub generated_at: String,
    pub files: Vec<FileSummary>,
    pub period: PeriodSummary,
    /// Records counted (inside the period).
    pub records: u64,
    pub unreadable_lines: u64,
    /// Records left out by `--since`/`--until`.
    pub outside_period: u64,
    /// Records left out because their time could not be read while a
    /// period was given.
    pub without_time: u64,
    /// Records with `enforced: false`: logged, not applied.
    pub report_only: u64,
    /// Per stage (`request`, `connect`), per action.
    pub stages: BTreeMap<String, StageSummary>,
    pub reroutes: Vec<RouteRow>,
    pub rules: Vec<RuleRow>,
    pub days: Vec<DayRow>,
    pub processing: Vec<ProcessingRow>,
    pub tunnels: Vec<TunnelRow>,
    pub pii: PiiSummary,
    pub scan: ScanSummary,
    pub revisions: Vec<RevisionRow>,
    pub outside_eea: OutsideSummary,
    /// Per dimension, records whose value was grouped as "(other)".
    pub folded: BTreeMap<&'static str, u64>,
    /// workload x namespace x entity x jurisdiction x classification x stage
    /// x action x enforced x day, with a count: the CSV.
    pub rows: Vec<CountRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileSummary {
    pub path: String,
    pub records: u64,
    pub unreadable_lines: u64,
    /// Records outside the period, or without a time while one is given.
    pub skipped: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PeriodSummary {
    pub since: Option<String>,
    pub until: Option<String>,
    pub first_record: Option<String>,
    pub last_record: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct StageSummary {
    pub total: u64,
    pub report_only: u64,
    pub actions: BTreeMap<String, ActionCount>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ActionCount {
    pub count: u64,
    pub report_only: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RouteRow {
    pub route: Option<String>,
    pub count: u64,
    pub report_only: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuleRow {
    pub stage: Option<String>,
    pub rule: Option<String>,
    pub action: Option<String>,
    pub count: u64,
    pub report_only: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DayRow {
    /// UTC; null for records whose time could not be read.
    pub day: Option<String>,
    /// Per stage, per action.
    pub stages: BTreeMap<String, BTreeMap<String, u64>>,
    pub report_only: u64,
}

/// Request-stage calls of one workload to one entity with one
/// classification.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProcessingRow {
    pub workload: Option<String>,
    pub namespace: Option<String>,
    pub entity: Option<String>,
    pub jurisdiction: Option<String>,
    pub classification: Option<String>,
    pub allow: u64,
    pub reroute: u64,
    pub deny: u64,
    /// Any other action a log may name.
    pub other: u64,
    pub report_only: u64,
    /// Calls that reached the entity: allowed, or any decision in report
    /// mode (which sends every call as it came).
    pub sent: u64,
    pub total: u64,
}

/// Connect-stage tunnels: calls relayed without inspection.
#[derive(Debug, Clone, Serialize)]
pub struct TunnelRow {
    pub workload: Option<String>,
    pub namespace: Option<String>,
    pub entity: Option<String>,
    pub jurisdiction: Option<String>,
    pub count: u64,
    pub report_only: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PiiSummary {
    /// Records in which any personal data was counted.
    pub records: u64,
    pub kinds: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScanSummary {
    /// Records whose scan could not read everything.
    pub incomplete_records: u64,
    pub reasons: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RevisionRow {
    pub revision: Option<String>,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    pub records: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutsideSummary {
    pub total: u64,
    pub not_listed: u64,
    /// The first ones read, at most [`Limits::listed`], by time.
    pub rows: Vec<OutsideRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutsideRow {
    pub time: Option<String>,
    pub workload: Option<String>,
    pub namespace: Option<String>,
    pub entity: Option<String>,
    pub jurisdiction: Option<String>,
    pub classification: Option<String>,
    pub action: Option<String>,
    pub enforced: bool,
    pub rule: Option<String>,
    pub decision_id: Option<String>,
    /// Why the decided action could not be carried out, if it was not.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CountRow {
    pub day: Option<String>,
    pub workload: Option<String>,
    pub namespace: Option<String>,
    pub entity: Option<String>,
    pub jurisdiction: Option<String>,
    pub classification: Option<String>,
    pub stage: Option<String>,
    pub action: Option<String>,
    pub enforced: bool,
    pub count: u64,
}

fn owned(key: &Key) -> Option<String> {
    key.as_deref().map(str::to_string)
}

/// A key as a map key: null becomes "(none)".
fn label(key: &Key) -> String {
    key.as_deref().unwrap_or("(none)").to_string()
}

fn shown(seen: &Option<(OffsetDateTime, Rc<str>)>) -> Option<String> {
    seen.as_ref().map(|(_, s)| s.to_string())
}

impl Aggregator {
    /// The report over everything added.
    pub fn finish(self, files: Vec<FileSummary>, generated_at: String) -> Report {
        let folded_views = [
            ("decision counts", self.actions.folded),
            ("daily figures", self.days.folded),
            ("processing rows", self.processing.folded),
            ("tunnel rows", self.tunnels.folded),
            ("rule rows", self.rules.folded),
            ("detailed rows", self.combos.folded),
        ];
        let mut stages: BTreeMap<String, StageSummary> = BTreeMap::new();
        for ([stage, action], tally) in self.actions.sorted() {
            let stage = stages.entry(label(&stage)).or_default();
            stage.total += tally.count;
            stage.report_only += tally.report_only;
            let action = stage.actions.entry(label(&action)).or_default();
            action.count += tally.count;
            action.report_only += tally.report_only;
        }
        let mut days: BTreeMap<Key, DayRow> = BTreeMap::new();
        for ([day, stage, action], tally) in self.days.sorted() {
            let row = days.entry(day.clone()).or_insert_with(|| DayRow {
                day: owned(&day),
                stages: BTreeMap::new(),
                report_only: 0,
            });
            *row.stages
                .entry(label(&stage))
                .or_default()
                .entry(label(&action))
                .or_default() += tally.count;
            row.report_only += tally.report_only;
        }
        let processing = self
            .processing
            .sorted()
            .into_iter()
            .map(|([w, ns, entity, j, class], row)| ProcessingRow {
                workload: owned(&w),
                namespace: owned(&ns),
                entity: owned(&entity),
                jurisdiction: owned(&j),
                classification: owned(&class),
                ..row
            })
            .collect();
        let tunnels = self
            .tunnels
            .sorted()
            .into_iter()
            .map(|([w, ns, entity, j], tally)| TunnelRow {
                workload: owned(&w),
                namespace: owned(&ns),
                entity: owned(&entity),
                jurisdiction: owned(&j),
                count: tally.count,
                report_only: tally.report_only,
            })
            .collect();
        let combos = self.combos.sorted();
        let rules = self.rules.sorted();
        let mut reroutes: Vec<(Key, Tally)> = self.routes.into_iter().collect();
        reroutes.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(&b.0)));
        let mut revisions: Vec<(Key, Seen)> = self.revisions.into_iter().collect();
        revisions.sort_by(|a, b| {
            let first = |s: &Seen| s.first.as_ref().map(|f| f.0);
            first(&a.1).cmp(&first(&b.1)).then_with(|| a.0.cmp(&b.0))
        });

        let mut outside = self.outside;
        outside.sort_by_key(|(time, _)| *time);
        let d = &self.dims;
        let folded: BTreeMap<&'static str, u64> = [
            ("workload", d.workload.folded),
            ("namespace", d.namespace.folded),
            ("entity", d.entity.folded),
            ("jurisdiction", d.jurisdiction.folded),
            ("classification", d.classification.folded),
            ("stage", d.stage.folded),
            ("action", d.action.folded),
            ("rule", d.rule.folded),
            ("route", d.route.folded),
            ("revision", d.revision.folded),
            ("day", d.day.folded),
            ("pii kind", d.pii_kind.folded),
            ("scan reason", d.scan_reason.folded),
        ]
        .into_iter()
        .chain(folded_views)
        .filter(|(_, n)| *n > 0)
        .collect();

        Report {
            generated_at,
            files,
            period: PeriodSummary {
                since: self.period.since.map(rfc3339),
                until: self.period.until.map(rfc3339),
                first_record: shown(&self.first),
                last_record: shown(&self.last),
            },
            records: self.records,
            unreadable_lines: self.unreadable,
            outside_period: self.outside_period,
            without_time: self.without_time,
            report_only: self.report_only,
            stages,
            reroutes: reroutes
                .into_iter()
                .map(|(route, t)| RouteRow {
                    route: owned(&route),
                    count: t.count,
                    report_only: t.report_only,
                })
                .collect(),
            rules: rules
                .into_iter()
                .map(|(k, t)| RuleRow {
                    stage: owned(&k.stage),
                    rule: owned(&k.rule),
                    action: owned(&k.action),
                    count: t.count,
                    report_only: t.report_only,
                })
                .collect(),
            days: days.into_values().collect(),
            processing,
            tunnels,
            pii: PiiSummary {
                records: self.pii_records,
                kinds: self.pii.iter().map(|(k, n)| (label(k), *n)).collect(),
            },
            scan: ScanSummary {
                incomplete_records: self.scan_incomplete,
                reasons: self.scan.iter().map(|(k, n)| (label(k), *n)).collect(),
            },
            revisions: revisions
                .into_iter()
                .map(|(revision, seen)| RevisionRow {
                    revision: owned(&revision),
                    first_seen: shown(&seen.first),
                    last_seen: shown(&seen.last),
                    records: seen.records,
                })
                .collect(),
            outside_eea: OutsideSummary {
                total: self.outside_total,
                not_listed: self.outside_total - outside.len() as u64,
                rows: outside.into_iter().map(|(_, row)| row).collect(),
            },
            folded,
            rows: combos
                .into_iter()
                .map(|(c, t)| CountRow {
                    day: owned(&c.day),
                    workload: owned(&c.workload),
                    namespace: owned(&c.namespace),
                    entity: owned(&c.entity),
                    jurisdiction: owned(&c.jurisdiction),
                    classification: owned(&c.classification),
                    stage: owned(&c.stage),
                    action: owned(&c.action),
                    enforced: c.enforced,
                    count: t.count,
                })
                .collect(),
        }
    }
}

// ---------------------------------------------------------------------------
// Reading.

/// Splits `reader` into lines, handing each to `line`; a line longer than
/// `max` bytes is handed as `None`, without ever being held whole.
pub fn for_each_line(
    reader: &mut impl BufRead,
    max: usize,
    mut line: impl FnMut(Option<&[u8]>),
) -> std::io::Result<()> {
    let mut current = Vec::new();
    let mut too_long = false;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            if too_long {
                line(None);
            } else if !current.is_empty() {
                line(Some(&current));
            }
            return Ok(());
        }
        let (chunk, end) = match buf.iter().position(|b| *b == b'\n') {
            Some(at) => (&buf[..at], Some(at + 1)),
            None => (buf, None),
        };
        if !too_long {
            if current.len() + chunk.len() > max {
                too_long = true;
                current = Vec::new();
            } else {
                current.extend_from_slice(chunk);
            }
        }
        let used = end.unwrap_or(buf.len());
        reader.consume(used);
        if end.is_some() {
            if too_long {
                line(None);
            } else {
                line(Some(&current));
            }
            current.clear();
            too_long = false;
        }
    }
}

/// Reads every file into one report. Fails, naming each, when any file
/// cannot be read.
pub fn read(
    files: &[PathBuf],
    period: Period,
    limits: Limits,
    generated_at: String,
) -> Result<Report, String> {
    let mut aggregator = Aggregator::new(period, limits);
    let mut summaries = Vec::new();
    let mut problems = Vec::new();
    for path in files {
        let mut summary = FileSummary {
            path: clip(&path.display().to_string(), 4096),
            records: 0,
            unreadable_lines: 0,
            skipped: 0,
        };
        let opened = std::fs::File::open(path).and_then(|file| {
            let mut reader = std::io::BufReader::with_capacity(64 * 1024, file);
            for_each_line(&mut reader, limits.line_bytes, |line| {
                let outcome = match line {
                    Some(line) => aggregator.add_line(line),
                    None => {
                        aggregator.add_unreadable();
                        Line::Unreadable
                    }
                };
                match outcome {
                    Line::Record => summary.records += 1,
                    Line::Unreadable => summary.unreadable_lines += 1,
                    Line::Skipped => summary.skipped += 1,
                    Line::Blank => {}
                }
            })
        });
        match opened {
            Ok(()) => summaries.push(summary),
            Err(e) => problems.push(format!("cannot read audit log {}: {e}", path.display())),
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    Ok(aggregator.finish(summaries, generated_at))
}

/// The report in `format`, and a line saying what was written.
pub fn run(
    files: &[PathBuf],
    out: &Path,
    format: Format,
    since: Option<&str>,
    until: Option<&str>,
) -> Result<(Vec<u8>, String), String> {
    let period = Period::parse(since, until)?;
    // Writing the report over one of its own inputs would lose the log.
    let out_file = std::fs::canonicalize(out).ok();
    if let Some(input) = files
        .iter()
        .find(|f| out_file.is_some() && std::fs::canonicalize(f).ok() == out_file)
    {
        return Err(format!(
            "--out {} is one of the audit logs read",
            input.display()
        ));
    }
    let now = OffsetDateTime::now_utc();
    let now = rfc3339(now.replace_nanosecond(0).unwrap_or(now));
    let report = read(files, period, Limits::default(), now)?;
    let bytes = match format {
        Format::Html => html::render(&report).into_bytes(),
        Format::Json => render_json(&report).into_bytes(),
        Format::Csv => render_csv(&report)?,
    };
    let said = format!(
        "wrote {}: {} records from {} file(s), {} unreadable line(s)",
        out.display(),
        report.records,
        report.files.len(),
        report.unreadable_lines
    );
    Ok((bytes, said))
}

// ---------------------------------------------------------------------------
// JSON and CSV.

pub fn render_json(report: &Report) -> String {
    let mut out = serde_json::to_string_pretty(report).unwrap_or_default();
    out.push('\n');
    out
}

/// A spreadsheet runs a cell that starts with `=`, `+`, `-` or `@` as a
/// formula; a value from the logs that does is prefixed with `'` (OWASP's
/// advice for CSV injection). Counts and days never start so.
fn csv_cell(value: Option<&str>) -> String {
    match value {
        None => String::new(),
        Some(v) if v.starts_with(['=', '+', '-', '@', '\t', '\r']) => format!("'{v}"),
        Some(v) => v.to_string(),
    }
}

pub fn render_csv(report: &Report) -> Result<Vec<u8>, String> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    let fail = |e: csv::Error| format!("writing CSV: {e}");
    writer
        .write_record([
            "day",
            "workload",
            "namespace",
            "entity",
            "jurisdiction",
            "classification",
            "stage",
            "action",
            "enforced",
            "count",
        ])
        .map_err(fail)?;
    for row in &report.rows {
        writer
            .write_record([
                csv_cell(row.day.as_deref()),
                csv_cell(row.workload.as_deref()),
                csv_cell(row.namespace.as_deref()),
                csv_cell(row.entity.as_deref()),
                csv_cell(row.jurisdiction.as_deref()),
                csv_cell(row.classification.as_deref()),
                csv_cell(row.stage.as_deref()),
                csv_cell(row.action.as_deref()),
                row.enforced.to_string(),
                row.count.to_string(),
            ])
            .map_err(fail)?;
    }
    writer
        .into_inner()
        .map_err(|e| format!("writing CSV: {}", e.error()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(v: Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    fn request(
        time: &str,
        workload: &str,
        jurisdiction: Option<&str>,
        classification: &str,
        action: &str,
    ) -> Value {
        json!({
            "time": time, "decision_id": "d1", "stage": "request", "revision": "r1",
            "rule": "egress.test", "reason": "", "action": action, "enforced": true,
            "destination": {"host": "h", "port": 443, "entity": "E", "jurisdiction": jurisdiction},
            "classification": classification, "pii": {}, "scan": "complete",
            "workload": workload, "namespace": "ns"
        })
    }

    fn report_of(lines: &[Vec<u8>], period: Period, limits: Limits) -> Report {
        let mut a = Aggregator::new(period, limits);
        for line in lines {
            a.add_line(line);
        }
        a.finish(Vec::new(), "now".into())
    }

    #[test]
    fn counts_actions_days_pii_scan_and_revisions() {
        let t1 = "2026-01-01T10:00:00.000Z";
        let t2 = "2026-01-02T23:59:59.999Z";
        let mut reroute = request(t2, "a", Some("US"), "personal", "reroute");
        reroute["route"] = json!("mistral");
        reroute["revision"] = json!("r2");
        reroute["pii"] = json!({"email": 2, "iban": 1, "bogus": -1, "big": 1e300});
        reroute["scan"] =
            json!([{"reason": "media"}, {"reason": "media"}, {"reason": "malformed"}]);
        let mut connect = request(t1, "a", Some("US"), "public", "tunnel");
        connect["stage"] = json!("connect");
        connect["enforced"] = json!(false);
        let lines = vec![
            record(request(t1, "a", Some("US"), "public", "allow")),
            record(request(t1, "b", Some("EU"), "personal", "deny")),
            record(reroute),
            record(connect),
            b"not json".to_vec(),
            b"[1,2]".to_vec(),
            b"{\"no_action\": true}".to_vec(),
            b"   ".to_vec(),
            vec![0xff, 0xfe],
        ];
        let r = report_of(&lines, Period::default(), Limits::default());
        assert_eq!(r.records, 4);
        assert_eq!(r.unreadable_lines, 4);
        assert_eq!(r.report_only, 1);
        let req = &r.stages["request"];
        assert_eq!(req.total, 3);
        assert_eq!(req.actions["allow"].count, 1);
        assert_eq!(req.actions["deny"].count, 1);
        assert_eq!(req.actions["reroute"].count, 1);
        assert_eq!(r.stages["connect"].actions["tunnel"].report_only, 1);
        assert_eq!(r.reroutes[0].route.as_deref(), Some("mistral"));
        assert_eq!(r.days.len(), 2);
        assert_eq!(r.days[0].day.as_deref(), Some("2026-01-01"));
        assert_eq!(r.days[0].stages["request"]["allow"], 1);
        assert_eq!(r.days[1].stages["request"]["reroute"], 1);
        assert_eq!(
            r.pii.kinds,
            BTreeMap::from([("email".into(), 2), ("iban".into(), 1)])
        );
        assert_eq!(r.pii.records, 1);
        assert_eq!(r.scan.incomplete_records, 1);
        assert_eq!(r.scan.reasons["media"], 2);
        assert_eq!(r.revisions.len(), 2);
        assert_eq!(r.revisions[0].revision.as_deref(), Some("r1"));
        assert_eq!(r.revisions[0].first_seen.as_deref(), Some(t1));
        assert_eq!(r.revisions[1].last_seen.as_deref(), Some(t2));
        assert_eq!(r.period.first_record.as_deref(), Some(t1));
        assert_eq!(r.period.last_record.as_deref(), Some(t2));
        assert_eq!(r.tunnels.len(), 1);
        assert_eq!(r.processing.len(), 3);
        assert_eq!(r.rows.iter().map(|c| c.count).sum::<u64>(), 4);
    }

    #[test]
    fn outside_the_eea_is_sensitive_data_that_reached_a_non_eea_entity() {
        let t = "2026-01-01T00:00:00Z";
        let mut report_mode = request(t, "w", Some("US"), "personal", "deny");
        report_mode["enforced"] = json!(false);
        let mut connect = request(t, "w", Some("US"), "personal", "allow");
        connect["stage"] = json!("connect");
        let cases = [
            (request(t, "w", Some("US"), "personal", "allow"), true),
            (
                request(t, "w", Some("CN"), "special-category", "allow"),
                true,
            ),
            (request(t, "w", Some("GB"), "confidential", "allow"), true),
            (request(t, "w", None, "personal", "allow"), true),
            (report_mode, true),
            (request(t, "w", Some("US"), "personal", "reroute"), false),
            (request(t, "w", Some("US"), "personal", "deny"), false),
            (request(t, "w", Some("US"), "internal", "allow"), false),
            (request(t, "w", Some("EU"), "personal", "allow"), false),
            (request(t, "w", Some("NO"), "personal", "allow"), false),
            (request(t, "w", Some("self"), "personal", "allow"), false),
            (connect, false),
        ];
        for (value, expected) in cases {
            let r = report_of(
                &[record(value.clone())],
                Period::default(),
                Limits::default(),
            );
            assert_eq!(r.outside_eea.total, u64::from(expected), "{value}");
        }
    }

    #[test]
    fn the_outside_list_is_capped_and_the_rest_counted() {
        let limits = Limits {
            listed: 3,
            ..Limits::default()
        };
        let lines: Vec<Vec<u8>> = (0..5)
            .map(|_| {
                record(request(
                    "2026-01-01T00:00:00Z",
                    "w",
                    Some("US"),
                    "personal",
                    "allow",
                ))
            })
            .collect();
        let r = report_of(&lines, Period::default(), limits);
        assert_eq!(r.outside_eea.total, 5);
        assert_eq!(r.outside_eea.rows.len(), 3);
        assert_eq!(r.outside_eea.not_listed, 2);
    }

    #[test]
    fn distinct_values_past_the_cap_are_grouped_as_other() {
        let limits = Limits {
            distinct: 2,
            combinations: 4,
            ..Limits::default()
        };
        let lines: Vec<Vec<u8>> = (0..6)
            .map(|i| {
                record(request(
                    "2026-01-01T00:00:00Z",
                    &format!("w{i}"),
                    Some("US"),
                    "public",
                    "allow",
                ))
            })
            .collect();
        let r = report_of(&lines, Period::default(), limits);
        assert_eq!(r.records, 6);
        assert_eq!(r.folded["workload"], 4);
        let other: u64 = r
            .processing
            .iter()
            .filter(|p| p.workload.as_deref() == Some(OTHER))
            .map(|p| p.total)
            .sum();
        assert_eq!(other, 4);

        // Past the cap of the detailed rows, every further combination is
        // one row; the figures counted on their own keys stay exact.
        let lines: Vec<Vec<u8>> = (0..6)
            .map(|i| {
                record(request(
                    &format!("2026-01-0{}T00:00:00Z", i + 1),
                    "w",
                    Some("US"),
                    "public",
                    "allow",
                ))
            })
            .collect();
        let r = report_of(
            &lines,
            Period::default(),
            Limits {
                distinct: 100,
                combinations: 100,
                rows: 4,
                ..limits
            },
        );
        assert_eq!(r.rows.len(), 5);
        assert_eq!(r.folded["detailed rows"], 2);
        assert_eq!(r.rows.iter().map(|c| c.count).sum::<u64>(), 6);
        assert_eq!(r.days.len(), 6);
        assert_eq!(r.stages["request"].actions["allow"].count, 6);
        assert_eq!(r.processing.len(), 1);
    }

    #[test]
    fn strings_are_clipped_and_invisible_characters_shown() {
        let long = "é".repeat(300);
        let clipped = clip(&long, 11);
        assert_eq!(clipped, format!("{}…", "é".repeat(5)));
        assert_eq!(clip("a\u{202e}b\nc", 100), "a\u{fffd}b\u{fffd}c");
    }

    #[test]
    fn period_bounds_are_inclusive_and_a_date_covers_its_day() {
        let p = Period::parse(Some("2026-01-02"), Some("2026-01-03")).unwrap();
        let at = |t: &str| OffsetDateTime::parse(t, &Rfc3339).unwrap();
        assert!(!p.contains(at("2026-01-01T23:59:59.999Z")));
        assert!(p.contains(at("2026-01-02T00:00:00Z")));
        assert!(p.contains(at("2026-01-03T23:59:59.999Z")));
        assert!(!p.contains(at("2026-01-04T00:00:00Z")));
        // Offsets compare as instants.
        assert!(p.contains(at("2026-01-04T00:30:00+01:00")));
        let p = Period::parse(None, Some("2026-01-02T12:00:00Z")).unwrap();
        assert!(p.contains(at("2026-01-02T12:00:00Z")));
        assert!(!p.contains(at("2026-01-02T12:00:00.001Z")));
        assert!(Period::parse(Some("yesterday"), None)
            .unwrap_err()
            .contains("yesterday"));
        assert!(Period::parse(Some("2026-02-01"), Some("2026-01-01")).is_err());
    }

    #[test]
    fn a_period_skips_records_outside_it_and_without_a_time() {
        let mut no_time = request("x", "w", Some("US"), "public", "allow");
        no_time["time"] = json!("not a time");
        let lines = vec![
            record(request(
                "2026-01-01T00:00:00Z",
                "w",
                Some("US"),
                "public",
                "allow",
            )),
            record(request(
                "2026-01-02T00:00:00Z",
                "w",
                Some("US"),
                "public",
                "allow",
            )),
            record(no_time.clone()),
        ];
        let p = Period::parse(Some("2026-01-02"), None).unwrap();
        let r = report_of(&lines, p, Limits::default());
        assert_eq!((r.records, r.outside_period, r.without_time), (1, 1, 1));
        // Without a period, a record without a time still counts, under no day.
        let r = report_of(&[record(no_time)], Period::default(), Limits::default());
        assert_eq!(r.records, 1);
        assert_eq!(r.days[0].day, None);
    }

    #[test]
    fn lines_are_split_and_long_ones_never_held() {
        let input = b"one\n\ntoo long line\nfour\nlast-unterminated".to_vec();
        let mut reader = std::io::BufReader::with_capacity(4, &input[..]);
        let mut seen = Vec::new();
        for_each_line(&mut reader, 8, |l| seen.push(l.map(|l| l.to_vec()))).unwrap();
        assert_eq!(
            seen,
            vec![
                Some(b"one".to_vec()),
                Some(Vec::new()),
                None,
                Some(b"four".to_vec()),
                None,
            ]
        );
    }

    #[test]
    fn hostile_strings_are_text_in_html_and_inert_in_csv() {
        let mut v = request(
            "2026-01-01T00:00:00Z",
            "<script>alert(1)</script>",
            Some("US"),
            "personal",
            "allow",
        );
        v["namespace"] = json!("=HYPERLINK(\"x\")");
        v["destination"]["entity"] = json!("A \"quoted\", entity\nwith a newline");
        let r = report_of(&[record(v)], Period::default(), Limits::default());
        let html = html::render(&r);
        assert!(!html.contains("<script"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        let csv = String::from_utf8(render_csv(&r).unwrap()).unwrap();
        let mut reader = csv::Reader::from_reader(csv.as_bytes());
        let row = reader.records().next().unwrap().unwrap();
        assert_eq!(&row[1], "<script>alert(1)</script>");
        assert_eq!(&row[2], "'=HYPERLINK(\"x\")");
        assert_eq!(&row[3], "A \"quoted\", entity\u{fffd}with a newline");
        let json: Value = serde_json::from_str(&render_json(&r)).unwrap();
        assert_eq!(
            json["outside_eea"]["rows"][0]["workload"],
            "<script>alert(1)</script>"
        );
    }
}
