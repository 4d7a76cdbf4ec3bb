//! Routing rules: the "mappings" a tenant's admins configure so messages are suggested for,
//! or filed automatically to, the right records — or are never filed automatically.
//!
//! # A rule
//! Rules are evaluated in `position` order (1, 2, …; kept contiguous). Each has a `name`
//! (unique in the tenant, shown to users as the reason for a suggestion), an `enabled`
//! flag (disabled rules are skipped, and the dry run lists them as skipped), one or more
//! `conditions` that must **all** hold (AND; a rule without conditions is refused), an
//! `action`, its `targets` (record ids), and a `stop` flag.
//!
//! # Conditions
//! `{field, op, value, negate}`; `negate: true` inverts the condition.
//!
//! | field | ops | meaning |
//! |---|---|---|
//! | `from`, `to`, `cc`, `recipient` (to or cc), `participant` (from, to or cc) | `address`, `domain` | some address of the field equals `value` (case-insensitive) / is in domain `value` or a subdomain of it |
//! | `subject` | `regex`, `contains` | case-insensitive regular expression (size-limited, checked on save) / substring |
//! | `body` | `contains` | case-insensitive substring of the text body (HTML converted to text when there is no text part); the first [`MAX_BODY_CHARS`] characters are searched |
//! | `attachment_name` | `glob` | some attachment's display name matches the glob (case-insensitive, e.g. `*.pdf`) |
//!
//! A negated address condition holds when *no* address of the field matches.
//!
//! # Actions
//! - `suggest`: the targets are suggested, with the rule's name as the reason;
//! - `auto_file`: the message is filed to the targets automatically (by the `system` user);
//! - `never_auto_file`: the message is confidential: no automatic filing happens for it,
//!   whatever other rules say, earlier or later. Suggestions still appear, and the targets
//!   that auto-filing rules named are suggested instead. Its own targets (optional) are
//!   suggested.
//!
//! `stop`: when a rule with `stop` matches, the rules after it are not evaluated — except
//! `never_auto_file` rules, which are always evaluated: a `stop` placed earlier can never
//! switch confidentiality off (the dry run shows them as "evaluated despite stop").
//!
//! # Evaluation
//! [`decide`] is the pure matching logic over (rules, message, body text); [`evaluate`]
//! loads the tenant's rules (at most [`MAX_RULES`]), extracts the body text only when an
//! enabled rule looks at it, runs [`decide`], and resolves target record ids to
//! [`RecordTarget`]s, dropping (with a note) targets that no longer exist or are closed.
//! Regexes and globs are compiled once per evaluation. The result, a [`Decision`], lists
//! every rule with whether it matched and why (per condition), then what happens:
//! `suggest`, `auto_file` (empty when confidential) and `confidential_by`. A record appears
//! at most once in each list (the first rule that named it is the reason); a record may be
//! in both lists.
//!
//! Record visibility (teams, ethical walls) is not applied here: callers that show
//! suggestions to a user filter them for that user.

use std::cell::OnceCell;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, AnyPool, Row};
use utoipa::ToSchema;

use crate::audit::{self, AuditEvent};
use crate::error::{AppError, AppResult};
use crate::filing::TargetRef;
use crate::mail::ParsedMessage;
use crate::tenancy::Tenant;
use crate::time_fmt::now_rfc3339;

pub const MAX_RULES: usize = 200;
pub const MAX_CONDITIONS: usize = 20;
pub const MAX_TARGETS: usize = 20;
pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_VALUE_CHARS: usize = 500;
/// How much of the body text `body contains` looks at.
pub const MAX_BODY_CHARS: usize = 1 << 20;
/// Compiled size limit of a subject regex.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

// ---------------------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------------------

/// What part of the message a condition looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    From,
    To,
    Cc,
    /// To or Cc.
    Recipient,
    /// From, To or Cc.
    Participant,
    Subject,
    Body,
    AttachmentName,
}

impl Field {
    pub const ALL: [Field; 8] = [
        Field::From,
        Field::To,
        Field::Cc,
        Field::Recipient,
        Field::Participant,
        Field::Subject,
        Field::Body,
        Field::AttachmentName,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Field::From => "from",
            Field::To => "to",
            Field::Cc => "cc",
            Field::Recipient => "recipient",
            Field::Participant => "participant",
            Field::Subject => "subject",
            Field::Body => "body",
            Field::AttachmentName => "attachment_name",
        }
    }
    /// A label for forms.
    pub fn label(self) -> &'static str {
        match self {
            Field::From => "From",
            Field::To => "To",
            Field::Cc => "Cc",
            Field::Recipient => "Recipient (to or cc)",
            Field::Participant => "Participant (from, to or cc)",
            Field::Subject => "Subject",
            Field::Body => "Body",
            Field::AttachmentName => "Attachment name",
        }
    }
    /// The operators this field takes.
    pub fn ops(self) -> &'static [Op] {
        match self {
            Field::From | Field::To | Field::Cc | Field::Recipient | Field::Participant => {
                &[Op::Address, Op::Domain]
            }
            Field::Subject => &[Op::Regex, Op::Contains],
            Field::Body => &[Op::Contains],
            Field::AttachmentName => &[Op::Glob],
        }
    }
    fn is_address(self) -> bool {
        matches!(
            self,
            Field::From | Field::To | Field::Cc | Field::Recipient | Field::Participant
        )
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Field {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Field::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| format!("unknown field {s:?}"))
    }
}

/// How a condition compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// The address equals the value (case-insensitive).
    Address,
    /// The address's domain equals the value or is a subdomain of it.
    Domain,
    /// Case-insensitive regular expression.
    Regex,
    /// Case-insensitive substring.
    Contains,
    /// Case-insensitive filename glob (`*.pdf`).
    Glob,
}

impl Op {
    pub const ALL: [Op; 5] = [Op::Address, Op::Domain, Op::Regex, Op::Contains, Op::Glob];
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Address => "address",
            Op::Domain => "domain",
            Op::Regex => "regex",
            Op::Contains => "contains",
            Op::Glob => "glob",
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Op::Address => "is address",
            Op::Domain => "is in domain",
            Op::Regex => "matches regex",
            Op::Contains => "contains",
            Op::Glob => "matches glob",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Op {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Op::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| format!("unknown operator {s:?}"))
    }
}

/// One condition of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub field: Field,
    pub op: Op,
    pub value: String,
    /// Inverts the condition.
    #[serde(default)]
    pub negate: bool,
}

impl Condition {
    /// `from is in domain acme.com`, `not subject matches regex ^draft`.
    pub fn summary(&self) -> String {
        format!(
            "{}{} {} {}",
            if self.negate { "not " } else { "" },
            self.field,
            self.op.label(),
            self.value
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Suggest,
    AutoFile,
    NeverAutoFile,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Suggest, Action::AutoFile, Action::NeverAutoFile];
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Suggest => "suggest",
            Action::AutoFile => "auto_file",
            Action::NeverAutoFile => "never_auto_file",
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Action::Suggest => "Suggest",
            Action::AutoFile => "File automatically",
            Action::NeverAutoFile => "Never file automatically (confidential)",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("unknown action {s:?}"))
    }
}

/// A stored rule. `targets` are record ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub id: String,
    pub position: i64,
    pub name: String,
    pub enabled: bool,
    pub conditions: Vec<Condition>,
    pub action: Action,
    pub targets: Vec<String>,
    pub stop: bool,
    pub created_at: String,
    pub updated_at: String,
}

