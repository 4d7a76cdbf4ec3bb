//! The words and participants the suggestion model matches on, and the two derived tables
//! that hold them (`record_terms`, `message_parties`; tenant migration
//! `0009_suggestion_signals.sql`). Both are written with the record or message they derive
//! from and can be rebuilt from those at any time ([`ensure_index`]).

use std::collections::BTreeSet;

use sqlx::{AnyPool, Row};

use crate::error::AppResult;
use crate::mail::{Mailbox, ParsedMessage};

/// Bumped whenever [`words`] or [`parties`] change, so that [`ensure_index`] rebuilds.
pub const INDEX_VERSION: &str = "1";
const VERSION_KEY: &str = "suggest_index_version";

/// Most participants kept per message.
pub const MAX_PARTIES: usize = 50;

/// Words that say nothing about which record a message belongs to: English function words,
/// mail's own (`re`, `fwd`), record kinds, and company-form suffixes (`ltd`, `inc`).
const STOP: &[&str] = &[
    "about",
    "after",
    "again",
    "all",
    "also",
    "and",
    "any",
    "are",
    "attached",
    "attachment",
    "before",
    "below",
    "best",
    "but",
    "can",
    "case",
    "click",
    "com",
    "contract",
    "could",
    "dear",
    "did",
    "does",
    "draft",
    "for",
    "fwd",
    "from",
    "has",
    "have",
    "hello",
    "her",
    "here",
    "his",
    "how",
    "its",
    "just",
    "let",
    "limited",
    "llc",
    "ltd",
    "matter",
    "may",
    "more",
    "new",
    "not",
    "note",
    "now",
    "our",
    "out",
    "please",
    "plc",
    "regards",
    "see",
    "sent",
    "she",
    "should",
    "some",
    "thank",
    "thanks",
    "that",
    "the",
    "their",
    "them",
    "then",
    "there",
    "these",
    "they",
    "this",
    "those",
    "today",
    "update",
    "very",
    "via",
    "was",
    "week",
    "were",
    "what",
    "when",
    "which",
    "who",
    "will",
    "with",
    "would",
    "you",
    "your",
    "inc",
    "corp",
    "gmbh",
    "company",
    "group",
    "www",
    "http",
    "https",
    "mailto",
    "subject",
    "date",
    "re",
    "fw",
    "vs",
    "v",
];

/// The distinct words of `text` a record could be named by: lowercased runs of letters and
/// digits of at least 3 characters, not all digits, not in the stop list, with a plural
/// `s` dropped (`leases` → `lease`). At most `max` words, in order of first appearance.
pub fn words(text: &str, max: usize) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for raw in text.split(|c: char| !c.is_alphanumeric()) {
        if out.len() >= max {
            break;
        }
        if raw.chars().count() < 3 || raw.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let mut w = raw.to_lowercase();
        if w.len() > 4 && w.ends_with('s') && !w.ends_with("ss") {
            w.pop();
        }
        if STOP.contains(&w.as_str()) || !seen.insert(w.clone()) {
            continue;
        }
        out.push(w);
    }
    out
}

/// A lowercased address and its domain, or `None` for something that is not one.
pub fn address_and_domain(address: &str) -> Option<(String, String)> {
    let a = address.trim().to_lowercase();
    let (local, domain) = a.rsplit_once('@')?;
    (!local.is_empty() && domain.contains('.') && !domain.starts_with('.'))
        .then(|| (a.clone(), domain.to_string()))
}

/// The senders of mail forwarded or quoted in a body: the addresses on `From:` lines of the
/// quoted header blocks Gmail, Outlook and Apple Mail write (`From: Name <a@b.example>`,
/// `> From: a@b.example`, `*From:* …`). At most 5.
pub fn forwarded_senders(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in body.lines() {
        let l = line.trim_start_matches(|c: char| c == '>' || c == '*' || c.is_whitespace());
        let Some(rest) = l
            .strip_prefix("From:")
            .or_else(|| l.strip_prefix("from:"))
            .or_else(|| l.strip_prefix("Von:"))
            .or_else(|| l.strip_prefix("De :"))
            .or_else(|| l.strip_prefix("De:"))
        else {
            continue;
        };
        let candidate = match (rest.rfind('<'), rest.rfind('>')) {
            (Some(a), Some(b)) if a < b => &rest[a + 1..b],
            _ => rest
                .split_whitespace()
                .find(|w| w.contains('@'))
                .unwrap_or(""),
        };
        let candidate = candidate.trim_matches(|c: char| "*<>()[]\"',;:".contains(c));
        if let Some((a, _)) = address_and_domain(candidate) {
            if !out.contains(&a) {
                out.push(a);
            }
        }
        if out.len() == 5 {
            break;
        }
    }
    out
}

/// Everyone a message involves: From, To, Cc and the senders of forwarded mail in its body,
/// as distinct (address, domain) pairs, lowercased; at most [`MAX_PARTIES`].
pub fn parties(p: &ParsedMessage) -> Vec<(String, String)> {
    let boxes =
        |v: &[Mailbox]| -> Vec<String> { v.iter().filter_map(|b| b.address.clone()).collect() };
    let mut out: Vec<(String, String)> = Vec::new();
    let all = boxes(&p.from)
        .into_iter()
        .chain(forwarded_senders(&p.body_excerpt))
        .chain(boxes(&p.to))
        .chain(boxes(&p.cc));
    for a in all {
        if let Some(pair) = address_and_domain(&a) {
            if !out.iter().any(|(x, _)| *x == pair.0) {
                out.push(pair);
            }
        }
        if out.len() == MAX_PARTIES {
            break;
        }
    }
    out
}

