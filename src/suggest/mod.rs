//! What the add-on shows for an open message: where it is already filed, ranked suggestions
//! with their reasons, and record search. One place decides which records a user may see
//! and file to ([`fileable`]), so the cards and the JSON API apply the same rules.

use std::collections::BTreeSet;

use regex::Regex;
use serde::Serialize;
use sqlx::{AnyPool, Row};

use crate::access::visible_sql;
use crate::directory::User;
use crate::error::{AppError, AppResult};
use crate::mail::ParsedMessage;

pub mod model;
pub mod terms;

/// Record references in subjects: `M-2024-017`, `C-88`, `K-2025-003`. Tenants can set their own.
pub const DEFAULT_SUBJECT_PATTERN: &str = r"\b[A-Za-z]{1,4}-\d{1,6}(?:-\d{1,6})?\b";
pub const MAX_SUGGESTIONS: usize = 10;

#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct RecordRef {
    pub kind: String,
    pub id: String,
    pub title: String,
}

impl RecordRef {
    pub fn target(&self) -> String {
        format!("{}:{}", self.kind, self.id)
    }
}

/// A record the message probably belongs to, with the reasons in words.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Suggestion {
    pub target: RecordRef,
    /// Why, in words, the strongest signal's reasons first.
    pub reasons: Vec<String>,
    /// `thread`, `rule`, `subject` (a reference), `words` (the record's title or client
    /// words), `contact` or `history`: the signal that gave the most points.
    #[schema(value_type = String)]
    pub source: &'static str,
    /// The model's points for this record (the sum over signals; see the README's "How
    /// suggestions are ranked"). Comparable within one answer, not across versions.
    pub score: f64,
    /// The probability, 0–1, that this is the right record: calibrated so that of the
    /// suggestions with a confidence of at least 0.9, at least 90% were right in the
    /// evaluation (`docket eval suggestions`).
    pub confidence: f64,
    /// The confidence in a word: `likely` (≥ 0.9), `possible` (≥ 0.5) or `unsure`.
    #[schema(value_type = String)]
    pub likelihood: &'static str,
}

/// A filing of this message the user may see.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AlreadyFiled {
    pub filing_id: String,
    pub target: RecordRef,
    /// The filer's email address (`system@docket.invalid` for a rule's filing).
    pub filed_by: String,
    /// Who filed it, in words: the filer's name (or address), or "firm rule “Name”".
    pub filed_by_name: String,
    /// The routing rule that filed it, when a rule did.
    pub rule: Option<String>,
    /// The filer's note (null when none, and for a rule's filing).
    pub note: Option<String>,
    pub filed_at: String,
    /// A link path to the filing's read-only page (`/view/filings/{id}?t=…`, valid 30
    /// minutes), to put after docket's address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub view_path: Option<String>,
}

/// A record the firm's `auto_file` rule files the message to whenever anyone files it:
/// shown apart from the suggestions, never as a choice.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuleFiling {
    pub target: RecordRef,
    /// The rule's name.
    pub rule: String,
}

/// The rule named in the note docket writes on a rule's filing
/// (`filed automatically by rule “Name”`, `filing::flow`): rule filings are the system
/// user's, and nobody edits their notes.
fn rule_of_note(note: Option<&str>) -> Option<String> {
    let rest = note?.strip_prefix("filed automatically by rule “")?;
    Some(rest.strip_suffix('”').unwrap_or(rest).to_string())
}

/// Whether `user` may file to records at all. Record teams and ethical walls narrow this
/// per record: every query below goes through [`crate::access::visible_sql`].
pub fn fileable(user: &User) -> bool {
    user.role.can_file()
}

pub async fn setting(pool: &AnyPool, key: &str) -> AppResult<Option<String>> {
    Ok(sqlx::query("SELECT value FROM settings WHERE key = $1")
        .bind(key)
        .fetch_optional(pool)
        .await?
        .map(|r| r.get(0)))
}