/// A record a decision routes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RecordTarget {
    /// Record id.
    pub id: String,
    /// `matter`, `case` or `contract`.
    pub kind: String,
    /// The record's reference (`M-2024-017`).
    pub reference: String,
    pub title: String,
}

impl RecordTarget {
    /// `matter:M-2024-017`.
    pub fn target(&self) -> String {
        format!("{}:{}", self.kind, self.reference)
    }
    /// The form [`crate::filing::file_message`] takes.
    pub fn target_ref(&self) -> TargetRef {
        TargetRef {
            kind: self.kind.clone(),
            id: self.reference.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Decisions
// ---------------------------------------------------------------------------------------

/// Why one condition held or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConditionTrace {
    pub field: Field,
    pub op: Op,
    pub value: String,
    pub negate: bool,
    /// Whether the condition (negation applied) holds.
    pub matched: bool,
    /// The concrete reason, e.g. `from dana@acme.com is in domain acme.com`.
    pub because: String,
}

/// What happened to a rule during an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleOutcome {
    Matched,
    NotMatched,
    /// Disabled: skipped.
    Disabled,
    /// After a matching `stop` rule: not evaluated.
    NotReached,
}

impl RuleOutcome {
    pub fn label(self) -> &'static str {
        match self {
            RuleOutcome::Matched => "matched",
            RuleOutcome::NotMatched => "not matched",
            RuleOutcome::Disabled => "skipped (disabled)",
            RuleOutcome::NotReached => "not evaluated (stopped earlier)",
        }
    }
}

/// One rule in a [`Decision`], in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RuleTrace {
    pub rule_id: String,
    pub position: i64,
    pub name: String,
    pub action: Action,
    pub enabled: bool,
    pub stop: bool,
    pub outcome: RuleOutcome,
    pub matched: bool,
    /// Evaluation stopped after this rule (it matched and has `stop`).
    pub stopped_here: bool,
    /// Per condition (empty when the rule was not evaluated).
    pub conditions: Vec<ConditionTrace>,
    /// E.g. "evaluated despite stop: never_auto_file rules always apply".
    pub note: Option<String>,
}

/// A record and the rule that routed the message there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Routed {
    pub record: RecordTarget,
    /// The rule's name (the reason to show).
    pub rule: String,
}

/// The outcome of evaluating a tenant's rules against one message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Decision {
    /// Every rule, in order, with whether it matched and why.
    pub rules: Vec<RuleTrace>,
    /// The rule whose `stop` ended evaluation, if any.
    pub stopped_by: Option<String>,
    /// Records to suggest (open records only), each with the rule's name as the reason.
    pub suggest: Vec<Routed>,
    /// Records to file to automatically (empty when `confidential_by` is set).
    pub auto_file: Vec<Routed>,
    /// The `never_auto_file` rule that made the message confidential.
    pub confidential_by: Option<String>,
    /// Targets dropped (deleted or closed records), auto-filing held back, ….
    pub notes: Vec<String>,
}

impl Decision {
    /// Whether anything would be filed automatically.
    pub fn auto_files(&self) -> bool {
        !self.auto_file.is_empty()
    }
}

/// [`decide`]'s result: record ids, not yet resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub rules: Vec<RuleTrace>,
    pub stopped_by: Option<String>,
    /// (record id, rule name), first rule per record.
    pub suggest: Vec<(String, String)>,
    pub auto_file: Vec<(String, String)>,
    pub confidential_by: Option<String>,
    pub notes: Vec<String>,
}

// ---------------------------------------------------------------------------------------
// Matching (pure)
// ---------------------------------------------------------------------------------------

#[derive(Clone)]
enum Matcher {
    Address(String),
    Domain(String),
    Regex(regex::Regex),
    Contains(String),
    Glob(globset::GlobMatcher),
    /// A stored condition that no longer compiles (never matches).
    Broken(String),
}

fn build_regex(p: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(p)
        .case_insensitive(true)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(_) => {
                "the regular expression is too large once compiled".to_string()
            }
            other => other.to_string(),
        })
}

fn build_glob(p: &str) -> Result<globset::GlobMatcher, String> {
    globset::GlobBuilder::new(p)
        .case_insensitive(true)
        .literal_separator(false)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| e.kind().to_string())
}

/// Compiled regexes and globs, shared across evaluations (a card evaluates every rule, and
/// compiling dozens of regexes per card dominated its cost). Bounded: cleared when full.
static COMPILED: std::sync::LazyLock<std::sync::Mutex<HashMap<(Op, String), Matcher>>> =
    std::sync::LazyLock::new(Default::default);
const COMPILED_MAX: usize = 4096;

fn compile(c: &Condition) -> Matcher {
    if !matches!(c.op, Op::Regex | Op::Glob) {
        return compile_uncached(c);
    }
    let key = (c.op, c.value.clone());
    if let Some(m) = COMPILED.lock().expect("matcher cache").get(&key) {
        return m.clone();
    }
    let m = compile_uncached(c);
    let mut cache = COMPILED.lock().expect("matcher cache");
    if cache.len() >= COMPILED_MAX {
        cache.clear();
    }
    cache.insert(key, m.clone());
    m
}

fn compile_uncached(c: &Condition) -> Matcher {
    match c.op {
        Op::Address => Matcher::Address(c.value.trim().to_lowercase()),
        Op::Domain => Matcher::Domain(norm_domain(&c.value)),
        Op::Regex => match build_regex(&c.value) {
            Ok(r) => Matcher::Regex(r),
            Err(e) => Matcher::Broken(e),
        },
        Op::Contains => Matcher::Contains(c.value.to_lowercase()),
        Op::Glob => match build_glob(&c.value) {
            Ok(g) => Matcher::Glob(g),
            Err(e) => Matcher::Broken(e),
        },
    }
}

fn norm_domain(v: &str) -> String {
    v.trim()
        .trim_start_matches('@')
        .trim_start_matches('.')
        .to_lowercase()
}

fn in_domain(address: &str, domain: &str) -> bool {
    let Some((_, d)) = address.rsplit_once('@') else {
        return false;
    };
    let d = d.to_lowercase();
    d == domain
        || (d.len() > domain.len()
            && d.ends_with(domain)
            && d.as_bytes()[d.len() - domain.len() - 1] == b'.')
}

/// Shortens a value for a reason text.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max).collect();
        out.push('…');
        out
    }
}

struct Facts<'a> {
    msg: &'a ParsedMessage,
    body: Option<&'a str>,
    body_lower: OnceCell<String>,
}

impl Facts<'_> {
    fn addresses(&self, field: Field) -> Vec<(&'static str, &str)> {
        let m = self.msg;
        let lists: &[(&'static str, &[crate::mail::Mailbox])] = match field {
            Field::From => &[("from", &m.from)],
            Field::To => &[("to", &m.to)],
            Field::Cc => &[("cc", &m.cc)],
            Field::Recipient => &[("to", &m.to), ("cc", &m.cc)],
            _ => &[("from", &m.from), ("to", &m.to), ("cc", &m.cc)],
        };
        lists
            .iter()
            .flat_map(|(name, list)| {
                list.iter()
                    .filter_map(move |b| b.address.as_deref().map(|a| (*name, a)))
            })
            .collect()
    }
    fn body_lower(&self) -> &str {
        self.body_lower.get_or_init(|| {
            let b = self.body.unwrap_or("");
            let cut: String = b.chars().take(MAX_BODY_CHARS).collect();
            cut.to_lowercase()
        })
    }
}

