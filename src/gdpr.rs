//! GDPR requests about one person (a data subject), by email address, per tenant:
//!
//! - **Access** ([`export`]): a zip with `manifest.json` (every filing whose message has the
//!   address in From, To or Cc, with its record and the message's headers; the person's
//!   user account; their sign-in attempts and reset requests; the audit entries that name
//!   them) and each of those messages as it was received, `messages/<message id>.eml`.
//!   Audited as `subject.exported`.
//! - **Erasure** ([`erase`]): in one transaction, the filings of messages the person took part
//!   in are deleted (with the messages filed nowhere else) unless a legal hold covers them;
//!   their user account is anonymised (address, name and Google identity removed, disabled,
//!   sessions, tokens, password, authenticator, groups and record teams gone); their sign-in
//!   attempts and reset requests are deleted; and in every audit entry that names them, the
//!   fields that do are erased (format 2: the chain still verifies, see [`crate::audit`]).
//!   Audited as `subject.erased`, with counts and the request's reference, never the
//!   address. The blobs left without a row are removed by the sweep.

use std::io::Write;

use serde::Serialize;
use sqlx::{AnyConnection, AnyPool, Row};

use crate::audit::{self, AuditEvent};
use crate::error::{AppError, AppResult};
use crate::retention::{self, participants};
use crate::tenancy::{Catalog, Tenant};
use crate::time_fmt::now_rfc3339;

/// A filing of a message the person took part in.
#[derive(Debug, Clone, Serialize)]
pub struct SubjectFiling {
    pub filing_id: String,
    pub record: String,
    pub filed_at: String,
    pub filed_by: String,
    pub message_id: String,
    pub internet_message_id: Option<String>,
    pub subject: Option<String>,
    pub sent_at: Option<String>,
    /// The address appears in these headers: `from`, `to`, `cc`.
    pub as_participant: Vec<&'static str>,
    /// A legal hold covers it: an erasure keeps it.
    pub on_hold: bool,
    #[serde(skip)]
    raw_sha256: String,
}

/// Everything docket holds about one address in one tenant (that the asking admin may see).
#[derive(Debug, Clone, Serialize)]
pub struct Found {
    pub email: String,
    pub filings: Vec<SubjectFiling>,
    /// Filings of theirs in records the asking admin is walled off from: neither exported
    /// nor erased by this admin (another admin, or the operator's CLI, must do those).
    pub filings_walled: usize,
    /// Records that list the address as a contact (`kind:reference`).
    pub record_contacts: Vec<String>,
    /// Their user account (id, email, name, role, status, created), if they have one.
    pub user: Option<serde_json::Value>,
    pub sign_ins: Vec<serde_json::Value>,
    pub reset_requests: Vec<serde_json::Value>,
    /// Audit entries naming them (actor, subject or detail).
    pub audit_entries: Vec<audit::AuditEntry>,
}

fn check_email(email: &str) -> AppResult<String> {
    let e = email.trim().to_ascii_lowercase();
    if !crate::directory::valid_email(&e) {
        return Err(AppError::unprocessable(
            "invalid-email",
            format!("{e:?} is not an email address"),
        ));
    }
    Ok(e)
}

/// Whether `text` names `email` (case-insensitively, not as part of a longer address).
fn mentions(text: &str, email: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    let part = |c: char| c.is_ascii_alphanumeric() || "._%+-@".contains(c);
    lower.match_indices(email).any(|(i, _)| {
        let before_ok = !lower[..i].chars().next_back().is_some_and(part);
        let rest = &lower[i + email.len()..];
        let after_ok = match rest.chars().next() {
            None => true,
            Some('.') => !rest[1..].starts_with(|c: char| c.is_ascii_alphanumeric()),
            Some(c) => !part(c),
        };
        before_ok && after_ok
    })
}

/// Finds what the tenant holds about `email`, as admin `viewer` may see it (ethical walls
/// apply to filings; `None`: the operator, who sees everything).
pub async fn find(pool: &AnyPool, email: &str, viewer: Option<&str>) -> AppResult<Found> {
    let email = check_email(email)?;
    let mut conn = pool.acquire().await?;
    find_on(&mut conn, &email, viewer).await
}

/// The address as the database's `LOWER()` gives it: PostgreSQL lowers every letter,
/// SQLite only ASCII ones.
fn db_lower(conn: &AnyConnection, email: &str) -> String {
    match conn.backend_name().eq_ignore_ascii_case("postgresql") {
        true => email.to_lowercase(),
        false => email.to_ascii_lowercase(),
    }
}