pub async fn set_setting(pool: &AnyPool, key: &str, value: &str, actor: &str) -> AppResult<()> {
    write_setting(pool, key, Some(value), actor).await
}

/// Removes a setting (back to its default), audited `setting.changed` with a null value.
pub async fn clear_setting(pool: &AnyPool, key: &str, actor: &str) -> AppResult<()> {
    write_setting(pool, key, None, actor).await
}

async fn write_setting(
    pool: &AnyPool,
    key: &str,
    value: Option<&str>,
    actor: &str,
) -> AppResult<()> {
    let mut tx = crate::tenancy::db::begin(pool).await?;
    crate::audit::lock_chain(&mut tx).await?;
    sqlx::query("DELETE FROM settings WHERE key = $1")
        .bind(key)
        .execute(&mut *tx)
        .await?;
    if let Some(v) = value {
        sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2)")
            .bind(key)
            .bind(v)
            .execute(&mut *tx)
            .await?;
    }
    crate::audit::append(
        &mut tx,
        &crate::audit::AuditEvent::new(actor, "setting.changed", key)
            .detail(serde_json::json!({ "value": value })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The tenant's subject pattern, validated.
pub async fn subject_pattern(pool: &AnyPool) -> AppResult<Regex> {
    let p = setting(pool, "subject_pattern")
        .await?
        .unwrap_or_else(|| DEFAULT_SUBJECT_PATTERN.to_string());
    Regex::new(&p)
        .map_err(|e| AppError::internal(anyhow::anyhow!("stored subject pattern is invalid: {e}")))
}

pub fn validate_pattern(p: &str) -> Result<Regex, String> {
    if p.len() > 500 {
        return Err("the pattern is longer than 500 characters".into());
    }
    regex::RegexBuilder::new(p)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| format!("not a valid regular expression: {e}"))
}

/// Where this message is already filed, among records the user may see.
pub async fn already_filed(
    pool: &AnyPool,
    user: &User,
    dedup_key: &str,
) -> AppResult<Vec<AlreadyFiled>> {
    let rows = sqlx::query(&format!(
        "SELECT f.id, f.filed_at, u.email, r.kind, r.reference, r.title, u.display_name, f.note, \
         f.filed_by FROM messages m \
         JOIN filings f ON f.message_id = m.id JOIN records r ON r.id = f.record_id JOIN users u ON u.id = f.filed_by \
         WHERE m.dedup_key = $1 AND {} ORDER BY f.filed_at, r.kind, r.reference",
        visible_sql("r", 2)
    ))
    .bind(dedup_key)
    .bind(&user.id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let (email, name, note) = (
                r.get::<String, _>(2),
                r.get::<String, _>(6),
                r.get::<Option<String>, _>(7),
            );
            let by_system = r.get::<String, _>(8) == crate::access::SYSTEM_USER;
            let rule = by_system.then(|| rule_of_note(note.as_deref())).flatten();
            let filed_by_name = match (&rule, name.trim()) {
                (Some(rule), _) => format!("firm rule “{rule}”"),
                (None, "") => email.clone(),
                (None, name) => name.to_string(),
            };
            AlreadyFiled {
                filing_id: r.get(0),
                filed_at: r.get(1),
                filed_by: email,
                filed_by_name,
                note: if by_system { None } else { note },
                rule,
                target: RecordRef {
                    kind: r.get(3),
                    id: r.get(4),
                    title: r.get(5),
                },
                view_path: None,
            }
        })
        .collect())
}

fn rec_from(r: &sqlx::any::AnyRow, offset: usize) -> RecordRef {
    RecordRef {
        kind: r.get(offset),
        id: r.get(offset + 1),
        title: r.get(offset + 2),
    }
}

