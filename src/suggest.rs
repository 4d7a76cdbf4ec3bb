//! What the add-on shows for an open message: where it is already filed, ranked suggestions
//! with their reasons, and record search. One place decides which records a user may see
//! and file to ([`fileable`]), so the cards and the JSON API apply the same rules.

use std::collections::{BTreeSet, HashMap};

use regex::Regex;
use serde::Serialize;
use sqlx::{AnyPool, Row};

use crate::access::visible_sql;
use crate::directory::User;
use crate::error::{AppError, AppResult};
use crate::mail::ParsedMessage;

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
    pub reasons: Vec<String>,
    /// `thread`, `rule`, `subject`, `contact` or `history`: the strongest source that found it.
    #[schema(value_type = String)]
    pub source: &'static str,
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

struct Ranked {
    order: Vec<String>,
    by_target: HashMap<String, Suggestion>,
}

impl Ranked {
    fn add(&mut self, rec: RecordRef, source: &'static str, reason: String) {
        let key = rec.target();
        match self.by_target.get_mut(&key) {
            Some(s) => {
                if !s.reasons.contains(&reason) {
                    s.reasons.push(reason);
                }
            }
            None => {
                self.order.push(key.clone());
                self.by_target.insert(
                    key,
                    Suggestion {
                        target: rec,
                        reasons: vec![reason],
                        source,
                    },
                );
            }
        }
    }
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

/// Ranked suggestions: earlier filings in the same thread (Gmail thread, In-Reply-To,
/// References), then the firm's routing rules (the rule's name is the reason), then
/// references in the subject, then participants matching record contacts
/// (address, then domain), then the user's own history with this sender. Only open records
/// the user may file to; records in `filed` (where the message already is) are left out.
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
    let m = facts.message;
    let mut ranked = Ranked {
        order: Vec::new(),
        by_target: HashMap::new(),
    };
    // Each query binds the user's id last, as `$n` with n = its own parameter count + 1.
    let open =
        |user_param: usize| format!("r.status = 'open' AND {}", visible_sql("r", user_param));

    // 1. Thread.
    let mut ids: Vec<String> = m
        .in_reply_to
        .iter()
        .chain(m.references.iter())
        .cloned()
        .collect();
    ids.sort();
    ids.dedup();
    ids.truncate(100);
    if facts.gmail_thread_id.is_some() || !ids.is_empty() {
        let thread = facts.gmail_thread_id.unwrap_or("");
        let sql = format!(
            "SELECT DISTINCT r.kind, r.reference, r.title FROM messages m JOIN filings f ON f.message_id = m.id \
             JOIN records r ON r.id = f.record_id WHERE {} AND m.dedup_key <> $1 AND (m.gmail_thread_id = $2{}) \
             ORDER BY r.kind, r.reference",
            open(3 + ids.len()),
            if ids.is_empty() { String::new() } else { format!(" OR m.message_id IN ({})", placeholders(3, ids.len())) }
        );
        let mut q = sqlx::query(&sql).bind(facts.dedup_key).bind(thread);
        for id in &ids {
            q = q.bind(id);
        }
        q = q.bind(&user.id);
        for r in q.fetch_all(pool).await? {
            let rec = rec_from(&r, 0);
            let reason = format!("same thread as a message filed to {}", rec.id);
            ranked.add(rec, "thread", reason);
        }
    }

    // 2. The firm's routing rules (admins' deliberate choices), with the rule as the reason;
    // `auto_file` targets go apart (see above).
    let decision = crate::rules::evaluate(pool, m, facts.raw).await?;
    let rec_of = |r: &crate::rules::Routed| RecordRef {
        kind: r.record.kind.clone(),
        id: r.record.reference.clone(),
        title: r.record.title.clone(),
    };
    let mut by_rules: Vec<RuleFiling> = Vec::new();
    for r in &decision.auto_file {
        let target = rec_of(r);
        let known = by_rules.iter().any(|x| x.target == target);
        if !known && open_and_visible(pool, &user.id, &r.record.id).await? {
            let rule = r.rule.clone();
            by_rules.push(RuleFiling { target, rule });
        }
    }
    for r in &decision.suggest {
        if crate::access::can_see(pool, &user.id, &r.record.id).await? {
            ranked.add(rec_of(r), "rule", format!("rule “{}”", r.rule));
        }
    }

    // 3. Subject references.
    if let Some(subject) = &m.subject {
        let pattern = subject_pattern(pool).await?;
        let mut seen = BTreeSet::new();
        for found in pattern.find_iter(subject).take(10) {
            let reference = found.as_str();
            if !seen.insert(reference.to_ascii_uppercase()) {
                continue;
            }
            let rows = sqlx::query(&format!(
                "SELECT r.kind, r.reference, r.title FROM records r WHERE UPPER(r.reference) = UPPER($1) AND {} ORDER BY r.kind",
                open(2)
            ))
            .bind(reference)
            .bind(&user.id)
            .fetch_all(pool)
            .await?;
            for r in rows {
                let rec = rec_from(&r, 0);
                let reason = format!("subject contains {}", rec.id);
                ranked.add(rec, "subject", reason);
            }
        }
    }