/// (raw match, the concrete fact).
fn check(c: &Condition, m: &Matcher, f: &Facts) -> (bool, String) {
    if let Matcher::Broken(e) = m {
        return (false, format!("the {} pattern is not valid: {e}", c.op));
    }
    if c.field.is_address() {
        let addrs = f.addresses(c.field);
        let test = |a: &str| match m {
            Matcher::Address(v) => a.eq_ignore_ascii_case(v),
            Matcher::Domain(d) => in_domain(a, d),
            _ => false,
        };
        let rel = match m {
            Matcher::Domain(d) => format!("is in domain {d}"),
            Matcher::Address(v) => format!("is {v}"),
            _ => String::new(),
        };
        if let Some((name, a)) = addrs.iter().find(|(_, a)| test(a)) {
            return (true, format!("{name} {a} {rel}"));
        }
        let seen = if addrs.is_empty() {
            format!("the message has no {} address", c.field)
        } else {
            let list: Vec<String> = addrs.iter().take(5).map(|(_, a)| a.to_string()).collect();
            let more = if addrs.len() > 5 { ", …" } else { "" };
            format!("{}: {}{more}", c.field, list.join(", "))
        };
        return (false, format!("no {} address {rel} ({seen})", c.field));
    }
    match (c.field, m) {
        (Field::Subject, Matcher::Regex(r)) => {
            let s = f.msg.subject.as_deref().unwrap_or("");
            match r.find(s) {
                Some(hit) => (
                    true,
                    format!(
                        "subject {:?} matches /{}/ at {:?}",
                        clip(s, 120),
                        c.value,
                        clip(hit.as_str(), 60)
                    ),
                ),
                None => (
                    false,
                    format!("subject {:?} does not match /{}/", clip(s, 120), c.value),
                ),
            }
        }
        (Field::Subject, Matcher::Contains(v)) => {
            let s = f.msg.subject.as_deref().unwrap_or("");
            let yes = s.to_lowercase().contains(v.as_str());
            (
                yes,
                format!(
                    "subject {:?} {} {:?}",
                    clip(s, 120),
                    if yes { "contains" } else { "does not contain" },
                    c.value
                ),
            )
        }
        (Field::Body, Matcher::Contains(v)) => {
            if f.body.is_none_or(|b| b.trim().is_empty()) {
                return (false, "the message has no text body".into());
            }
            let yes = f.body_lower().contains(v.as_str());
            (
                yes,
                format!(
                    "body {} {:?}",
                    if yes { "contains" } else { "does not contain" },
                    c.value
                ),
            )
        }
        (Field::AttachmentName, Matcher::Glob(g)) => {
            let names: Vec<&str> = f
                .msg
                .attachments
                .iter()
                .map(|a| a.display_name.as_str())
                .collect();
            if let Some(n) = names.iter().find(|n| g.is_match(n)) {
                return (true, format!("attachment {n} matches {}", c.value));
            }
            if names.is_empty() {
                (false, "the message has no attachments".into())
            } else {
                let list: Vec<&str> = names.iter().take(5).copied().collect();
                let more = if names.len() > 5 { ", …" } else { "" };
                (
                    false,
                    format!(
                        "no attachment matches {} (attachments: {}{more})",
                        c.value,
                        list.join(", ")
                    ),
                )
            }
        }
        _ => (
            false,
            format!("field {} does not take operator {}", c.field, c.op),
        ),
    }
}

fn trace_condition(c: &Condition, m: &Matcher, f: &Facts) -> ConditionTrace {
    let (raw, fact) = check(c, m, f);
    let matched = raw != c.negate;
    let because = match (c.negate, raw) {
        (false, _) => fact,
        (true, false) => format!("{fact}, as \"not\" requires"),
        (true, true) => format!("{fact}, but the condition is negated"),
    };
    ConditionTrace {
        field: c.field,
        op: c.op,
        value: c.value.clone(),
        negate: c.negate,
        matched,
        because,
    }
}

fn push_once(list: &mut Vec<(String, String)>, record: &str, rule: &str) {
    if !list.iter().any(|(r, _)| r == record) {
        list.push((record.to_string(), rule.to_string()));
    }
}

/// The pure matching logic: `rules` in order (sorted by position here), against `msg` and its
/// body text. Regexes and globs are compiled once per call.
pub fn decide(rules: &[Rule], msg: &ParsedMessage, body: Option<&str>) -> Outcome {
    let mut ordered: Vec<&Rule> = rules.iter().collect();
    ordered.sort_by(|a, b| a.position.cmp(&b.position).then(a.id.cmp(&b.id)));
    let facts = Facts {
        msg,
        body,
        body_lower: OnceCell::new(),
    };
    let mut out = Outcome::default();
    let mut held_back: Vec<(String, String)> = Vec::new();
    for rule in ordered {
        let mut trace = RuleTrace {
            rule_id: rule.id.clone(),
            position: rule.position,
            name: rule.name.clone(),
            action: rule.action,
            enabled: rule.enabled,
            stop: rule.stop,
            outcome: RuleOutcome::NotMatched,
            matched: false,
            stopped_here: false,
            conditions: Vec::new(),
            note: None,
        };
        if !rule.enabled {
            trace.outcome = RuleOutcome::Disabled;
            trace.note = Some("disabled: skipped".into());
            out.rules.push(trace);
            continue;
        }
        let after_stop = out.stopped_by.is_some();
        if after_stop && rule.action != Action::NeverAutoFile {
            trace.outcome = RuleOutcome::NotReached;
            trace.note = Some(format!(
                "not evaluated: rule {:?} stopped processing",
                out.stopped_by.as_deref().unwrap_or("")
            ));
            out.rules.push(trace);
            continue;
        }
        trace.conditions = rule
            .conditions
            .iter()
            .map(|c| trace_condition(c, &compile(c), &facts))
            .collect();
        let matched = !trace.conditions.is_empty() && trace.conditions.iter().all(|c| c.matched);
        trace.matched = matched;
        trace.outcome = if matched {
            RuleOutcome::Matched
        } else {
            RuleOutcome::NotMatched
        };
        if after_stop {
            trace.note = Some("evaluated despite stop: never_auto_file rules always apply".into());
        }
        if matched {
            match rule.action {
                Action::Suggest => {
                    for t in &rule.targets {
                        push_once(&mut out.suggest, t, &rule.name);
                    }
                }
                Action::AutoFile => {
                    for t in &rule.targets {
                        push_once(&mut held_back, t, &rule.name);
                    }
                }
                Action::NeverAutoFile => {
                    if out.confidential_by.is_none() {
                        out.confidential_by = Some(rule.name.clone());
                    }
                    if !after_stop {
                        for t in &rule.targets {
                            push_once(&mut out.suggest, t, &rule.name);
                        }
                    }
                }
            }
            if rule.stop && !after_stop {
                trace.stopped_here = true;
                out.stopped_by = Some(rule.name.clone());
            }
        }
        out.rules.push(trace);
    }
    match &out.confidential_by {
        None => out.auto_file = held_back,
        Some(by) => {
            for (rec, rule) in held_back {
                out.notes.push(format!(
                    "auto-filing by rule {rule:?} held back: confidential because of rule {by:?}; suggested instead"
                ));
                push_once(&mut out.suggest, &rec, &rule);
            }
        }
    }
    out
}