async fn find_on(conn: &mut AnyConnection, email: &str, viewer: Option<&str>) -> AppResult<Found> {
    let (filings, filings_walled) = filings_of(conn, email, viewer).await?;
    let lowered = db_lower(conn, email);
    let record_contacts: Vec<String> = sqlx::query(
        "SELECT r.kind || ':' || r.reference FROM record_contacts c JOIN records r ON r.id = c.record_id \
         WHERE c.kind = 'address' AND (LOWER(c.value) = $1 OR c.value = $2) ORDER BY 1",
    )
    .bind(&lowered)
    .bind(email.to_lowercase())
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| r.get(0))
    .collect();
    let user = sqlx::query(
        "SELECT id, email, display_name, role, status, created_at FROM users WHERE LOWER(email) = $1",
    )
    .bind(&lowered)
    .fetch_optional(&mut *conn)
    .await?;
    let user_id: Option<String> = user.as_ref().map(|u| u.get("id"));
    let user = user.map(|u| {
        serde_json::json!({
            "id": u.get::<String, _>("id"), "email": u.get::<String, _>("email"),
            "display_name": u.get::<String, _>("display_name"), "role": u.get::<String, _>("role"),
            "status": u.get::<String, _>("status"), "created_at": u.get::<String, _>("created_at"),
        })
    });
    let uid = user_id.clone().unwrap_or_default();
    let sign_ins = rows_as_json(
        conn,
        "SELECT * FROM login_attempts WHERE LOWER(email) = $1 OR user_id = $2 ORDER BY at",
        &lowered,
        &uid,
    )
    .await?;
    let reset_requests = rows_as_json(
        conn,
        "SELECT * FROM reset_requests WHERE LOWER(email) = $1 OR user_id = $2 ORDER BY requested_at",
        &lowered,
        &uid,
    )
    .await?;
    let audit_entries = audit_entries_of(conn, email).await?;
    Ok(Found {
        email: email.to_string(),
        filings,
        filings_walled,
        record_contacts,
        user,
        sign_ins,
        reset_requests,
        audit_entries,
    })
}

/// Rows of any shape as JSON objects (text and integer columns).
async fn rows_as_json(
    conn: &mut AnyConnection,
    sql: &str,
    a: &str,
    b: &str,
) -> AppResult<Vec<serde_json::Value>> {
    use sqlx::Column;
    let rows = sqlx::query(sql)
        .bind(a)
        .bind(b)
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let mut o = serde_json::Map::new();
            for (i, c) in r.columns().iter().enumerate() {
                let v = match r.try_get::<Option<String>, _>(i) {
                    Ok(s) => serde_json::json!(s),
                    Err(_) => serde_json::json!(r.try_get::<Option<i64>, _>(i).ok().flatten()),
                };
                o.insert(c.name().to_string(), v);
            }
            serde_json::Value::Object(o)
        })
        .collect())
}

/// A `LIKE` pattern that finds `email` inside a lowered text on either database: letters
/// that are not ASCII match any one character (the exact test is made in Rust after).
fn like_anywhere(email: &str) -> String {
    let inner: String = email
        .chars()
        .map(|c| if c.is_ascii() { c } else { '_' })
        .collect();
    format!("%{inner}%")
}

