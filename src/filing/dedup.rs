//! Which stored message a parsed one is. A Message-ID (RFC 5322 §3.6.4) is meant to be
//! unique, but senders reuse them; so a stored message is the same message only when its
//! Message-ID *and* its content fingerprint ([`ParsedMessage::content_sha256`]) match.
//!
//! Keys: the first message with Message-ID `X` is stored under `mid:X` (as before this
//! rule); a later, different message with the same id under `mid:X#<fingerprint>`. Messages
//! without a Message-ID keep `sha256:<canonical bytes>`.

use sqlx::{AnyConnection, Row};

use crate::error::{AppError, AppResult};
use crate::mail::{self, ParsedMessage};
use crate::tenancy::Tenant;

/// The key of a different message that reuses `base`'s Message-ID.
fn alternative_key(base: &str, content_sha256: &str) -> String {
    format!("{base}#{content_sha256}")
}

/// Sets `parsed.dedup_key` to the key under which this content is, or will be, stored.
/// Returns whether an earlier, different message used the same Message-ID, and whether a
/// message is stored under that key already (as this lookup saw it; the filing's
/// transaction looks again).
pub async fn resolve(tenant: &Tenant, parsed: &mut ParsedMessage) -> AppResult<(bool, bool)> {
    let (key, reused, stored) = lookup(tenant, parsed).await?;
    let stored = match stored {
        Some(stored) => stored,
        None => by_key_in(&tenant.db, &key).await?.is_some(),
    };
    parsed.dedup_key = key;
    Ok((reused, stored))
}

/// The key under which `parsed`'s content is, or would be, stored, and whether an earlier,
/// different message used the same Message-ID.
pub async fn resolve_key(tenant: &Tenant, parsed: &ParsedMessage) -> AppResult<(String, bool)> {
    let (key, reused, _) = lookup(tenant, parsed).await?;
    Ok((key, reused))
}

/// As [`resolve_key`], and whether a message is stored under the key, when the lookup
/// showed it (`None`: not looked at).
async fn lookup(
    tenant: &Tenant,
    parsed: &ParsedMessage,
) -> AppResult<(String, bool, Option<bool>)> {
    let base = parsed.dedup_key.clone();
    if !base.starts_with("mid:") {
        return Ok((base, false, None));
    }
    let alt = alternative_key(&base, &parsed.content_sha256);
    let rows = sqlx::query(
        "SELECT id, dedup_key, content_sha256, raw_sha256 FROM messages WHERE dedup_key = $1 OR dedup_key = $2",
    )
    .bind(&base)
    .bind(&alt)
    .fetch_all(&tenant.db)
    .await?;
    if rows.iter().any(|r| r.get::<String, _>(1) == alt) {
        return Ok((alt, true, Some(true)));
    }
    let Some(row) = rows.first() else {
        return Ok((base, false, Some(false)));
    };
    let stored = match row.get::<Option<String>, _>(2) {
        Some(fp) => fp,
        None => backfill(tenant, &row.get::<String, _>(0), &row.get::<String, _>(3)).await,
    };
    if stored == parsed.content_sha256 || stored.is_empty() {
        return Ok((base, false, Some(true)));
    }
    Ok((alt, true, Some(false)))
}

/// The fingerprint of a message stored before fingerprints existed, from its raw blob, saved
/// for next time. Empty (treated as "the same", the old rule) if the blob cannot be read.
async fn backfill(tenant: &Tenant, message_id: &str, raw_sha256: &str) -> String {
    let blobs = tenant.blobs.clone();
    let blob = raw_sha256.to_string();
    let fp = mail::guard::isolated(move || {
        let raw = blobs
            .get(&blob)
            .map_err(|e| AppError::internal(anyhow::Error::new(e)))?;
        mail::parse(&raw, &mail::guard::ceiling_limits()).map(|p| p.content_sha256)
    })
    .await;
    match fp {
        Ok(fp) => {
            let saved = sqlx::query(
                "UPDATE messages SET content_sha256 = $1 WHERE id = $2 AND content_sha256 IS NULL",
            )
            .bind(&fp)
            .bind(message_id)
            .execute(&tenant.db)
            .await;
            if let Err(e) = saved {
                tracing::warn!(error = %e, message = %message_id, "cannot save a content fingerprint");
            }
            fp
        }
        Err(e) => {
            tracing::warn!(error = %e, message = %message_id, "no content fingerprint for a stored message");
            String::new()
        }
    }
}

/// Whether `e` is a violation of the UNIQUE constraint on `messages.dedup_key`: a message
/// was stored under the key that [`resolve`] found free before the filing's transaction
/// inserted it (the filing then looks again, in its transaction: [`stored_in_tx`]). Any
/// other violation is not retried.
pub fn raced(e: &AppError) -> bool {
    let AppError::Internal(err) = e else {
        return false;
    };
    let Some(db) = err
        .downcast_ref::<sqlx::Error>()
        .and_then(|e| e.as_database_error())
    else {
        return false;
    };
    // PostgreSQL names the constraint; SQLite names the column in its message.
    db.is_unique_violation()
        && (db.constraint() == Some("messages_dedup_key_key")
            || db.message().contains("messages.dedup_key"))
}

/// Inside the filing transaction: the stored message for `parsed`, if any, and the key to
/// store it under otherwise. A different message that took `parsed.dedup_key` since
/// [`resolve`] ran moves this one to its alternative key.
pub async fn stored_in_tx(
    conn: &mut AnyConnection,
    parsed: &ParsedMessage,
) -> AppResult<(String, Option<String>)> {
    let key = parsed.dedup_key.clone();
    let Some((id, fp)) = by_key_in(&mut *conn, &key).await? else {
        return Ok((key, None));
    };
    let same = fp.as_deref().is_none_or(|f| f == parsed.content_sha256);
    let is_base = key.starts_with("mid:") && !key.ends_with(&parsed.content_sha256);
    if same || !is_base {
        return Ok((key, Some(id)));
    }
    let alt = alternative_key(&key, &parsed.content_sha256);
    let found = by_key_in(&mut *conn, &alt).await?.map(|(id, _)| id);
    Ok((alt, found))
}

/// The id and content fingerprint of the message stored under `key`.
async fn by_key_in<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    key: &str,
) -> AppResult<Option<(String, Option<String>)>> {
    Ok(
        sqlx::query("SELECT id, content_sha256 FROM messages WHERE dedup_key = $1")
            .bind(key)
            .fetch_optional(db)
            .await?
            .map(|r| (r.get(0), r.get(1))),
    )
}