/// The text of a message's body: its text parts, or its HTML parts converted to text when
/// it has no text part, joined; at most [`MAX_BODY_CHARS`] characters. Blocking and
/// CPU-bound (it parses `raw`): run it through [`crate::mail::guard::isolated`]. `None` if it
/// cannot be parsed.
pub fn body_text(raw: &[u8]) -> Option<String> {
    let ceiling = crate::mail::guard::ceiling_limits();
    let text = crate::mail::guard::with_message(raw, &ceiling, |msg| {
        let mut out = String::new();
        for t in crate::mail::content::body_texts(raw, msg, 100) {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&t);
            if out.len() > MAX_BODY_CHARS * 4 {
                break;
            }
        }
        Ok(out.chars().take(MAX_BODY_CHARS).collect::<String>())
    });
    text.ok()
}

// ---------------------------------------------------------------------------------------
// Evaluation (database)
// ---------------------------------------------------------------------------------------

/// Evaluates the tenant's rules against a parsed message (`raw` is its bytes, read for the
/// body text only when an enabled rule has a `body` condition).
pub async fn evaluate(pool: &AnyPool, msg: &ParsedMessage, raw: &[u8]) -> AppResult<Decision> {
    let rules = list_rules(pool).await?;
    let needs_body = rules
        .iter()
        .any(|r| r.enabled && r.conditions.iter().any(|c| c.field == Field::Body));
    let body = if needs_body {
        let owned = raw.to_vec();
        crate::mail::guard::isolated(move || Ok(body_text(&owned))).await?
    } else {
        None
    };
    let outcome = decide(&rules, msg, body.as_deref());
    resolve(pool, outcome).await
}

/// Record ids → open [`RecordTarget`]s; others are dropped with a note.
async fn resolve(pool: &AnyPool, o: Outcome) -> AppResult<Decision> {
    let ids: BTreeSet<&str> = o
        .suggest
        .iter()
        .chain(o.auto_file.iter())
        .map(|(id, _)| id.as_str())
        .collect();
    let records = records_by_id(pool, &ids.into_iter().collect::<Vec<_>>()).await?;
    let mut notes = o.notes;
    let mut keep = |list: Vec<(String, String)>, what: &str| -> Vec<Routed> {
        let mut out = Vec::new();
        for (id, rule) in list {
            match records.get(&id) {
                Some((rec, status)) if status == "open" => out.push(Routed {
                    record: rec.clone(),
                    rule,
                }),
                Some((rec, status)) => notes.push(format!(
                    "{what} target {} of rule {rule:?} dropped: the record is {status}",
                    rec.target()
                )),
                None => notes.push(format!(
                    "{what} target {id} of rule {rule:?} dropped: the record no longer exists"
                )),
            }
        }
        out
    };
    let suggest = keep(o.suggest, "suggest");
    let auto_file = keep(o.auto_file, "auto-file");
    Ok(Decision {
        rules: o.rules,
        stopped_by: o.stopped_by,
        suggest,
        auto_file,
        confidential_by: o.confidential_by,
        notes,
    })
}

/// Records by id, with their status.
async fn records_by_id(
    pool: &AnyPool,
    ids: &[&str],
) -> AppResult<HashMap<String, (RecordTarget, String)>> {
    let mut out = HashMap::new();
    for chunk in ids.chunks(100) {
        if chunk.is_empty() {
            continue;
        }
        let ph: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT id, kind, reference, title, status FROM records WHERE id IN ({})",
            ph.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(*id);
        }
        for r in q.fetch_all(pool).await? {
            let rec = RecordTarget {
                id: r.try_get("id")?,
                kind: r.try_get("kind")?,
                reference: r.try_get("reference")?,
                title: r.try_get("title")?,
            };
            out.insert(rec.id.clone(), (rec, r.try_get("status")?));
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Storage and administration
// ---------------------------------------------------------------------------------------

const COLS: &str =
    "id, position, name, enabled, conditions, action, targets, stop, created_at, updated_at";

fn rule_from_row(r: &sqlx::any::AnyRow) -> AppResult<Rule> {
    let bad =
        |what: &str, e: String| AppError::internal(anyhow::anyhow!("stored rule {what}: {e}"));
    let conditions: String = r.try_get("conditions")?;
    let targets: String = r.try_get("targets")?;
    let action: String = r.try_get("action")?;
    Ok(Rule {
        id: r.try_get("id")?,
        position: r.try_get("position")?,
        name: r.try_get("name")?,
        enabled: r.try_get::<i64, _>("enabled")? != 0,
        conditions: serde_json::from_str(&conditions)
            .map_err(|e| bad("conditions", e.to_string()))?,
        action: action.parse().map_err(|e| bad("action", e))?,
        targets: serde_json::from_str(&targets).map_err(|e| bad("targets", e.to_string()))?,
        stop: r.try_get::<i64, _>("stop")? != 0,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// Every rule, in evaluation order.
pub async fn list_rules(pool: &AnyPool) -> AppResult<Vec<Rule>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLS} FROM rules ORDER BY position, id LIMIT {}",
        MAX_RULES + 1
    ))
    .fetch_all(pool)
    .await?;
    rows.iter().map(rule_from_row).collect()
}

fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

pub async fn get_rule(pool: &AnyPool, id: &str) -> AppResult<Option<Rule>> {
    if !valid_id(id) {
        return Ok(None);
    }
    let row = sqlx::query(&format!("SELECT {COLS} FROM rules WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(rule_from_row).transpose()
}

async fn get_rule_tx(conn: &mut AnyConnection, id: &str) -> AppResult<Option<Rule>> {
    if !valid_id(id) {
        return Ok(None);
    }
    let row = sqlx::query(&format!("SELECT {COLS} FROM rules WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(rule_from_row).transpose()
}

fn no_rule() -> AppError {
    AppError::not_found("no such rule")
}

/// A new rule. `targets`: record ids or `kind:reference` (`matter:M-1`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRule {
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    pub conditions: Vec<Condition>,
    pub action: Action,
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default)]
    pub stop: bool,
}

fn yes() -> bool {
    true
}

/// A change to a rule: only the fields given change.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RulePatch {
    pub name: Option<String>,
    pub enabled: Option<bool>,
    pub conditions: Option<Vec<Condition>>,
    pub action: Option<Action>,
    pub targets: Option<Vec<String>>,
    pub stop: Option<bool>,
}

/// Checks and normalises one condition (`i` is 1-based, for messages).
pub fn validate_condition(i: usize, c: &Condition) -> Result<Condition, AppError> {
    if !c.field.ops().contains(&c.op) {
        let ok: Vec<&str> = c.field.ops().iter().map(|o| o.as_str()).collect();
        return Err(AppError::unprocessable(
            "invalid-condition",
            format!(
                "condition {i}: field `{}` does not take operator `{}`; use {}",
                c.field,
                c.op,
                ok.join(" or ")
            ),
        ));
    }
    let value = c.value.trim();
    if value.is_empty() {
        return Err(AppError::unprocessable(
            "invalid-condition",
            format!("condition {i}: the value is empty"),
        ));
    }
    if value.chars().count() > MAX_VALUE_CHARS {
        return Err(AppError::unprocessable(
            "invalid-condition",
            format!("condition {i}: the value is longer than {MAX_VALUE_CHARS} characters"),
        ));
    }
    if value.chars().any(|ch| ch.is_control()) {
        return Err(AppError::unprocessable(
            "invalid-condition",
            format!("condition {i}: the value contains control characters"),
        ));
    }
    let value = match c.op {
        Op::Address => {
            let v = value.to_lowercase();
            let ok = v
                .rsplit_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty())
                && !v.chars().any(char::is_whitespace);
            if !ok {
                return Err(AppError::unprocessable(
                    "invalid-condition",
                    format!("condition {i}: {value:?} is not an email address"),
                ));
            }
            v
        }
        Op::Domain => {
            let v = norm_domain(value);
            let ok = !v.is_empty()
                && v.len() <= 253
                && !v.starts_with('-')
                && !v.ends_with('.')
                && !v.contains("..")
                && v.chars()
                    .all(|ch| ch.is_alphanumeric() || ch == '-' || ch == '.');
            if !ok {
                return Err(AppError::unprocessable(
                    "invalid-condition",
                    format!("condition {i}: {value:?} is not a domain (like acme.com)"),
                ));
            }
            v
        }
        Op::Regex => {
            build_regex(value).map_err(|e| {
                AppError::unprocessable(
                    "invalid-regex",
                    format!("condition {i}: the subject regex {value:?} is not valid: {e}"),
                )
            })?;
            value.to_string()
        }
        Op::Glob => {
            build_glob(value).map_err(|e| {
                AppError::unprocessable(
                    "invalid-glob",
                    format!("condition {i}: the attachment glob {value:?} is not valid: {e}"),
                )
            })?;
            value.to_string()
        }
        Op::Contains => value.to_string(),
    };
    Ok(Condition {
        field: c.field,
        op: c.op,
        value,
        negate: c.negate,
    })
}

