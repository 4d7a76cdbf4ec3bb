//! TOTP second factor (RFC 6238: HMAC-SHA1, 6 digits, 30 s steps, ±1 step of skew) and
//! one-time recovery codes. Secrets are sealed with the tenant's data key (AAD names the
//! user); a code is refused when its step is not after the last accepted one (no replay).
//! Recovery codes (10, shown once) are stored as SHA-256 and each works once.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use rand::RngCore;
use sqlx::{AnyPool, Row};
use totp_rs::{Algorithm, TOTP};

use super::{hash_secret, same};
use crate::audit::{self, AuditEvent};
use crate::directory::User;
use crate::error::{AppError, AppResult};
use crate::tenancy::Tenant;
use crate::time_fmt::now_rfc3339;

pub const ISSUER: &str = "docket";
pub const DIGITS: usize = 6;
pub const STEP_SECONDS: u64 = 30;
pub const RECOVERY_CODES: usize = 10;

/// What the user needs to add docket to an authenticator app.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Enrolment {
    /// The shared secret, base32 (RFC 4648, no padding), for typing in by hand.
    pub secret: String,
    /// `otpauth://totp/docket:<email>?secret=...&issuer=docket`
    pub otpauth_url: String,
    /// The otpauth URL as a QR code (an SVG document).
    pub qr_svg: String,
}

/// Which second factor a code matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Factor {
    Totp,
    RecoveryCode,
}