fn placeholders(start: usize, n: usize) -> String {
    (start..start + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the suggestion sources look at.
pub struct MessageFacts<'a> {
    pub message: &'a ParsedMessage,
    /// The key the message is, or would be, stored under (`filing::dedup::resolve_key`):
    /// what "already filed" looks up.
    pub dedup_key: &'a str,
    pub gmail_thread_id: Option<&'a str>,
    /// The tenant's own domains: colleagues are not "contacts".
    pub own_domains: &'a [String],
    /// The raw message (routing rules may look at its body).
    pub raw: &'a [u8],
}

/// `r.status = 'open'` and visible to the user bound as `$user_param`.
fn open(user_param: usize) -> String {
    format!("r.status = 'open' AND {}", visible_sql("r", user_param))
}

/// Ranked suggestions from one scoring model ([`model`]): earlier filings in the same
/// thread (Gmail thread, In-Reply-To, References), the firm's routing rules, references in
/// the subject, the record's title and client words in the subject, attachment names and
/// body, participants (sender, forwarded senders, To, Cc) matching record contacts, where
/// the firm filed earlier mail from these addresses and organisations, and the user's own
/// filings. Only open records the user may file to, whatever their score; records in
/// `filed` (where the message already is) are left out. Each suggestion keeps its reasons
/// and a calibrated confidence.
///
/// The targets of the firm's `auto_file` rules are not suggestions: they are filed whenever
/// the message is, whatever the user ticks, so they come back apart as [`RuleFiling`]s
/// (those the user may see, open and not already filed) and are never offered as a choice.
pub async fn suggestions(
    pool: &AnyPool,
    user: &User,
    facts: &MessageFacts<'_>,
    filed: &[AlreadyFiled],
) -> AppResult<(Vec<Suggestion>, Vec<RuleFiling>)> {
    if !fileable(user) {
        return Ok((Vec::new(), Vec::new()));
    }
    let (scored, by_rules) = score(pool, user, facts).await?;
    let filed: BTreeSet<String> = filed.iter().map(|f| f.target.target()).collect();
    let mut by_rules = by_rules;
    by_rules.retain(|r| !filed.contains(&r.target.target()));
    let automatic: BTreeSet<String> = by_rules.iter().map(|r| r.target.target()).collect();
    let shown: Vec<model::Scored> = scored
        .into_iter()
        .filter(|s| {
            let k = s.target.target();
            !filed.contains(&k) && !automatic.contains(&k)
        })
        .collect();
    Ok((present(shown), by_rules))
}

/// Every candidate record, best first, with the `auto_file` rule targets apart.
pub async fn score(
    pool: &AnyPool,
    user: &User,
    facts: &MessageFacts<'_>,
) -> AppResult<(Vec<model::Scored>, Vec<RuleFiling>)> {
    let (m, uid) = (facts.message, user.id.as_str());
    let parties = model::outside_parties(m, facts.own_domains, &user.email);
    let sender = parties
        .iter()
        .find(|p| p.role == model::Role::Sender)
        .map(|p| p.address.as_str());
    // The signals' queries run at once, each on its own connection and board; the boards
    // are then merged strongest kind first, as if the signals had run one after another.
    let mut b: [model::Board; 7] = Default::default();
    let [b0, b1, b2, b3, b4, b5, b6] = &mut b;
    let (_, by_rules, ..) = tokio::try_join!(
        thread(pool, uid, facts, b0),
        rules(pool, uid, facts, b1),
        references(pool, uid, m, b2),
        model::words(pool, uid, m, b3),
        model::contacts(pool, uid, &parties, b4),
        model::history(pool, uid, &parties, facts.dedup_key, b5),
        model::own_history(pool, uid, sender, facts.dedup_key, b6),
    )?;
    let mut board = model::Board::default();
    for part in b {
        board.merge(part);
    }
    Ok((board.ranked(), by_rules))
}

/// The first [`MAX_SUGGESTIONS`] of `ranked` as suggestions, each with its confidence
/// (from its score and its lead over the best other record).
fn present(ranked: Vec<model::Scored>) -> Vec<Suggestion> {
    let scores: Vec<f64> = ranked.iter().map(model::Scored::score).collect();
    ranked
        .into_iter()
        .take(MAX_SUGGESTIONS)
        .enumerate()
        .map(|(i, s)| {
            let best_other = scores
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, v)| *v)
                .fold(0.0, f64::max);
            let score = scores[i];
            let confidence = model::confidence(score, score - best_other);
            Suggestion {
                reasons: s.reasons(),
                source: s.strongest().source(),
                target: s.target,
                score: (score * 100.0).round() / 100.0,
                confidence: (confidence * 1000.0).round() / 1000.0,
                likelihood: model::likelihood(confidence),
            }
        })
        .collect()
}