/// Checks a rule's parts; returns the normalised name and conditions.
fn validate_parts(
    name: &str,
    conditions: &[Condition],
    action: Action,
    targets: &[String],
) -> Result<(String, Vec<Condition>), AppError> {
    let name = name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(|c| c.is_control())
    {
        return Err(AppError::unprocessable(
            "invalid-name",
            format!("a rule's name must be 1-{MAX_NAME_CHARS} characters of text"),
        ));
    }
    if conditions.is_empty() {
        return Err(AppError::unprocessable(
            "no-conditions",
            "a rule needs at least one condition (a rule without conditions would match every message)",
        ));
    }
    if conditions.len() > MAX_CONDITIONS {
        return Err(AppError::unprocessable(
            "too-many-conditions",
            format!("a rule has at most {MAX_CONDITIONS} conditions"),
        ));
    }
    let conditions = conditions
        .iter()
        .enumerate()
        .map(|(i, c)| validate_condition(i + 1, c))
        .collect::<Result<Vec<_>, _>>()?;
    if targets.is_empty() && action != Action::NeverAutoFile {
        return Err(AppError::unprocessable(
            "no-targets",
            format!("a `{action}` rule needs at least one target record"),
        ));
    }
    if targets.len() > MAX_TARGETS {
        return Err(AppError::unprocessable(
            "too-many-targets",
            format!("a rule has at most {MAX_TARGETS} targets"),
        ));
    }
    Ok((name.to_string(), conditions))
}

/// Resolves targets (record ids or `kind:reference`) to record ids, in order, deduplicated.
/// Unknown records → 422; closed records → 422 unless already among `current`.
async fn resolve_targets(
    conn: &mut AnyConnection,
    targets: &[String],
    current: &[String],
) -> AppResult<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for t in targets {
        let t = t.trim();
        let row = if let Some(r) = TargetRef::parse(t).filter(|_| t.contains(':')) {
            sqlx::query("SELECT id, status FROM records WHERE kind = $1 AND reference = $2")
                .bind(r.kind.to_lowercase())
                .bind(r.id)
                .fetch_optional(&mut *conn)
                .await?
        } else if valid_id(t) {
            sqlx::query("SELECT id, status FROM records WHERE id = $1")
                .bind(t.to_ascii_lowercase())
                .fetch_optional(&mut *conn)
                .await?
        } else {
            None
        };
        let Some(row) = row else {
            return Err(AppError::unprocessable(
                "unknown-target",
                format!("target {t:?} is not a record of this tenant (use a record id or kind:reference, like matter:M-1)"),
            ));
        };
        let id: String = row.try_get("id")?;
        let status: String = row.try_get("status")?;
        if status != "open" && !current.contains(&id) {
            return Err(AppError::unprocessable(
                "record-closed",
                format!("target {t:?} is {status}; choose an open record"),
            ));
        }
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

async fn name_taken(conn: &mut AnyConnection, name: &str, except: Option<&str>) -> AppResult<bool> {
    let rows = sqlx::query("SELECT id, name FROM rules")
        .fetch_all(&mut *conn)
        .await?;
    let lower = name.to_lowercase();
    Ok(rows.iter().any(|r| {
        let id: String = r.get(0);
        let n: String = r.get(1);
        Some(id.as_str()) != except && n.to_lowercase() == lower
    }))
}

fn name_conflict(name: &str) -> AppError {
    AppError::new(
        StatusCode::CONFLICT,
        "exists",
        format!("a rule named {name:?} already exists"),
    )
}

fn js<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("serialising plain data")
}

/// Creates a rule at the end of the list. Audited `rule.created`.
pub async fn create_rule(tenant: &Tenant, input: NewRule, actor: &str) -> AppResult<Rule> {
    let (name, conditions) =
        validate_parts(&input.name, &input.conditions, input.action, &input.targets)?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let _w = tenant.write_guard().await;
    let mut tx = tenant.begin().await?;
    audit::lock_chain(&mut tx).await?;
    let targets = resolve_targets(&mut tx, &input.targets, &[]).await?;
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM rules")
        .fetch_one(&mut *tx)
        .await?
        .get(0);
    if n as usize >= MAX_RULES {
        return Err(AppError::unprocessable(
            "too-many-rules",
            format!("a tenant has at most {MAX_RULES} rules; delete one first"),
        ));
    }
    if name_taken(&mut tx, &name, None).await? {
        return Err(name_conflict(&name));
    }
    let position = n + 1;
    let now = now_rfc3339();
    sqlx::query(&format!(
        "INSERT INTO rules ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)"
    ))
    .bind(&id)
    .bind(position)
    .bind(&name)
    .bind(input.enabled as i64)
    .bind(js(&conditions))
    .bind(input.action.as_str())
    .bind(js(&targets))
    .bind(input.stop as i64)
    .bind(&now)
    .execute(&mut *tx)
    .await?;
    audit::append(
        &mut tx,
        &AuditEvent::new(actor, "rule.created", &id).detail(serde_json::json!({
            "name": name, "position": position, "enabled": input.enabled,
            "conditions": conditions, "action": input.action.as_str(),
            "targets": targets, "stop": input.stop,
        })),
    )
    .await?;
    tx.commit().await?;
    get_rule(&tenant.db, &id)
        .await?
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("rule vanished")))
}