/// The filings of messages `email` took part in, those `viewer` may see, and how many
/// others there are.
async fn filings_of(
    conn: &mut AnyConnection,
    email: &str,
    viewer: Option<&str>,
) -> AppResult<(Vec<SubjectFiling>, usize)> {
    let holds = retention::holds_in_force(conn).await?;
    let visible: Option<std::collections::HashSet<String>> = match viewer {
        None => None,
        Some(uid) => Some(
            sqlx::query(&format!(
                "SELECT r.id FROM records r WHERE {}",
                crate::access::visible_sql("r", 1)
            ))
            .bind(uid)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect(),
        ),
    };
    let rows = sqlx::query(
        "SELECT f.id, r.id AS record_id, r.kind || ':' || r.reference AS record, f.filed_at, \
         u.email AS filed_by, m.id AS mid, m.message_id, m.subject, m.sent_at, m.raw_sha256, \
         m.from_json, m.to_json, m.cc_json FROM filings f JOIN messages m ON m.id = f.message_id \
         JOIN records r ON r.id = f.record_id JOIN users u ON u.id = f.filed_by \
         WHERE LOWER(m.from_json || m.to_json || m.cc_json) LIKE $1 ORDER BY f.filed_at, f.id",
    )
    .bind(like_anywhere(email))
    .fetch_all(&mut *conn)
    .await?;
    let (mut out, mut walled) = (Vec::new(), 0);
    for r in rows {
        let lists: [String; 3] = [r.get("from_json"), r.get("to_json"), r.get("cc_json")];
        let roles: Vec<&'static str> = ["from", "to", "cc"]
            .into_iter()
            .zip(&lists)
            .filter(|(_, l)| participants([l, "[]", "[]"]).iter().any(|a| a == email))
            .map(|(role, _)| role)
            .collect();
        if roles.is_empty() {
            continue;
        }
        let record_id: String = r.get("record_id");
        if visible.as_ref().is_some_and(|v| !v.contains(&record_id)) {
            walled += 1;
            continue;
        }
        let on_hold = holds.covers(&record_id, [&lists[0], &lists[1], &lists[2]]);
        out.push(SubjectFiling {
            filing_id: r.get("id"),
            record: r.get("record"),
            filed_at: r.get("filed_at"),
            filed_by: r.get("filed_by"),
            message_id: r.get("mid"),
            internet_message_id: r.get("message_id"),
            subject: r.get("subject"),
            sent_at: r.get("sent_at"),
            as_participant: roles,
            on_hold,
            raw_sha256: r.get("raw_sha256"),
        });
    }
    Ok((out, walled))
}

async fn audit_entries_of(
    conn: &mut AnyConnection,
    email: &str,
) -> AppResult<Vec<audit::AuditEntry>> {
    let rows = sqlx::query(
        "SELECT seq, at, actor, action, subject, detail, prev_hash, hash FROM audit_log \
         WHERE LOWER(actor || ' ' || subject || ' ' || detail) LIKE $1 ORDER BY seq",
    )
    .bind(like_anywhere(email))
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::new();
    for r in rows {
        let e = audit::AuditEntry {
            seq: r.get("seq"),
            at: r.get("at"),
            actor: r.get("actor"),
            action: r.get("action"),
            subject: r.get("subject"),
            detail: r.get("detail"),
            prev_hash: r.get("prev_hash"),
            hash: r.get("hash"),
        };
        if [&e.actor, &e.subject, &e.detail]
            .iter()
            .any(|t| mentions(t, email))
        {
            out.push(e);
        }
    }
    Ok(out)
}

/// The access export of `email` as a zip (see the module docs); audited as
/// `subject.exported`. The messages are read through the message budget one at a time;
/// the zip itself is built in memory.
pub async fn export(
    budget: &crate::budget::Budget,
    tenant: &Tenant,
    email: &str,
    viewer: Option<&str>,
    actor: &str,
) -> AppResult<Vec<u8>> {
    let found = find(&tenant.db, email, viewer).await?;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let zerr = |e: zip::result::ZipError| AppError::internal(anyhow::anyhow!("zip: {e}"));
    let mut written = std::collections::HashSet::new();
    for f in &found.filings {
        if !written.insert(f.message_id.clone()) {
            continue;
        }
        let raw = read_raw(budget, tenant, &f.raw_sha256).await?;
        zip.start_file(format!("messages/{}.eml", f.message_id), opts)
            .map_err(zerr)?;
        zip.write_all(&raw)
            .map_err(|e| AppError::internal(anyhow::anyhow!("zip: {e}")))?;
    }
    let manifest = serde_json::json!({
        "format": 1,
        "subject": found.email,
        "tenant": tenant.name,
        "generated_at": now_rfc3339(),
        "generated_by": actor,
        "filings": found.filings.iter().map(|f| {
            let mut v = serde_json::to_value(f).unwrap_or_default();
            v["eml"] = format!("messages/{}.eml", f.message_id).into();
            v
        }).collect::<Vec<_>>(),
        "filings_in_records_walled_off_from_the_exporter": found.filings_walled,
        "record_contacts": found.record_contacts,
        "user": found.user,
        "sign_ins": found.sign_ins,
        "reset_requests": found.reset_requests,
        "audit_entries": found.audit_entries,
    });
    zip.start_file("manifest.json", opts).map_err(zerr)?;
    let pretty = serde_json::to_vec_pretty(&manifest).map_err(AppError::internal)?;
    zip.write_all(&pretty)
        .map_err(|e| AppError::internal(anyhow::anyhow!("zip: {e}")))?;
    let bytes = zip.finish().map_err(zerr)?.into_inner();
    let mut records: Vec<&str> = found.filings.iter().map(|f| f.record.as_str()).collect();
    records.sort();
    records.dedup();
    let ev = AuditEvent::new(actor, "subject.exported", "gdpr").detail(serde_json::json!({
        "email": found.email, "filings": found.filings.len(), "records": records,
        "filings_walled": found.filings_walled,
        "audit_entries": found.audit_entries.len(), "bytes": bytes.len(),
    }));
    audit::record(&tenant.db, &[ev]).await?;
    Ok(bytes)
}