    // 4. Participants matching contacts: addresses first, then domains.
    let sender: Option<String> = m.from.iter().find_map(|b| b.address.clone());
    let mut participants: Vec<(String, bool)> = Vec::new();
    for (b, is_sender) in m
        .from
        .iter()
        .map(|b| (b, true))
        .chain(m.to.iter().chain(m.cc.iter()).map(|b| (b, false)))
    {
        if let Some(a) = &b.address {
            let domain = a.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
            let own = facts.own_domains.iter().any(|d| d == domain);
            if !own && a != &user.email && !participants.iter().any(|(p, _)| p == a) {
                participants.push((a.clone(), is_sender));
            }
        }
    }
    participants.truncate(50);
    if !participants.is_empty() {
        let addrs: Vec<&str> = participants.iter().map(|(a, _)| a.as_str()).collect();
        let sql = format!(
            "SELECT c.value, r.kind, r.reference, r.title FROM record_contacts c JOIN records r ON r.id = c.record_id \
             WHERE c.kind = 'address' AND c.value IN ({}) AND {} ORDER BY r.kind, r.reference",
            placeholders(1, addrs.len()),
            open(addrs.len() + 1)
        );
        let mut q = sqlx::query(&sql);
        for a in &addrs {
            q = q.bind(*a);
        }
        q = q.bind(&user.id);
        let rows = q.fetch_all(pool).await?;
        for (addr, is_sender) in &participants {
            for r in rows.iter().filter(|r| r.get::<String, _>(0) == *addr) {
                let rec = rec_from(r, 1);
                let who = if *is_sender { "sender" } else { "participant" };
                let reason = format!("{who} {addr} is a contact of {}", rec.title);
                ranked.add(rec, "contact", reason);
            }
        }
        let mut domains: Vec<(String, bool)> = Vec::new();
        for (a, is_sender) in &participants {
            let d = a
                .rsplit_once('@')
                .map(|(_, d)| d.to_string())
                .unwrap_or_default();
            if !d.is_empty() && !domains.iter().any(|(x, _)| *x == d) {
                domains.push((d, *is_sender));
            }
        }
        let sql = format!(
            "SELECT c.value, r.kind, r.reference, r.title FROM record_contacts c JOIN records r ON r.id = c.record_id \
             WHERE c.kind = 'domain' AND c.value IN ({}) AND {} ORDER BY r.kind, r.reference",
            placeholders(1, domains.len()),
            open(domains.len() + 1)
        );
        let mut q = sqlx::query(&sql);
        for (d, _) in &domains {
            q = q.bind(d);
        }
        q = q.bind(&user.id);
        let rows = q.fetch_all(pool).await?;
        for (domain, is_sender) in &domains {
            for r in rows.iter().filter(|r| r.get::<String, _>(0) == *domain) {
                let rec = rec_from(r, 1);
                let who = if *is_sender { "sender" } else { "participant" };
                let reason = format!("{who} {domain} is a contact of {}", rec.title);
                ranked.add(rec, "contact", reason);
            }
        }
    }

    // 5. The user's own history with this sender.
    if let Some(sender) = &sender {
        let rows = sqlx::query(&format!(
            "SELECT r.kind, r.reference, r.title, COUNT(*) AS n FROM filings f JOIN messages m ON m.id = f.message_id \
             JOIN records r ON r.id = f.record_id WHERE f.filed_by = $1 AND m.from_addr = $2 AND m.dedup_key <> $3 AND {} \
             GROUP BY r.kind, r.reference, r.title ORDER BY n DESC, r.kind, r.reference LIMIT 5",
            open(1)
        ))
        .bind(&user.id)
        .bind(sender)
        .bind(facts.dedup_key)
        .fetch_all(pool)
        .await?;
        for r in rows {
            let n: i64 = r.get(3);
            let rec = rec_from(&r, 0);
            let times = if n == 1 {
                "once".to_string()
            } else {
                format!("{n} times")
            };
            ranked.add(
                rec,
                "history",
                format!("you filed mail from this sender here {times}"),
            );
        }
    }

    let filed: BTreeSet<String> = filed.iter().map(|f| f.target.target()).collect();
    by_rules.retain(|r| !filed.contains(&r.target.target()));
    let automatic: BTreeSet<String> = by_rules.iter().map(|r| r.target.target()).collect();
    let Ranked {
        order,
        mut by_target,
    } = ranked;
    let suggestions = order
        .into_iter()
        .filter(|k| !filed.contains(k) && !automatic.contains(k))
        .filter_map(|k| by_target.remove(&k))
        .take(MAX_SUGGESTIONS)
        .collect();
    Ok((suggestions, by_rules))
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