/// Earlier filings in the same conversation: the Gmail thread, In-Reply-To, References.
async fn thread(
    pool: &AnyPool,
    user: &str,
    facts: &MessageFacts<'_>,
    board: &mut model::Board,
) -> AppResult<()> {
    let m = facts.message;
    let mut ids: Vec<String> = m
        .in_reply_to
        .iter()
        .chain(m.references.iter())
        .cloned()
        .collect();
    ids.sort();
    ids.dedup();
    ids.truncate(100);
    if facts.gmail_thread_id.is_none() && ids.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "SELECT DISTINCT r.kind, r.reference, r.title FROM messages m JOIN filings f ON f.message_id = m.id \
         JOIN records r ON r.id = f.record_id WHERE {} AND m.dedup_key <> $1 AND (m.gmail_thread_id = $2{}) \
         ORDER BY r.kind, r.reference",
        open(3 + ids.len()),
        if ids.is_empty() { String::new() } else { format!(" OR m.message_id IN ({})", placeholders(3, ids.len())) }
    );
    let mut q = sqlx::query(&sql)
        .bind(facts.dedup_key)
        .bind(facts.gmail_thread_id.unwrap_or(""));
    for id in &ids {
        q = q.bind(id);
    }
    for r in q.bind(user).fetch_all(pool).await? {
        let rec = rec_from(&r, 0);
        let reason = format!("same thread as a message filed to {}", rec.id);
        board.add(rec, model::Signal::Thread, model::points::THREAD, reason);
    }
    Ok(())
}

/// The firm's routing rules (admins' deliberate choices), with the rule as the reason;
/// `auto_file` targets come back apart.
async fn rules(
    pool: &AnyPool,
    user: &str,
    facts: &MessageFacts<'_>,
    board: &mut model::Board,
) -> AppResult<Vec<RuleFiling>> {
    let decision = crate::rules::evaluate(pool, facts.message, facts.raw).await?;
    let rec_of = |r: &crate::rules::Routed| RecordRef {
        kind: r.record.kind.clone(),
        id: r.record.reference.clone(),
        title: r.record.title.clone(),
    };
    let mut by_rules: Vec<RuleFiling> = Vec::new();
    for r in &decision.auto_file {
        let target = rec_of(r);
        let known = by_rules.iter().any(|x| x.target == target);
        if !known && open_and_visible(pool, user, &r.record.id).await? {
            let rule = r.rule.clone();
            by_rules.push(RuleFiling { target, rule });
        }
    }
    for r in &decision.suggest {
        if open_and_visible(pool, user, &r.record.id).await? {
            let reason = format!("rule “{}”", r.rule);
            board.add(rec_of(r), model::Signal::Rule, model::points::RULE, reason);
        }
    }
    Ok(by_rules)
}