/// `record_terms` rows for a record: (field, word).
pub fn record_words(title: &str, client: &str) -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> =
        words(title, 30).into_iter().map(|w| ("title", w)).collect();
    out.extend(words(client, 10).into_iter().map(|w| ("client", w)));
    out
}

/// Replaces record `id`'s words (inside the caller's transaction).
pub async fn write_record_terms(
    conn: &mut sqlx::AnyConnection,
    id: &str,
    title: &str,
    client: &str,
) -> AppResult<()> {
    sqlx::query("DELETE FROM record_terms WHERE record_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    for (field, term) in record_words(title, client) {
        sqlx::query("INSERT INTO record_terms (record_id, term, field) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(term)
            .bind(field)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Rebuilds `record_terms` and `message_parties` from the records and messages when the
/// tenant's index was built by another version of [`words`]/[`parties`] (or never), in one
/// transaction. Returns whether it rebuilt.
pub async fn ensure_index(pool: &AnyPool) -> AppResult<bool> {
    let mut tx = crate::tenancy::db::begin(pool).await?;
    let current: Option<String> = sqlx::query("SELECT value FROM settings WHERE key = $1")
        .bind(VERSION_KEY)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.get(0));
    if current.as_deref() == Some(INDEX_VERSION) {
        return Ok(false);
    }
    rebuild(&mut tx).await?;
    sqlx::query("DELETE FROM settings WHERE key = $1")
        .bind(VERSION_KEY)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2)")
        .bind(VERSION_KEY)
        .bind(INDEX_VERSION)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}

async fn rebuild(tx: &mut sqlx::AnyConnection) -> AppResult<()> {
    sqlx::query("DELETE FROM record_terms")
        .execute(&mut *tx)
        .await?;
    let records = sqlx::query("SELECT id, title, client FROM records")
        .fetch_all(&mut *tx)
        .await?;
    for r in &records {
        write_record_terms(
            tx,
            &r.get::<String, _>(0),
            &r.get::<String, _>(1),
            &r.get::<String, _>(2),
        )
        .await?;
    }
    sqlx::query("DELETE FROM message_parties")
        .execute(&mut *tx)
        .await?;
    // Stored messages keep their header lists but not their bodies in the database: a
    // rebuild indexes From, To and Cc (forwarded senders count from the next filing on).
    let rows = sqlx::query("SELECT id, from_json, to_json, cc_json, created_at FROM messages")
        .fetch_all(&mut *tx)
        .await?;
    for r in &rows {
        let list = |i: usize| -> Vec<Mailbox> {
            serde_json::from_str(&r.get::<String, _>(i)).unwrap_or_default()
        };
        let p = ParsedMessage {
            from: list(1),
            to: list(2),
            cc: list(3),
            ..ParsedMessage::default()
        };
        let (id, at): (String, String) = (r.get(0), r.get(4));
        for (address, domain) in parties(&p) {
            sqlx::query(
                "INSERT INTO message_parties (message_id, address, domain, at) VALUES ($1, $2, $3, $4)",
            )
            .bind(&id)
            .bind(address)
            .bind(domain)
            .bind(&at)
            .execute(&mut *tx)
            .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_drop_noise_and_plurals() {
        assert_eq!(
            words(
                "Re: Fwd: Northwind - lease renewals (2024) for the Leases",
                20
            ),
            ["northwind", "lease", "renewal"]
        );
        assert_eq!(words("Acme Ltd v. Widget GmbH", 20), ["acme", "widget"]);
        assert_eq!(words("Zürich Straße", 20), ["zürich", "straße"]);
        assert_eq!(words("a b cc 12345", 20), Vec::<String>::new());
    }

    #[test]
    fn forwarded_senders_are_read_from_quoted_header_blocks() {
        let body = "FYI\n\n---------- Forwarded message ---------\nFrom: Dana Client <Dana@Northwind.example>\n\
                    Date: Mon\n\n> From: old@other.example\n*From:* \"X\" <x@y.example>\nFrom: nobody\n";
        assert_eq!(
            forwarded_senders(body),
            ["dana@northwind.example", "old@other.example", "x@y.example"]
        );
        assert!(forwarded_senders("Sent from my phone").is_empty());
    }

    #[test]
    fn parties_are_distinct_lowercased_and_bounded() {
        let mb = |a: &str| Mailbox {
            name: None,
            address: Some(a.into()),
        };
        let p = ParsedMessage {
            from: vec![mb("A@X.example")],
            to: (0..80).map(|i| mb(&format!("p{i}@y.example"))).collect(),
            cc: vec![mb("a@x.example"), mb("not-an-address")],
            ..ParsedMessage::default()
        };
        let got = parties(&p);
        assert_eq!(got[0], ("a@x.example".to_string(), "x.example".to_string()));
        assert_eq!(got.len(), MAX_PARTIES);
    }
}