/// Changes the given fields of a rule. Audited `rule.updated` with the changed fields.
pub async fn update_rule(
    tenant: &Tenant,
    id: &str,
    patch: RulePatch,
    actor: &str,
) -> AppResult<Rule> {
    let _w = tenant.write_guard().await;
    let mut tx = tenant.begin().await?;
    audit::lock_chain(&mut tx).await?;
    let old = get_rule_tx(&mut tx, id).await?.ok_or_else(no_rule)?;
    let action = patch.action.unwrap_or(old.action);
    let targets_in = patch.targets.clone().unwrap_or_else(|| old.targets.clone());
    let (name, conditions) = validate_parts(
        patch.name.as_deref().unwrap_or(&old.name),
        patch.conditions.as_deref().unwrap_or(&old.conditions),
        action,
        &targets_in,
    )?;
    let targets = match &patch.targets {
        Some(t) => resolve_targets(&mut tx, t, &old.targets).await?,
        None => old.targets.clone(),
    };
    if name != old.name && name_taken(&mut tx, &name, Some(&old.id)).await? {
        return Err(name_conflict(&name));
    }
    let new = Rule {
        name,
        enabled: patch.enabled.unwrap_or(old.enabled),
        conditions,
        action,
        targets,
        stop: patch.stop.unwrap_or(old.stop),
        ..old.clone()
    };
    let mut changed = serde_json::Map::new();
    if new.name != old.name {
        changed.insert("name".into(), new.name.clone().into());
    }
    if new.enabled != old.enabled {
        changed.insert("enabled".into(), new.enabled.into());
    }
    if new.conditions != old.conditions {
        changed.insert("conditions".into(), serde_json::json!(new.conditions));
    }
    if new.action != old.action {
        changed.insert("action".into(), new.action.as_str().into());
    }
    if new.targets != old.targets {
        changed.insert("targets".into(), serde_json::json!(new.targets));
    }
    if new.stop != old.stop {
        changed.insert("stop".into(), new.stop.into());
    }
    if changed.is_empty() {
        return Ok(old);
    }
    sqlx::query(
        "UPDATE rules SET name = $1, enabled = $2, conditions = $3, action = $4, targets = $5, stop = $6, updated_at = $7 WHERE id = $8",
    )
    .bind(&new.name)
    .bind(new.enabled as i64)
    .bind(js(&new.conditions))
    .bind(new.action.as_str())
    .bind(js(&new.targets))
    .bind(new.stop as i64)
    .bind(now_rfc3339())
    .bind(&new.id)
    .execute(&mut *tx)
    .await?;
    audit::append(
        &mut tx,
        &AuditEvent::new(actor, "rule.updated", &new.id)
            .detail(serde_json::json!({"name": old.name, "changed": changed})),
    )
    .await?;
    tx.commit().await?;
    get_rule(&tenant.db, id)
        .await?
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("rule vanished")))
}

