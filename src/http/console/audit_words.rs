//! The audit log in words: each entry as a sentence ("Bob Brown filed *Re: draft
//! settlement* to M-2024-017"), whose subjects link to the console page of what they name.
//! Built as escaped HTML here, from the entry and the names of the people, records and
//! filings it mentions (looked up once per page, for the entries shown only).

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;
use sqlx::{AnyPool, Row};

use crate::error::AppResult;
use crate::http::admin::browse::AuditRow;

/// Names of what a page of entries mentions.
#[derive(Default)]
pub struct Names {
    /// user id → display name (or address); address → user id.
    users: HashMap<String, String>,
    user_ids: HashMap<String, String>,
    /// record id → `M-1 “Title”`; `kind:reference` → record id.
    records: HashMap<String, String>,
    record_ids: HashMap<String, String>,
    /// filing id → the message's subject.
    filings: HashMap<String, String>,
}

fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn fetch(
    pool: &AnyPool,
    sql: &str,
    keys: &BTreeSet<String>,
) -> AppResult<Vec<sqlx::any::AnyRow>> {
    fetch_with(pool, sql, keys, None).await
}

/// The rows of `sql` whose `{in}` is the keys' placeholders; `last`, when given, is bound
/// after the keys (the viewer of a visibility check). Nothing for no keys.
async fn fetch_with(
    pool: &AnyPool,
    sql: &str,
    keys: &BTreeSet<String>,
    last: Option<&str>,
) -> AppResult<Vec<sqlx::any::AnyRow>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let sql = sql.replace("{in}", &placeholders(keys.len()));
    let mut q = sqlx::query(&sql);
    for k in keys {
        q = q.bind(k.clone());
    }
    if let Some(v) = last {
        q = q.bind(v.to_string());
    }
    Ok(q.fetch_all(pool).await?)
}

/// ", and the rules' filings to M-2, M-3 with it" when an undo took those back too.
fn also_removed(d: &Value) -> String {
    let refs: Vec<String> = d["also_removed"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|t| esc(t.split_once(':').map(|(_, r)| r).unwrap_or(t)))
        .collect();
    match refs.is_empty() {
        true => String::new(),
        false => format!(", and the rules' filings to {} with it", refs.join(", ")),
    }
}

fn target_of(e: &AuditRow) -> Option<&str> {
    e.detail
        .get("target")
        .or_else(|| e.detail.get("record"))
        .and_then(Value::as_str)
}

impl Names {
    /// Looks up every person, record and filing the entries name.
    /// Message subjects only of filings `viewer` may see (ethical walls bind admins too):
    /// others read "a message".
    pub async fn load(pool: &AnyPool, rows: &[AuditRow], viewer: &str) -> AppResult<Names> {
        let mut ids = BTreeSet::new();
        let mut emails = BTreeSet::new();
        let mut refs = BTreeSet::new();
        for e in rows {
            ids.insert(e.subject.clone());
            // `alice@x (token …)`: the person.
            let actor = e
                .actor
                .split_once(" (")
                .map_or(e.actor.as_str(), |(a, _)| a);
            emails.insert(actor.to_ascii_lowercase());
            for k in ["owner", "user_id", "filed_by"] {
                if let Some(v) = e.detail.get(k).and_then(Value::as_str) {
                    ids.insert(v.to_string());
                }
            }
            if let Some(t) = target_of(e) {
                refs.insert(t.to_string());
            }
        }
        let mut n = Names::default();
        let user_sql = "SELECT id, email, display_name FROM users WHERE id IN ({in})";
        let by_email = "SELECT id, email, display_name FROM users WHERE LOWER(email) IN ({in})";
        for r in fetch(pool, user_sql, &ids)
            .await?
            .iter()
            .chain(&fetch(pool, by_email, &emails).await?)
        {
            let (id, email, name): (String, String, String) = (r.get(0), r.get(1), r.get(2));
            let shown = if name.trim().is_empty() {
                email.clone()
            } else {
                name
            };
            n.user_ids.insert(email.to_ascii_lowercase(), id.clone());
            n.users.insert(id, shown);
        }
        let rec_sql = "SELECT id, kind, reference, title FROM records WHERE id IN ({in})";
        let by_ref = "SELECT id, kind, reference, title FROM records WHERE kind || ':' || reference IN ({in})";
        for r in fetch(pool, rec_sql, &ids)
            .await?
            .iter()
            .chain(&fetch(pool, by_ref, &refs).await?)
        {
            let (id, kind, reference, title): (String, String, String, String) =
                (r.get(0), r.get(1), r.get(2), r.get(3));
            n.record_ids
                .insert(format!("{kind}:{reference}"), id.clone());
            n.records.insert(id, format!("{reference} “{title}”"));
        }
        let fil_sql = format!(
            "SELECT f.id, m.subject FROM filings f JOIN messages m ON m.id = f.message_id \
             JOIN records r ON r.id = f.record_id WHERE f.id IN ({{in}}) AND {}",
            crate::access::visible_sql("r", ids.len() + 1)
        );
        for r in fetch_with(pool, &fil_sql, &ids, Some(viewer)).await? {
            let subject: Option<String> = r.get(1);
            n.filings
                .insert(r.get(0), subject.unwrap_or_else(|| "(no subject)".into()));
        }
        Ok(n)
    }
}