/// What a user's TOTP secrets are sealed for (the AAD's purpose).
pub fn purpose(user_id: &str) -> String {
    format!("totp:{user_id}")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn totp_for(secret: &[u8], account: &str) -> AppResult<TOTP> {
    // The otpauth label may not contain ':'.
    let account = account.replace(':', "_");
    TOTP::new(
        Algorithm::SHA1,
        DIGITS,
        1,
        STEP_SECONDS,
        secret.to_vec(),
        Some(ISSUER.to_string()),
        account,
    )
    .map_err(|e| AppError::internal(anyhow::anyhow!("totp: {e}")))
}

/// The code for `secret` at time `unix` (seconds).
pub fn code_at(secret: &[u8], unix: u64) -> String {
    TOTP::new_unchecked(
        Algorithm::SHA1,
        DIGITS,
        1,
        STEP_SECONDS,
        secret.to_vec(),
        None,
        String::new(),
    )
    .generate(unix)
}

/// The step (`unix / 30`) of `code` within ±1 step of `unix`, when one matches and is after
/// `last_step`.
pub fn matching_step(secret: &[u8], code: &str, unix: u64, last_step: Option<i64>) -> Option<i64> {
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = (unix / STEP_SECONDS) as i64;
    let mut found = None;
    for step in [now - 1, now, now + 1] {
        if step < 0 {
            continue;
        }
        let expected = code_at(secret, step as u64 * STEP_SECONDS);
        if same(&expected, code) && last_step.is_none_or(|l| step > l) {
            found = Some(step);
        }
    }
    found
}

fn enrolment(secret: &[u8], email: &str) -> AppResult<Enrolment> {
    let t = totp_for(secret, email)?;
    let otpauth_url = t.get_url();
    let qr = qrcode::QrCode::new(otpauth_url.as_bytes())
        .map_err(|e| AppError::internal(anyhow::anyhow!("qr code: {e}")))?;
    let qr_svg = qr
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(220, 220)
        .quiet_zone(true)
        .build();
    Ok(Enrolment {
        secret: t.get_secret_base32(),
        otpauth_url,
        qr_svg,
    })
}

/// An SVG as a `data:` URL for an `<img>` (the console's CSP allows `img-src data:`).
pub fn svg_data_url(svg: &str) -> String {
    format!(
        "data:image/svg+xml;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(svg.as_bytes())
    )
}

struct Secrets {
    active: Option<Vec<u8>>,
    pending: Option<Vec<u8>>,
    last_step: Option<i64>,
}

async fn secrets(tenant: &Tenant, user_id: &str) -> AppResult<Option<Secrets>> {
    let Some(r) = sqlx::query(
        "SELECT totp_secret_enc, totp_pending_enc, totp_last_step FROM local_accounts WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(&tenant.db)
    .await?
    else {
        return Ok(None);
    };
    let open = |sealed: Option<Vec<u8>>| -> AppResult<Option<Vec<u8>>> {
        sealed
            .map(|s| {
                tenant
                    .blobs
                    .open_secret(&purpose(user_id), &s)
                    .map_err(|_| AppError::internal(anyhow::anyhow!("cannot open a TOTP secret")))
            })
            .transpose()
    };
    let active: Option<Vec<u8>> = r.try_get("totp_secret_enc")?;
    let pending: Option<Vec<u8>> = r.try_get("totp_pending_enc")?;
    Ok(Some(Secrets {
        active: open(active)?,
        pending: open(pending)?,
        last_step: r.try_get("totp_last_step")?,
    }))
}

/// Whether the user has a confirmed TOTP secret.
pub async fn is_enrolled(pool: &AnyPool, user_id: &str) -> AppResult<bool> {
    Ok(sqlx::query(
        "SELECT 1 FROM local_accounts WHERE user_id = $1 AND totp_secret_enc IS NOT NULL",
    )
    .bind(user_id)
    .fetch_optional(pool)
    .await?
    .is_some())
}

fn already_enrolled() -> AppError {
    AppError::new(
        axum::http::StatusCode::CONFLICT,
        "already-enrolled",
        "an authenticator is already set up for this account: enter its code instead",
    )
}

/// Proposes a new secret (stored sealed as pending until confirmed by a code). Refused
/// once an authenticator is confirmed: replacing one is [`begin_reenrolment`].
pub async fn begin_enrolment(tenant: &Tenant, user: &User) -> AppResult<Enrolment> {
    let Some(s) = secrets(tenant, &user.id).await? else {
        return Err(AppError::new(
            axum::http::StatusCode::CONFLICT,
            "no-password",
            "this account has no password yet",
        ));
    };
    if s.active.is_some() {
        return Err(already_enrolled());
    }
    propose_secret(tenant, user).await
}

/// A new random secret, stored sealed as the user's pending one (replacing any earlier).
async fn propose_secret(tenant: &Tenant, user: &User) -> AppResult<Enrolment> {
    let mut secret = [0u8; 20];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let sealed = tenant.blobs.seal_secret(&purpose(&user.id), &secret);
    sqlx::query("UPDATE local_accounts SET totp_pending_enc = $1 WHERE user_id = $2")
        .bind(sealed)
        .bind(&user.id)
        .execute(&tenant.db)
        .await?;
    enrolment(&secret, &user.email)
}

/// The pending secret, if any, when the user's enrolment state is `enrolled`.
async fn pending_of(tenant: &Tenant, user: &User, enrolled: bool) -> AppResult<Option<Enrolment>> {
    match secrets(tenant, &user.id).await? {
        Some(Secrets {
            active,
            pending: Some(p),
            ..
        }) if active.is_some() == enrolled => enrolment(&p, &user.email).map(Some),
        _ => Ok(None),
    }
}

/// The enrolment in progress (to show the same QR code again), if any.
pub async fn pending_enrolment(tenant: &Tenant, user: &User) -> AppResult<Option<Enrolment>> {
    pending_of(tenant, user, false).await
}

/// Confirms the pending secret with a code from the app: it becomes the user's TOTP secret,
/// and 10 new recovery codes are generated and returned (shown once). Audited
/// `totp.enrolled`. A wrong code is a 422 `invalid-code`.
pub async fn confirm_enrolment(
    tenant: &Tenant,
    user: &User,
    code: &str,
    actor: &str,
) -> AppResult<Vec<String>> {
    let s = secrets(tenant, &user.id).await?;
    let Some(s) = s else {
        return Err(AppError::new(
            axum::http::StatusCode::CONFLICT,
            "no-password",
            "this account has no password yet",
        ));
    };
    if s.active.is_some() {
        return Err(already_enrolled());
    }
    let Some(pending) = s.pending else {
        return Err(AppError::new(
            axum::http::StatusCode::CONFLICT,
            "no-enrolment",
            "start the authenticator set-up first",
        ));
    };
    let code = normalise(code);
    let Some(step) = matching_step(&pending, &code, unix_now(), None) else {
        return Err(wrong_enrolment_code());
    };
    let sealed = tenant.blobs.seal_secret(&purpose(&user.id), &pending);
    let codes = new_recovery_codes();
    let mut tx = tenant.begin().await?;
    audit::lock_chain(&mut tx).await?;
    let n = sqlx::query(
        "UPDATE local_accounts SET totp_secret_enc = $1, totp_pending_enc = NULL, totp_last_step = $2 \
         WHERE user_id = $3 AND totp_secret_enc IS NULL",
    )
    .bind(sealed)
    .bind(step)
    .bind(&user.id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(already_enrolled());
    }
    store_recovery_codes(&mut tx, &user.id, &codes).await?;
    audit::append(
        &mut tx,
        &AuditEvent::new(actor, "totp.enrolled", &user.id)
            .detail(serde_json::json!({"recovery_codes": codes.len()})),
    )
    .await?;
    tx.commit().await?;
    Ok(codes)
}

fn not_enrolled() -> AppError {
    AppError::new(
        axum::http::StatusCode::CONFLICT,
        "not-enrolled",
        "no authenticator is set up for this account yet: sign in again to set one up",
    )
}

/// Replacing a confirmed authenticator (a new phone): proposes a new secret, kept sealed as
/// pending beside the active one, which goes on working until a code from the new app
/// confirms the swap ([`confirm_reenrolment`]). Every call makes a new secret (a key seen
/// once, by anyone, is never handed to the user later); [`pending_reenrolment`] shows the
/// current one again. The caller has made the user prove the old factor (a recent step-up
/// with the old app's code or a recovery code). 409 `not-enrolled` without one.
pub async fn begin_reenrolment(tenant: &Tenant, user: &User) -> AppResult<Enrolment> {
    let s = secrets(tenant, &user.id).await?.ok_or_else(not_enrolled)?;
    if s.active.is_none() {
        return Err(not_enrolled());
    }
    propose_secret(tenant, user).await
}

/// The replacement in progress (to show the same QR code after a mistyped code), if any.
pub async fn pending_reenrolment(tenant: &Tenant, user: &User) -> AppResult<Option<Enrolment>> {
    pending_of(tenant, user, true).await
}

/// Confirms a re-enrolment with a code from the new app: the pending secret replaces the
/// old one (whose codes stop working at once), all recovery codes are replaced by 10 new
/// ones (returned, shown once). Audited `totp.replaced`. A wrong code is a 422
/// `invalid-code` and changes nothing; 409 `no-enrolment` when none was begun.
pub async fn confirm_reenrolment(
    tenant: &Tenant,
    user: &User,
    code: &str,
    actor: &str,
) -> AppResult<Vec<String>> {
    let s = secrets(tenant, &user.id).await?.ok_or_else(not_enrolled)?;
    let (Some(_), Some(pending)) = (s.active, s.pending) else {
        return Err(AppError::new(
            axum::http::StatusCode::CONFLICT,
            "no-enrolment",
            "start replacing the authenticator first",
        ));
    };
    let Some(step) = matching_step(&pending, &normalise(code), unix_now(), None) else {
        return Err(wrong_enrolment_code());
    };
    let sealed = tenant.blobs.seal_secret(&purpose(&user.id), &pending);
    let codes = new_recovery_codes();
    let mut tx = tenant.begin().await?;
    audit::lock_chain(&mut tx).await?;
    let n = sqlx::query(
        "UPDATE local_accounts SET totp_secret_enc = $1, totp_pending_enc = NULL, \
         totp_last_step = $2 WHERE user_id = $3 AND totp_pending_enc IS NOT NULL",
    )
    .bind(sealed)
    .bind(step)
    .bind(&user.id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(AppError::new(
            axum::http::StatusCode::CONFLICT,
            "no-enrolment",
            "the authenticator changed meanwhile: start again",
        ));
    }
    store_recovery_codes(&mut tx, &user.id, &codes).await?;
    audit::append(
        &mut tx,
        &AuditEvent::new(actor, "totp.replaced", &user.id)
            .detail(serde_json::json!({"recovery_codes": codes.len()})),
    )
    .await?;
    tx.commit().await?;
    Ok(codes)
}

fn wrong_enrolment_code() -> AppError {
    AppError::unprocessable(
        "invalid-code",
        "that code does not match: check the time on your phone and enter the current \
         6-digit code from the authenticator app",
    )
}

/// `ABCDE-FGHIJ-KLMNO-PQRST` style input → lowercase without separators.
fn normalise(code: &str) -> String {
    code.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

const CODE_ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";

/// Ten recovery codes of 20 characters (~99 bits each), grouped by 5 for reading.
fn new_recovery_codes() -> Vec<String> {
    let mut rng = rand::rngs::OsRng;
    (0..RECOVERY_CODES)
        .map(|_| {
            let raw: String = (0..20)
                .map(|_| CODE_ALPHABET[(rng.next_u32() as usize) % CODE_ALPHABET.len()] as char)
                .collect();
            raw.as_bytes()
                .chunks(5)
                .map(|c| std::str::from_utf8(c).expect("ascii"))
                .collect::<Vec<_>>()
                .join("-")
        })
        .collect()
}

async fn store_recovery_codes(
    conn: &mut sqlx::AnyConnection,
    user_id: &str,
    codes: &[String],
) -> AppResult<()> {
    sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    for c in codes {
        sqlx::query("INSERT INTO recovery_codes (user_id, code_hash) VALUES ($1, $2)")
            .bind(user_id)
            .bind(hash_secret(&normalise(c)))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Checks a 6-digit TOTP code (not replayed) or an unused recovery code (then spent, audited
/// `recovery_code.used`). `Ok(None)` when it matches nothing or the user is not enrolled.
pub async fn verify(
    tenant: &Tenant,
    user: &User,
    code_or_recovery_code: &str,
) -> AppResult<Option<Factor>> {
    let user_id = user.id.as_str();
    let code = normalise(code_or_recovery_code);
    if code.is_empty() || code.len() > 64 {
        return Ok(None);
    }
    let Some(s) = secrets(tenant, user_id).await? else {
        return Ok(None);
    };
    let Some(secret) = s.active else {
        return Ok(None);
    };
    if code.len() == DIGITS && code.bytes().all(|b| b.is_ascii_digit()) {
        let Some(step) = matching_step(&secret, &code, unix_now(), s.last_step) else {
            return Ok(None);
        };
        // Atomic: two requests with the same code cannot both pass.
        let n = sqlx::query(
            "UPDATE local_accounts SET totp_last_step = $1 \
             WHERE user_id = $2 AND (totp_last_step IS NULL OR totp_last_step < $1)",
        )
        .bind(step)
        .bind(user_id)
        .execute(&tenant.db)
        .await?
        .rows_affected();
        return Ok((n == 1).then_some(Factor::Totp));
    }
    let mut tx = tenant.begin().await?;
    audit::lock_chain(&mut tx).await?;
    let n = sqlx::query(
        "UPDATE recovery_codes SET used_at = $1 WHERE user_id = $2 AND code_hash = $3 AND used_at IS NULL",
    )
    .bind(now_rfc3339())
    .bind(user_id)
    .bind(hash_secret(&code))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n != 1 {
        return Ok(None);
    }
    let left = unused_codes(&mut tx, user_id).await?;
    audit::append(
        &mut tx,
        &AuditEvent::new(&user.email, "recovery_code.used", user_id)
            .detail(serde_json::json!({"left": left})),
    )
    .await?;
    tx.commit().await?;
    Ok(Some(Factor::RecoveryCode))
}

async fn unused_codes(conn: &mut sqlx::AnyConnection, user_id: &str) -> AppResult<i64> {
    Ok(
        sqlx::query("SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL")
            .bind(user_id)
            .fetch_one(&mut *conn)
            .await?
            .try_get(0)?,
    )
}

/// How many unused recovery codes the user has.
pub async fn recovery_codes_left(pool: &AnyPool, user_id: &str) -> AppResult<i64> {
    let mut conn = pool.acquire().await?;
    unused_codes(&mut conn, user_id).await
}

/// Replaces all of the user's recovery codes with 10 new ones (returned, shown once).
/// Audited `recovery_codes.regenerated`. 409 `not-enrolled` without TOTP.
pub async fn regenerate_recovery_codes(
    tenant: &Tenant,
    user_id: &str,
    actor: &str,
) -> AppResult<Vec<String>> {
    if !is_enrolled(&tenant.db, user_id).await? {
        return Err(AppError::new(
            axum::http::StatusCode::CONFLICT,
            "not-enrolled",
            "set up an authenticator app first",
        ));
    }
    let codes = new_recovery_codes();
    let mut tx = tenant.begin().await?;
    audit::lock_chain(&mut tx).await?;
    store_recovery_codes(&mut tx, user_id, &codes).await?;
    audit::append(
        &mut tx,
        &AuditEvent::new(actor, "recovery_codes.regenerated", user_id)
            .detail(serde_json::json!({"count": codes.len()})),
    )
    .await?;
    tx.commit().await?;
    Ok(codes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_vectors() {
        // RFC 6238 appendix B, SHA-1, last 6 of the 8 digits.
        let secret = b"12345678901234567890";
        assert_eq!(code_at(secret, 59), "287082");
        assert_eq!(code_at(secret, 1111111109), "081804");
        assert_eq!(code_at(secret, 1234567890), "005924");
        assert_eq!(code_at(secret, 2000000000), "279037");
    }

    #[test]
    fn skew_and_replay() {
        let secret = b"12345678901234567890";
        let t = 1_234_567_890u64;
        let step = (t / 30) as i64;
        let now = code_at(secret, t);
        assert_eq!(matching_step(secret, &now, t, None), Some(step));
        let prev = code_at(secret, t - 30);
        assert_eq!(matching_step(secret, &prev, t, None), Some(step - 1));
        let next = code_at(secret, t + 30);
        assert_eq!(matching_step(secret, &next, t, None), Some(step + 1));
        let old = code_at(secret, t - 90);
        assert_eq!(matching_step(secret, &old, t, None), None);
        // A step already used (or an earlier one) is refused.
        assert_eq!(matching_step(secret, &now, t, Some(step)), None);
        assert_eq!(matching_step(secret, &prev, t, Some(step - 1)), None);
        assert_eq!(matching_step(secret, &next, t, Some(step)), Some(step + 1));
        assert_eq!(matching_step(secret, "12345", t, None), None);
        assert_eq!(matching_step(secret, "abcdef", t, None), None);
    }

    #[test]
    fn enrolment_has_url_and_svg() {
        let e = enrolment(b"12345678901234567890", "adam@a.test").unwrap();
        assert_eq!(e.secret, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert!(
            e.otpauth_url
                .starts_with("otpauth://totp/docket:adam%40a.test?"),
            "{}",
            e.otpauth_url
        );
        assert!(e.otpauth_url.contains("issuer=docket"));
        assert!(e.qr_svg.contains("<svg"));
        assert!(svg_data_url(&e.qr_svg).starts_with("data:image/svg+xml;base64,"));
    }

    #[test]
    fn recovery_codes_shape() {
        let c = new_recovery_codes();
        assert_eq!(c.len(), 10);
        assert!(c
            .iter()
            .all(|x| x.len() == 23 && x.matches('-').count() == 3));
        assert_eq!(normalise(" ABCDE-fghij "), "abcdefghij");
        let mut d = c.clone();
        d.dedup();
        assert_eq!(d.len(), 10);
    }
}