/// Rewrites positions as 1..n in the given order.
async fn renumber(conn: &mut AnyConnection, order: &[(String, i64)]) -> AppResult<()> {
    for (i, (id, pos)) in order.iter().enumerate() {
        let want = i as i64 + 1;
        if *pos != want {
            sqlx::query("UPDATE rules SET position = $1 WHERE id = $2")
                .bind(want)
                .bind(id)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

async fn order_of(conn: &mut AnyConnection) -> AppResult<Vec<(String, i64)>> {
    Ok(
        sqlx::query("SELECT id, position FROM rules ORDER BY position, id")
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect(),
    )
}

/// Deletes a rule; the ones after it move up. Audited `rule.deleted`.
pub async fn delete_rule(tenant: &Tenant, id: &str, actor: &str) -> AppResult<()> {
    let _w = tenant.write_guard().await;
    let mut tx = tenant.begin().await?;
    audit::lock_chain(&mut tx).await?;
    let old = get_rule_tx(&mut tx, id).await?.ok_or_else(no_rule)?;
    sqlx::query("DELETE FROM rules WHERE id = $1")
        .bind(&old.id)
        .execute(&mut *tx)
        .await?;
    let order = order_of(&mut tx).await?;
    renumber(&mut tx, &order).await?;
    audit::append(
        &mut tx,
        &AuditEvent::new(actor, "rule.deleted", &old.id).detail(serde_json::json!({
            "name": old.name, "position": old.position, "action": old.action.as_str(),
        })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Moves a rule to `position` (1-based); the others shift. Audited `rule.moved`.
pub async fn move_rule(tenant: &Tenant, id: &str, position: i64, actor: &str) -> AppResult<Rule> {
    let _w = tenant.write_guard().await;
    let mut tx = tenant.begin().await?;
    audit::lock_chain(&mut tx).await?;
    let old = get_rule_tx(&mut tx, id).await?.ok_or_else(no_rule)?;
    let mut order = order_of(&mut tx).await?;
    let n = order.len() as i64;
    if !(1..=n).contains(&position) {
        return Err(AppError::unprocessable(
            "invalid-position",
            format!("position must be 1..={n}"),
        ));
    }
    let from = order
        .iter()
        .position(|(i, _)| *i == old.id)
        .ok_or_else(no_rule)?;
    let item = order.remove(from);
    order.insert(position as usize - 1, item);
    // Each entry keeps its current position, so renumber rewrites only rows that moved.
    renumber(&mut tx, &order).await?;
    if from as i64 + 1 != position || old.position != position {
        audit::append(
            &mut tx,
            &AuditEvent::new(actor, "rule.moved", &old.id).detail(serde_json::json!({
                "name": old.name, "from": from as i64 + 1, "to": position,
            })),
        )
        .await?;
    }
    tx.commit().await?;
    get_rule(&tenant.db, id)
        .await?
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("rule vanished")))
}

/// A rule's target as shown to admins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct RuleTarget {
    pub id: String,
    pub kind: String,
    pub reference: String,
    pub title: String,
    /// `open`, `closed`, or `missing` (the record no longer exists).
    pub status: String,
}

impl RuleTarget {
    pub fn target(&self) -> String {
        if self.kind.is_empty() {
            self.id.clone()
        } else {
            format!("{}:{}", self.kind, self.reference)
        }
    }
}

/// A rule as the admin API shows it (targets resolved).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RuleView {
    pub id: String,
    pub position: i64,
    pub name: String,
    pub enabled: bool,
    pub conditions: Vec<Condition>,
    pub action: Action,
    pub targets: Vec<RuleTarget>,
    pub stop: bool,
    pub created_at: String,
    pub updated_at: String,
}

impl RuleView {
    /// `from is in domain acme.com AND …`.
    pub fn conditions_summary(&self) -> String {
        self.conditions
            .iter()
            .map(Condition::summary)
            .collect::<Vec<_>>()
            .join(" and ")
    }
}

/// Rules with their targets resolved.
pub async fn views(pool: &AnyPool, rules: Vec<Rule>) -> AppResult<Vec<RuleView>> {
    let ids: BTreeSet<&str> = rules
        .iter()
        .flat_map(|r| r.targets.iter().map(String::as_str))
        .collect();
    let records = records_by_id(pool, &ids.into_iter().collect::<Vec<_>>()).await?;
    Ok(rules
        .into_iter()
        .map(|r| RuleView {
            targets: r
                .targets
                .iter()
                .map(|id| match records.get(id) {
                    Some((rec, status)) => RuleTarget {
                        id: rec.id.clone(),
                        kind: rec.kind.clone(),
                        reference: rec.reference.clone(),
                        title: rec.title.clone(),
                        status: status.clone(),
                    },
                    None => RuleTarget {
                        id: id.clone(),
                        kind: String::new(),
                        reference: String::new(),
                        title: "(record no longer exists)".into(),
                        status: "missing".into(),
                    },
                })
                .collect(),
            id: r.id,
            position: r.position,
            name: r.name,
            enabled: r.enabled,
            conditions: r.conditions,
            action: r.action,
            stop: r.stop,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
        .collect())
}

pub async fn view(pool: &AnyPool, rule: Rule) -> AppResult<RuleView> {
    Ok(views(pool, vec![rule]).await?.remove(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limits;

    fn limits() -> Limits {
        Limits {
            max_message_bytes: 1 << 20,
            max_parts: 1000,
            max_depth: 32,
            max_header_bytes: 1 << 20,
            ..Limits::default()
        }
    }

    const EML: &str = "From: Dana Client <Dana@Sub.Acme.com>\r\n\
To: Alice <alice@a.test>, ann@a.test\r\n\
Cc: Carl <carl@widget.org>\r\n\
Subject: Re: Draft settlement M-1\r\n\
Message-ID: <x1@acme.com>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b\"\r\n\
\r\n\
--b\r\n\
Content-Type: text/plain\r\n\
\r\n\
This is PRIVILEGED and confidential.\r\n\
--b\r\n\
Content-Type: application/pdf\r\n\
Content-Disposition: attachment; filename=\"Draft v2.PDF\"\r\n\
\r\n\
%PDF-1.4\r\n\
--b--\r\n";

    fn msg() -> ParsedMessage {
        crate::mail::parse(EML.as_bytes(), &limits()).unwrap()
    }

    fn cond(field: Field, op: Op, value: &str) -> Condition {
        Condition {
            field,
            op,
            value: value.into(),
            negate: false,
        }
    }

    fn not(mut c: Condition) -> Condition {
        c.negate = true;
        c
    }

    fn rule(pos: i64, name: &str, conds: Vec<Condition>, action: Action, targets: &[&str]) -> Rule {
        Rule {
            id: format!("{pos:032x}"),
            position: pos,
            name: name.into(),
            enabled: true,
            conditions: conds,
            action,
            targets: targets.iter().map(|s| s.to_string()).collect(),
            stop: false,
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    /// One condition against the sample message: (matched, because).
    fn one(c: Condition) -> (bool, String) {
        let m = msg();
        let body = body_text(EML.as_bytes());
        let o = decide(
            &[rule(1, "r", vec![c], Action::Suggest, &["t"])],
            &m,
            body.as_deref(),
        );
        let t = &o.rules[0].conditions[0];
        (t.matched, t.because.clone())
    }

    #[test]
    fn address_fields_and_ops() {
        let (ok, why) = one(cond(Field::From, Op::Address, "dana@sub.acme.com"));
        assert!(ok, "{why}");
        assert_eq!(why, "from dana@sub.acme.com is dana@sub.acme.com");
        let (ok, why) = one(cond(Field::From, Op::Domain, "acme.com"));
        assert!(ok);
        assert_eq!(why, "from dana@sub.acme.com is in domain acme.com");
        assert!(one(cond(Field::From, Op::Domain, "sub.acme.com")).0);
        // Not a suffix at a label boundary.
        assert!(!one(cond(Field::From, Op::Domain, "cme.com")).0);
        assert!(!one(cond(Field::From, Op::Domain, "a.test")).0);
        assert!(one(cond(Field::To, Op::Address, "ANN@a.test")).0);
        assert!(!one(cond(Field::To, Op::Domain, "widget.org")).0);
        assert!(one(cond(Field::Cc, Op::Domain, "widget.org")).0);
        assert!(!one(cond(Field::Cc, Op::Domain, "a.test")).0);
        assert!(one(cond(Field::Recipient, Op::Domain, "widget.org")).0);
        assert!(one(cond(Field::Recipient, Op::Address, "alice@a.test")).0);
        assert!(!one(cond(Field::Recipient, Op::Domain, "acme.com")).0);
        assert!(one(cond(Field::Participant, Op::Domain, "acme.com")).0);
        let (ok, why) = one(cond(Field::Participant, Op::Address, "carl@widget.org"));
        assert!(ok);
        assert_eq!(why, "cc carl@widget.org is carl@widget.org");
        let (ok, why) = one(cond(Field::To, Op::Domain, "acme.com"));
        assert!(!ok);
        assert_eq!(
            why,
            "no to address is in domain acme.com (to: alice@a.test, ann@a.test)"
        );
    }

    #[test]
    fn subject_body_and_attachment_ops() {
        let (ok, why) = one(cond(Field::Subject, Op::Regex, r"draft\s+SETTLEMENT"));
        assert!(ok);
        assert!(why.contains("matches /draft\\s+SETTLEMENT/"), "{why}");
        let (ok, why) = one(cond(Field::Subject, Op::Regex, "^invoice"));
        assert!(!ok);
        assert_eq!(
            why,
            "subject \"Re: Draft settlement M-1\" does not match /^invoice/"
        );
        assert!(one(cond(Field::Subject, Op::Contains, "DRAFT")).0);
        assert!(!one(cond(Field::Subject, Op::Contains, "invoice")).0);
        let (ok, why) = one(cond(Field::Body, Op::Contains, "privileged"));
        assert!(ok);
        assert_eq!(why, "body contains \"privileged\"");
        assert!(!one(cond(Field::Body, Op::Contains, "attorney")).0);
        let (ok, why) = one(cond(Field::AttachmentName, Op::Glob, "*.pdf"));
        assert!(ok);
        assert_eq!(why, "attachment Draft v2.PDF matches *.pdf");
        let (ok, why) = one(cond(Field::AttachmentName, Op::Glob, "*.docx"));
        assert!(!ok);
        assert_eq!(
            why,
            "no attachment matches *.docx (attachments: Draft v2.PDF)"
        );
    }

    #[test]
    fn html_only_body_is_converted_to_text() {
        let raw = b"From: a@b.c\r\nSubject: x\r\nContent-Type: text/html\r\n\r\n<p>Strictly <b>Privileged</b></p>\r\n";
        let m = crate::mail::parse(raw, &limits()).unwrap();
        let body = body_text(raw).unwrap();
        assert!(!body.contains("<b>"), "{body}");
        let o = decide(
            &[rule(
                1,
                "r",
                vec![cond(Field::Body, Op::Contains, "strictly privileged")],
                Action::Suggest,
                &["t"],
            )],
            &m,
            Some(&body),
        );
        assert!(o.rules[0].matched);
        let o = decide(
            &[rule(
                1,
                "r",
                vec![cond(Field::Body, Op::Contains, "x")],
                Action::Suggest,
                &["t"],
            )],
            &m,
            None,
        );
        assert_eq!(
            o.rules[0].conditions[0].because,
            "the message has no text body"
        );
    }

    #[test]
    fn negation_inverts_and_explains() {
        let (ok, why) = one(not(cond(Field::From, Op::Domain, "acme.com")));
        assert!(!ok);
        assert_eq!(
            why,
            "from dana@sub.acme.com is in domain acme.com, but the condition is negated"
        );
        let (ok, why) = one(not(cond(Field::AttachmentName, Op::Glob, "*.exe")));
        assert!(ok);
        assert!(why.ends_with("as \"not\" requires"), "{why}");
        assert!(one(not(cond(Field::Subject, Op::Regex, "^invoice"))).0);
    }

    #[test]
    fn all_conditions_must_hold_and_suggest_targets() {
        let m = msg();
        let rules = [
            rule(
                1,
                "Acme drafts",
                vec![
                    cond(Field::From, Op::Domain, "acme.com"),
                    cond(Field::Subject, Op::Contains, "draft"),
                ],
                Action::Suggest,
                &["m1"],
            ),
            rule(
                2,
                "Acme invoices",
                vec![
                    cond(Field::From, Op::Domain, "acme.com"),
                    cond(Field::Subject, Op::Contains, "invoice"),
                ],
                Action::Suggest,
                &["m2"],
            ),
            rule(
                3,
                "Also acme",
                vec![cond(Field::From, Op::Domain, "acme.com")],
                Action::Suggest,
                &["m1", "c1"],
            ),
        ];
        let o = decide(&rules, &m, None);
        assert_eq!(o.rules[0].outcome, RuleOutcome::Matched);
        assert_eq!(o.rules[1].outcome, RuleOutcome::NotMatched);
        assert!(o.rules[1].conditions[0].matched && !o.rules[1].conditions[1].matched);
        assert_eq!(
            o.suggest,
            vec![
                ("m1".to_string(), "Acme drafts".to_string()),
                ("c1".to_string(), "Also acme".to_string())
            ]
        );
        assert!(o.auto_file.is_empty() && o.confidential_by.is_none());
    }

    #[test]
    fn stop_ends_evaluation_and_disabled_rules_are_skipped() {
        let m = msg();
        let acme = || vec![cond(Field::From, Op::Domain, "acme.com")];
        let mut r1 = rule(1, "off", acme(), Action::AutoFile, &["x"]);
        r1.enabled = false;
        let mut r2 = rule(2, "first", acme(), Action::AutoFile, &["m1"]);
        r2.stop = true;
        let r3 = rule(3, "later", acme(), Action::Suggest, &["m2"]);
        // Rules arrive out of order: position decides.
        let o = decide(&[r3, r2, r1], &m, None);
        assert_eq!(o.rules[0].outcome, RuleOutcome::Disabled);
        assert!(o.rules[0].conditions.is_empty());
        assert_eq!(o.rules[1].outcome, RuleOutcome::Matched);
        assert!(o.rules[1].stopped_here);
        assert_eq!(o.rules[2].outcome, RuleOutcome::NotReached);
        assert_eq!(o.stopped_by.as_deref(), Some("first"));
        assert_eq!(o.auto_file, vec![("m1".to_string(), "first".to_string())]);
        assert!(o.suggest.is_empty());
        // A stop rule that does not match stops nothing.
        let mut r2 = rule(
            2,
            "first",
            vec![cond(Field::Subject, Op::Contains, "zzz")],
            Action::AutoFile,
            &["m1"],
        );
        r2.stop = true;
        let o = decide(
            &[r2, rule(3, "later", acme(), Action::Suggest, &["m2"])],
            &m,
            None,
        );
        assert!(o.stopped_by.is_none());
        assert_eq!(o.suggest, vec![("m2".to_string(), "later".to_string())]);
    }

    #[test]
    fn never_auto_file_overrides_earlier_and_later_auto_file() {
        let m = msg();
        let acme = || vec![cond(Field::From, Op::Domain, "acme.com")];
        let conf = rule(
            2,
            "Privileged",
            vec![cond(Field::Body, Op::Contains, "privileged")],
            Action::NeverAutoFile,
            &[],
        );
        let body = body_text(EML.as_bytes());
        // Earlier auto_file.
        let o = decide(
            &[
                rule(1, "Acme auto", acme(), Action::AutoFile, &["m1"]),
                conf.clone(),
            ],
            &m,
            body.as_deref(),
        );
        assert!(o.auto_file.is_empty());
        assert_eq!(o.confidential_by.as_deref(), Some("Privileged"));
        // The held-back target is suggested instead.
        assert_eq!(o.suggest, vec![("m1".to_string(), "Acme auto".to_string())]);
        assert!(o.notes[0].contains("held back"), "{:?}", o.notes);
        // Later auto_file.
        let o = decide(
            &[
                conf.clone(),
                rule(3, "Acme auto", acme(), Action::AutoFile, &["m1"]),
            ],
            &m,
            body.as_deref(),
        );
        assert!(o.auto_file.is_empty());
        assert_eq!(o.confidential_by.as_deref(), Some("Privileged"));
        // Even an earlier auto_file with `stop` cannot switch confidentiality off.
        let mut stopper = rule(1, "Acme auto", acme(), Action::AutoFile, &["m1"]);
        stopper.stop = true;
        let o = decide(&[stopper, conf.clone()], &m, body.as_deref());
        assert!(o.auto_file.is_empty());
        assert_eq!(o.confidential_by.as_deref(), Some("Privileged"));
        assert_eq!(o.rules[1].outcome, RuleOutcome::Matched);
        assert!(o.rules[1].note.as_deref().unwrap().contains("despite stop"));
        // Without the confidential match, auto-filing happens.
        let o = decide(
            &[
                rule(1, "Acme auto", acme(), Action::AutoFile, &["m1"]),
                conf,
            ],
            &m,
            None,
        );
        assert_eq!(
            o.auto_file,
            vec![("m1".to_string(), "Acme auto".to_string())]
        );
        assert!(o.confidential_by.is_none());
    }

    #[test]
    fn validation_is_precise() {
        let slug = |c: Condition| validate_condition(1, &c).unwrap_err().slug();
        assert_eq!(
            slug(cond(Field::Subject, Op::Regex, "(unclosed")),
            "invalid-regex"
        );
        assert_eq!(
            slug(cond(Field::Subject, Op::Regex, r"\w{1000}{1000}")),
            "invalid-regex"
        );
        assert_eq!(
            slug(cond(Field::AttachmentName, Op::Glob, "[z-a")),
            "invalid-glob"
        );
        assert_eq!(
            slug(cond(Field::Subject, Op::Domain, "acme.com")),
            "invalid-condition"
        );
        assert_eq!(
            slug(cond(Field::From, Op::Address, "acme.com")),
            "invalid-condition"
        );
        assert_eq!(
            slug(cond(Field::From, Op::Domain, "a b")),
            "invalid-condition"
        );
        assert_eq!(
            slug(cond(Field::Body, Op::Contains, "  ")),
            "invalid-condition"
        );
        let ok = validate_condition(1, &cond(Field::From, Op::Domain, " @ACME.com ")).unwrap();
        assert_eq!(ok.value, "acme.com");
        assert_eq!(
            validate_parts("x", &[], Action::Suggest, &["t".into()])
                .unwrap_err()
                .slug(),
            "no-conditions"
        );
        assert_eq!(
            validate_parts(
                "x",
                &[cond(Field::Body, Op::Contains, "a")],
                Action::Suggest,
                &[]
            )
            .unwrap_err()
            .slug(),
            "no-targets"
        );
        assert!(validate_parts(
            "x",
            &[cond(Field::Body, Op::Contains, "a")],
            Action::NeverAutoFile,
            &[]
        )
        .is_ok());
    }
}