use crate::time_fmt::escape as esc;

fn link(href: &str, text: &str) -> String {
    format!("<a href=\"{}\">{}</a>", esc(href), esc(text))
}

fn s<'a>(d: &'a Value, k: &str) -> &'a str {
    d.get(k).and_then(Value::as_str).unwrap_or("")
}

/// One entry as a sentence of HTML (every value escaped).
pub fn sentence(e: &AuditRow, n: &Names) -> String {
    let d = &e.detail;
    let who = actor(e, n);
    let user = |id: &str| match n.users.get(id) {
        Some(name) => link(&format!("/console/users/{id}"), name),
        None => esc(if id.is_empty() { "someone" } else { id }),
    };
    let record = |id: &str| match n.records.get(id) {
        Some(label) => link(&format!("/console/records/{id}"), label),
        None => esc(s(d, "record")),
    };
    let target = || {
        let t = target_of(e).unwrap_or("");
        match n.record_ids.get(t) {
            Some(id) => record(id),
            None => esc(t.split_once(':').map(|(_, r)| r).unwrap_or(t)),
        }
    };
    let filing = || {
        let subj = n
            .filings
            .get(&e.subject)
            .map(String::as_str)
            .unwrap_or("a message");
        format!(
            "<em>{}</em>",
            link(&format!("/console/filings/{}", e.subject), subj)
        )
    };
    let named = |what: &str| format!("{what} “{}”", esc(s(d, "name")));
    let by_rule = match s(d, "rule") {
        "" => String::new(),
        r => format!(" (firm rule “{}”)", esc(r)),
    };
    let rest = match e.action.as_str() {
        "filing.created" => format!("filed {} to {}{by_rule}", filing(), target()),
        "filing.duplicate" => format!(
            "filed {} to {} again: it was already there, nothing was stored twice",
            filing(),
            target()
        ),
        "filing.denied" => format!("was refused filing: {}", esc(s(d, "reason"))),
        "filing.undone" if d["rule"] == true => format!(
            "took back the firm rule's filing of a message to {} with their undo",
            target()
        ),
        "filing.undone" => format!(
            "undid their filing of a message to {}{}",
            target(),
            also_removed(d)
        ),
        "filing.removed" => format!(
            "removed the filing of a message to {} (filed by {}): “{}”",
            target(),
            user(s(d, "filed_by")),
            esc(s(d, "reason"))
        ),
        "record.added" => format!("added {}", record(&e.subject)),
        "record.updated" => format!("edited {}", record(&e.subject)),
        "record.closed" => format!("closed {}", record(&e.subject)),
        "record.reopened" => format!("reopened {}", record(&e.subject)),
        "record.team_changed" => format!("changed who may see {}", record(&e.subject)),
        "record.disposed" => format!("disposed of {}", record(&e.subject)),
        "records.imported" => format!("imported {} records", d["imported"]),
        "user.added" => format!("added {} as {}", user(&e.subject), esc(s(d, "role"))),
        "user.updated" => format!("changed {}", user(&e.subject)),
        "user.suspended" => format!("suspended {}", user(&e.subject)),
        "user.reactivated" => format!("reactivated {}", user(&e.subject)),
        "sessions.ended" => format!("ended the sessions of {}", user(&e.subject)),
        "account.locked" => format!(
            "was suspended after {} failed attempts in a row",
            d["failures"]
        ),
        "login.succeeded" => "signed in".into(),
        "login.failed" => format!("failed to sign in ({})", esc(s(d, "reason"))),
        "login.throttled" => "was refused signing in: too many failures from that address".into(),
        "logout" => "signed out".into(),
        "auth.rejected" => format!(
            "was refused by the add-on sign-in ({})",
            esc(s(d, "reason"))
        ),
        "reauth.succeeded" => "confirmed it was them".into(),
        "reauth.failed" => format!("failed to confirm it was them ({})", esc(s(d, "reason"))),
        "password.set" => format!("set the password of {}", user(&e.subject)),
        "password.changed" => "changed their password".into(),
        "password.change_failed" => {
            "tried to change their password, with a wrong current one".into()
        }
        "totp.enrolled" => "set up an authenticator app".into(),
        "totp.replaced" => "replaced their authenticator app".into(),
        "recovery_code.used" => "used a recovery code".into(),
        "recovery_codes.regenerated" => "generated new recovery codes".into(),
        "reset.requested" => "asked for a password reset".into(),
        "reset.issued" => format!("issued a set-password link for {}", user(s(d, "user_id"))),
        "reset.dismissed" => "dismissed a password reset request".into(),
        "reset.completed" => "set a new password with a link".into(),
        "token.created" => format!(
            "created the access token “{}” for {}",
            esc(s(d, "name")),
            user(s(d, "owner"))
        ),
        "token.revoked" => format!(
            "revoked the access token “{}” of {}",
            esc(s(d, "name")),
            user(s(d, "owner"))
        ),
        "group.added" => format!("added the {}", named("group")),
        "group.renamed" => format!(
            "renamed the group “{}” to “{}”",
            esc(s(d, "before")),
            esc(s(d, "after"))
        ),
        "group.members_set" => format!("changed the members of the {}", named("group")),
        "rule.created" => format!("created the routing {}", named("rule")),
        "rule.updated" => format!("changed the routing {}", named("rule")),
        "rule.deleted" => format!("deleted the routing {}", named("rule")),
        "rule.moved" => format!(
            "moved the routing {} from position {} to {}",
            named("rule"),
            d["from"],
            d["to"]
        ),
        "hold.placed" => format!(
            "placed a legal hold on {}: {}",
            esc(s(d, "on")),
            esc(s(d, "reason"))
        ),
        "hold.released" => "released a legal hold".into(),
        "retention.policy_set" => format!(
            "set the retention of {}s to {} years",
            esc(s(d, "kind")),
            d["after_years"]
        ),
        "disposition.listed" => "listed records due for disposition".into(),
        "disposition.approved" => "approved a disposition".into(),
        "disposition.rejected" => "rejected a disposition".into(),
        "setting.changed" => format!(
            "set the firm's {} to <code>{}</code>",
            esc(&e.subject.replace('_', " ")),
            esc(s(d, "value"))
        ),
        "tenant.created" => "created the firm's docket".into(),
        "tenant.closed" => "closed the firm's docket".into(),
        "tenant.domain_added" => format!("added the sign-in domain {}", esc(s(d, "domain"))),
        "tenant.domain_removed" => format!("removed the sign-in domain {}", esc(s(d, "domain"))),
        "tenant.address_mapped" => format!("mapped {} to the firm", esc(s(d, "email"))),
        "tenant.address_unmapped" => format!("removed the mapping of {}", esc(s(d, "email"))),
        "tenant.delegation" => "changed whole-thread filing".into(),
        "subject.exported" => format!("exported the personal data of {}", esc(s(d, "email"))),
        "subject.erased" => format!("erased the personal data of {}", esc(s(d, "email"))),
        "backup.restored" => "restored the firm from a backup".into(),
        "audit.upgraded" => "upgraded the audit chain".into(),
        other => format!("— <span class=\"tag\">{}</span>", esc(other)),
    };
    format!("{who} {rest}")
}

/// The actor: a person's name linking to their page, "The operator", or "docket".
fn actor(e: &AuditRow, n: &Names) -> String {
    let raw = e.actor.as_str();
    if raw == "operator" {
        return "The operator".into();
    }
    if raw.ends_with("@docket.invalid") || raw == "system" {
        return "docket".into();
    }
    // `alice@x (token …)`: the person, then how.
    let (email, how) = match raw.split_once(" (") {
        Some((e, rest)) => (e, format!(" ({}", esc(rest))),
        None => (raw, String::new()),
    };
    match n
        .user_ids
        .get(&email.to_ascii_lowercase())
        .and_then(|id| n.users.get(id).map(|name| (id, name)))
    {
        Some((id, name)) => format!(
            "<a href=\"/console/users/{}\" title=\"{}\">{}</a>{how}",
            esc(id),
            esc(email),
            esc(name)
        ),
        None => format!("{}{how}", esc(email)),
    }
}