/// Record references in the subject (the firm's pattern).
async fn references(
    pool: &AnyPool,
    user: &str,
    m: &ParsedMessage,
    board: &mut model::Board,
) -> AppResult<()> {
    let Some(subject) = &m.subject else {
        return Ok(());
    };
    let pattern = subject_pattern(pool).await?;
    let mut seen = BTreeSet::new();
    for found in pattern.find_iter(subject).take(10) {
        let reference = found.as_str();
        if !seen.insert(reference.to_ascii_uppercase()) {
            continue;
        }
        let rows = sqlx::query(&format!(
            "SELECT r.kind, r.reference, r.title FROM records r WHERE UPPER(r.reference) = UPPER($1) AND {} \
             ORDER BY r.kind, r.reference",
            open(2)
        ))
        .bind(reference)
        .bind(user)
        .fetch_all(pool)
        .await?;
        for r in rows {
            let rec = rec_from(&r, 0);
            let reason = format!("subject contains {}", rec.id);
            board.add(
                rec,
                model::Signal::Reference,
                model::points::REFERENCE,
                reason,
            );
        }
    }
    Ok(())
}

/// Whether record `id` is open and `user` may see it (teams and walls).
async fn open_and_visible(pool: &AnyPool, user: &str, id: &str) -> AppResult<bool> {
    let sql = format!(
        "SELECT 1 FROM records r WHERE r.id = $1 AND r.status = 'open' AND {}",
        visible_sql("r", 2)
    );
    Ok(sqlx::query(&sql)
        .bind(id)
        .bind(user)
        .fetch_optional(pool)
        .await?
        .is_some())
}

/// Everything the add-on shows about an open message, from one read of "already filed".
pub struct MessageContext {
    pub already_filed: Vec<AlreadyFiled>,
    pub suggestions: Vec<Suggestion>,
    /// Where the firm's rules will also file it, whatever the user ticks.
    pub rule_filings: Vec<RuleFiling>,
    /// An earlier, different message used this message's Message-ID.
    pub message_id_reused: bool,
}

pub async fn context(
    pool: &AnyPool,
    user: &User,
    facts: &MessageFacts<'_>,
) -> AppResult<MessageContext> {
    let already_filed = already_filed(pool, user, facts.dedup_key).await?;
    let (suggestions, rule_filings) = suggestions(pool, user, facts, &already_filed).await?;
    Ok(MessageContext {
        already_filed,
        suggestions,
        rule_filings,
        message_id_reused: false,
    })
}

/// A record found by `GET /v1/records?q=`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RecordHit {
    pub kind: String,
    pub id: String,
    pub title: String,
    pub client: String,
    pub status: String,
}

/// A case-insensitive "contains" pattern for `LOWER(col) LIKE $n ESCAPE '\\'`: `q` trimmed and
/// lowercased, with `%`, `_` and `\\` escaped.
pub fn contains_pattern(q: &str) -> String {
    let mut out = String::from("%");
    for c in q.trim().to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// Open records the user may file to, matching `q` in reference, title or client.
pub async fn search(pool: &AnyPool, user: &User, q: &str, limit: i64) -> AppResult<Vec<RecordHit>> {
    if !fileable(user) {
        return Ok(Vec::new());
    }
    let q = q.trim();
    let like = contains_pattern(q);
    let rows = sqlx::query(&format!(
        "SELECT r.kind, r.reference, r.title, r.client, r.status FROM records r WHERE r.status = 'open' AND {} AND \
         (LOWER(r.reference) LIKE $1 ESCAPE '\\' OR LOWER(r.title) LIKE $1 ESCAPE '\\' OR LOWER(r.client) LIKE $1 ESCAPE '\\') \
         ORDER BY CASE WHEN LOWER(r.reference) = $2 THEN 0 ELSE 1 END, r.reference LIMIT $3",
        visible_sql("r", 4)
    ))
    .bind(&like)
    .bind(q.to_lowercase())
    .bind(limit)
    .bind(&user.id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| RecordHit {
            kind: r.get(0),
            id: r.get(1),
            title: r.get(2),
            client: r.get(3),
            status: r.get(4),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn contains_pattern_escapes_like_wildcards() {
        assert_eq!(super::contains_pattern("  Acme "), "%acme%");
        assert_eq!(super::contains_pattern("50%_a\\b"), "%50\\%\\_a\\\\b%");
    }
}