/// A message as received, read and decrypted off the runtime under the message budget (a
/// 503 `busy` when it cannot cover it).
async fn read_raw(budget: &crate::budget::Budget, tenant: &Tenant, id: &str) -> AppResult<Vec<u8>> {
    let (blobs, id) = (tenant.blobs.clone(), id.to_string());
    let (b, i) = (blobs.clone(), id.clone());
    let size = tokio::task::spawn_blocking(move || b.sealed_len(&i))
        .await
        .map_err(AppError::internal)?
        .map_err(|e| AppError::storage(e, "reading a blob"))?
        .unwrap_or(0) as usize;
    let _held = budget.try_reserve(size).ok_or_else(AppError::busy)?;
    tokio::task::spawn_blocking(move || blobs.get(&id))
        .await
        .map_err(AppError::internal)?
        .map_err(|e| AppError::storage(e, "reading a blob"))
}

/// Who asks to erase whom (see [`erase`]).
#[derive(Debug, Clone, Copy)]
pub struct ErasureRequest<'a> {
    /// The person's address.
    pub email: &'a str,
    /// The firm's reference for the request (kept in the `subject.erased` entry).
    pub request: &'a str,
    /// Who is audited as doing it.
    pub actor: &'a str,
    /// The asking admin's own address (refused as a subject); empty for the operator.
    pub caller: &'a str,
    /// The asking admin's user id (ethical walls apply); `None` for the operator.
    pub viewer: Option<&'a str>,
}

/// What an erasure did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Erased {
    pub filings_deleted: i64,
    /// Filings kept because a legal hold covers them.
    pub filings_held: i64,
    /// Filings in records the erasing admin is walled off from: left for another admin.
    pub filings_walled: i64,
    /// Records the address was removed from as a contact.
    pub record_contacts_removed: i64,
    pub user_anonymised: bool,
    pub sign_ins_deleted: i64,
    pub reset_requests_deleted: i64,
    pub audit_entries_erased: i64,
}

/// Erases `email`'s personal data (see the module docs), in one transaction. `request` is
/// the firm's reference for the request (kept in the `subject.erased` entry); `actor` is
/// audited; `viewer` is the erasing admin's user id (ethical walls apply; `None`: the
/// operator). Refuses the caller's own address (`caller`), an administrator's account (its
/// role must be changed first) and docket's own system user.
pub async fn erase(
    catalog: &Catalog,
    tenant: &Tenant,
    req: &ErasureRequest<'_>,
) -> AppResult<Erased> {
    let ErasureRequest {
        email,
        request,
        actor,
        caller,
        viewer,
    } = *req;
    let pool = &tenant.db;
    let email = check_email(email)?;
    if caller.eq_ignore_ascii_case(&email) {
        return Err(AppError::unprocessable(
            "erase-self",
            "you cannot erase your own account; ask another administrator",
        ));
    }
    let mut tx = crate::tenancy::db::begin(pool).await?;
    audit::lock_chain(&mut tx).await?;
    let found = find_on(&mut tx, &email, viewer).await?;
    if email.ends_with("@docket.invalid") {
        return Err(AppError::unprocessable(
            "erase-system",
            "docket's own system user is not a person",
        ));
    }
    if found.user.as_ref().is_some_and(|u| u["role"] == "admin") {
        return Err(AppError::unprocessable(
            "erase-admin",
            "this address is an administrator's account: change its role first, so that an erasure cannot remove who administered the firm by accident",
        ));
    }
    let mut out = Erased {
        filings_walled: found.filings_walled as i64,
        ..Default::default()
    };
    for f in &found.filings {
        if f.on_hold {
            out.filings_held += 1;
        } else {
            retention::delete_filing(&mut tx, &f.filing_id, &f.message_id).await?;
            out.filings_deleted += 1;
        }
    }
    if let Some(uid) = found.user.as_ref().and_then(|u| u["id"].as_str()) {
        anonymise_user(&mut tx, uid).await?;
        out.user_anonymised = true;
    }
    let uid = found
        .user
        .as_ref()
        .and_then(|u| u["id"].as_str())
        .unwrap_or("")
        .to_string();
    let lowered = db_lower(&tx, &email);
    // Contacts are stored Unicode-lowercased (`directory`); older ones were lowered as
    // ASCII only, which `LOWER(value)` matches on either backend.
    out.record_contacts_removed = sqlx::query(
        "DELETE FROM record_contacts WHERE kind = 'address' AND (LOWER(value) = $1 OR value = $2)",
    )
    .bind(&lowered)
    .bind(email.to_lowercase())
    .execute(&mut *tx)
    .await?
    .rows_affected() as i64;
    // The suggestion index's participants (incl. senders of mail forwarded in a body, which
    // the header search above does not see); held messages keep their headers.
    sqlx::query("DELETE FROM message_parties WHERE address = $1")
        .bind(email.to_lowercase())
        .execute(&mut *tx)
        .await?;
    for (sql, n) in [
        (
            "DELETE FROM login_attempts WHERE LOWER(email) = $1 OR user_id = $2",
            &mut out.sign_ins_deleted,
        ),
        (
            "DELETE FROM reset_requests WHERE LOWER(email) = $1 OR user_id = $2",
            &mut out.reset_requests_deleted,
        ),
    ] {
        *n = sqlx::query(sql)
            .bind(&lowered)
            .bind(&uid)
            .execute(&mut *tx)
            .await?
            .rows_affected() as i64;
    }
    let mut to_erase: Vec<(i64, Vec<&str>)> = Vec::new();
    for e in &found.audit_entries {
        let fields: Vec<&str> = audit::PERSONAL_FIELDS
            .into_iter()
            .zip([&e.actor, &e.subject, &e.detail])
            .filter(|(_, v)| mentions(v, &email))
            .map(|(f, _)| f)
            .collect();
        to_erase.push((e.seq, fields));
    }
    // Recorded in the catalogue first: verification accepts only recorded erasures.
    let recorded: Vec<(i64, &str)> = to_erase
        .iter()
        .flat_map(|(seq, fields)| fields.iter().map(move |f| (*seq, *f)))
        .collect();
    audit::anchor::record_erasures(catalog.pool(), &tenant.id, &recorded).await?;
    for (seq, fields) in &to_erase {
        audit::erase_fields(&mut tx, *seq, fields)
            .await
            .map_err(AppError::internal)?;
        out.audit_entries_erased += 1;
    }
    let mut detail = serde_json::to_value(&out).map_err(AppError::internal)?;
    detail["request"] = request.trim().into();
    audit::append(
        &mut tx,
        &AuditEvent::new(actor, "subject.erased", "gdpr").detail(detail),
    )
    .await?;
    tx.commit().await?;
    Ok(out)
}

/// The user stays (filings they filed refer to them) without anything that identifies them.
async fn anonymise_user(tx: &mut AnyConnection, uid: &str) -> AppResult<()> {
    let placeholder = format!("erased-{}@erased.invalid", uuid::Uuid::new_v4().simple());
    sqlx::query(
        "UPDATE users SET email = $1, display_name = '', google_iss = NULL, google_sub = NULL, \
         status = 'disabled' WHERE id = $2",
    )
    .bind(&placeholder)
    .bind(uid)
    .execute(&mut *tx)
    .await?;
    for sql in [
        "DELETE FROM sessions WHERE user_id = $1",
        "DELETE FROM access_tokens WHERE user_id = $1",
        "DELETE FROM recovery_codes WHERE user_id = $1",
        "DELETE FROM local_accounts WHERE user_id = $1",
        "DELETE FROM group_members WHERE user_id = $1",
        "DELETE FROM record_access WHERE principal_kind = 'user' AND principal_id = $1",
    ] {
        sqlx::query(sql).bind(uid).execute(&mut *tx).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::mentions;

    #[test]
    fn mentions_an_address_only_as_a_whole() {
        assert!(mentions("{\"email\":\"bob@x.com\"}", "bob@x.com"));
        assert!(mentions("BOB@X.COM", "bob@x.com"));
        assert!(mentions("mail to bob@x.com.", "bob@x.com"));
        assert!(!mentions("ebob@x.com", "bob@x.com"));
        assert!(!mentions("bob@x.com.au", "bob@x.com"));
        assert!(!mentions("bob@x.community", "bob@x.com"));
    }
}
