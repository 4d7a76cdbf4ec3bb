//! Passwords for local accounts: Argon2id PHC strings with the argon2 crate's default
//! parameters (rehash on login when they change); bcrypt hashes from an older system are
//! accepted and upgraded on the next successful sign-in. New passwords are 8..=256
//! characters, kept whole, scored by zxcvbn and checked against a bundled common list.

use std::collections::HashSet;
use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;
use sqlx::AnyConnection;

use super::session;
use crate::error::{AppError, AppResult};
use crate::time_fmt::now_rfc3339;

pub const MIN_CHARS: usize = 8;
pub const MAX_CHARS: usize = 256;

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub ok: bool,
    /// The hash should be replaced by a fresh Argon2id hash with the current parameters.
    pub needs_rehash: bool,
}

fn argon2() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default())
}

/// An Argon2id PHC string (`$argon2id$v=19$m=...`) for `password`, random 128-bit salt.
pub fn hash(password: &str) -> AppResult<String> {
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| AppError::internal(anyhow::anyhow!("salt: {e}")))?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AppError::internal(anyhow::anyhow!("argon2: {e}")))
}

fn is_bcrypt(stored: &str) -> bool {
    ["$2a$", "$2b$", "$2y$"]
        .iter()
        .any(|p| stored.starts_with(p))
}

/// Checks `password` against a stored Argon2id PHC string or bcrypt hash. Anything else
/// (or a malformed hash) never verifies.
pub fn verify(password: &str, stored: &str) -> Verified {
    let no = Verified {
        ok: false,
        needs_rehash: false,
    };
    if is_bcrypt(stored) {
        // Legacy hashes: bcrypt itself only ever saw the first 72 bytes; the whole password
        // goes into the Argon2id hash that replaces it.
        return match bcrypt::verify(password.as_bytes(), stored) {
            Ok(true) => Verified {
                ok: true,
                needs_rehash: true,
            },
            _ => no,
        };
    }
    let Ok(parsed) = PasswordHash::new(stored) else {
        return no;
    };
    if parsed.algorithm.as_str() != "argon2id" {
        return no;
    }
    let ok = argon2()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    Verified {
        ok,
        needs_rehash: ok && !current_params(&parsed),
    }
}

fn current_params(h: &PasswordHash<'_>) -> bool {
    let want = Params::default();
    let Ok(have) = Params::try_from(h) else {
        return false;
    };
    h.version == Some(Version::V0x13 as u32)
        && have.m_cost() == want.m_cost()
        && have.t_cost() == want.t_cost()
        && have.p_cost() == want.p_cost()
        && h.hash.map(|o| o.len()) == Some(Params::DEFAULT_OUTPUT_LEN)
        && h.salt.is_some()
}

/// A fixed Argon2id hash to verify against when there is no account, so an unknown
/// address costs the same time as a wrong password.
pub fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        hash("docket dummy password, never valid for anyone").expect("argon2 with defaults")
    })
}

fn common_passwords() -> &'static HashSet<String> {
    static LIST: OnceLock<HashSet<String>> = OnceLock::new();
    LIST.get_or_init(|| {
        include_str!("common_passwords.txt")
            .lines()
            .map(|l| l.trim().to_lowercase())
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    })
}

/// Whether `password` may be set: 8..=256 characters (counted as chars, nothing trimmed),
/// not a commonly used password, and zxcvbn score >= 3 (with `user_inputs` such as the
/// email and name as known words). The error says what to do instead.
pub fn check_policy(password: &str, user_inputs: &[&str]) -> Result<(), String> {
    let n = password.chars().count();
    if n < MIN_CHARS {
        return Err(format!(
            "the password is too short ({n} characters): use at least {MIN_CHARS}; a few \
             unrelated words make a long password that is easy to remember"
        ));
    }
    if n > MAX_CHARS {
        return Err(format!(
            "the password is too long ({n} characters): use at most {MAX_CHARS}"
        ));
    }
    if common_passwords().contains(&password.to_lowercase()) {
        return Err(
            "this is one of the most commonly used passwords and is guessed first: choose \
             another one (a few unrelated words work well)"
                .into(),
        );
    }
    // zxcvbn's matchers are quadratic; the first 100 characters decide the score of any
    // realistic password (the rest can only add strength).
    let head: String = password.chars().take(100).collect();
    let inputs: Vec<&str> = user_inputs
        .iter()
        .flat_map(|s| s.split(|c: char| !c.is_alphanumeric()))
        .chain(user_inputs.iter().copied())
        .filter(|s| s.chars().count() >= 3)
        .collect();
    let entropy = zxcvbn::zxcvbn(&head, &inputs);
    if u8::from(entropy.score()) >= 3 {
        return Ok(());
    }
    let mut msg = String::from("the password is too easy to guess");
    if let Some(fb) = entropy.feedback() {
        if let Some(w) = fb.warning() {
            msg.push_str(&format!(": {w}"));
        }
        let tips: Vec<String> = fb.suggestions().iter().map(|s| s.to_string()).collect();
        if !tips.is_empty() {
            msg.push_str(&format!(". {}", tips.join(" ")));
        }
    }
    if !msg.ends_with('.') {
        msg.push('.');
    }
    msg.push_str(
        " A longer password of several unrelated words is both strong and easy to remember.",
    );
    Err(msg)
}

/// Sets a user's password (policy checked), clearing the failure counter and lock, and
/// ends all of the user's sessions. The caller audits and commits.
pub async fn set_password(
    conn: &mut AnyConnection,
    user_id: &str,
    password: &str,
) -> AppResult<()> {
    let hashed = checked_hash(conn, user_id, password).await?;
    store_hash(conn, user_id, &hashed, None).await
}

/// Stores an already checked and hashed new password of a user changing their own: like
/// [`set_password`], but their session `keep` (its `id_hash`) stays signed in while every
/// other one ends. Hash first ([`hash_blocking`]), outside any transaction.
pub async fn store_changed_password(
    conn: &mut AnyConnection,
    user_id: &str,
    hashed: &str,
    keep: &str,
) -> AppResult<()> {
    store_hash(conn, user_id, hashed, Some(keep)).await
}

/// The policy check against the user's own address and name (422 `weak-password`), then
/// the hash. 404 for an unknown user.
async fn checked_hash(
    conn: &mut AnyConnection,
    user_id: &str,
    password: &str,
) -> AppResult<String> {
    let row = sqlx::query("SELECT email, display_name FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| AppError::not_found("no such user"))?;
    use sqlx::Row;
    let (email, name): (String, String) = (row.get("email"), row.get("display_name"));
    check_policy(password, &[&email, &name])
        .map_err(|m| AppError::unprocessable("weak-password", m))?;
    hash_blocking(password).await
}

async fn store_hash(
    conn: &mut AnyConnection,
    user_id: &str,
    hashed: &str,
    keep: Option<&str>,
) -> AppResult<()> {
    let now = now_rfc3339();
    let n = sqlx::query(
        "UPDATE local_accounts SET password_hash = $1, failed_logins = 0, locked_at = NULL, \
         password_set_at = $2, totp_pending_enc = NULL WHERE user_id = $3",
    )
    .bind(hashed)
    .bind(&now)
    .bind(user_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if n == 0 {
        sqlx::query(
            "INSERT INTO local_accounts (user_id, password_hash, failed_logins, password_set_at) \
             VALUES ($1, $2, 0, $3)",
        )
        .bind(user_id)
        .bind(hashed)
        .bind(&now)
        .execute(&mut *conn)
        .await?;
    }
    match keep {
        Some(keep) => session::end_others_for_user(conn, user_id, keep).await?,
        None => session::end_all_for_user(conn, user_id).await?,
    };
    Ok(())
}

/// Whether `h` looks like a hash [`verify`] accepts: a bcrypt hash (`$2a$`/`$2b$`/`$2y$`,
/// cost 4..=31, 53 characters after the cost) or an Argon2id PHC string.
pub fn valid_hash_format(h: &str) -> bool {
    if is_bcrypt(h) {
        let b = h.as_bytes();
        return h.len() == 60
            && b[6] == b'$'
            && h[4..6].parse::<u32>().is_ok_and(|c| (4..=31).contains(&c))
            && h[7..]
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'/');
    }
    match PasswordHash::new(h) {
        Ok(p) => {
            p.algorithm.as_str() == "argon2id"
                && p.hash.is_some()
                && p.salt.is_some()
                && Params::try_from(&p).is_ok()
        }
        Err(_) => false,
    }
}

/// Sets a user's password from an existing bcrypt or Argon2id hash (account migration).
/// The hash is upgraded to the current Argon2id parameters on the next successful sign-in.
pub async fn import_hash(
    conn: &mut AnyConnection,
    user_id: &str,
    bcrypt_or_argon_hash: &str,
) -> AppResult<()> {
    let h = bcrypt_or_argon_hash.trim();
    if !valid_hash_format(h) {
        return Err(AppError::unprocessable(
            "invalid-hash",
            "not a bcrypt ($2a$/$2b$/$2y$) or Argon2id PHC ($argon2id$...) password hash",
        ));
    }
    if sqlx::query("SELECT 1 FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_optional(&mut *conn)
        .await?
        .is_none()
    {
        return Err(AppError::not_found("no such user"));
    }
    store_hash(conn, user_id, h, None).await
}

/// Hashes off the async runtime (Argon2id takes tens of milliseconds).
pub async fn hash_blocking(password: &str) -> AppResult<String> {
    let pw = password.to_string();
    tokio::task::spawn_blocking(move || hash(&pw))
        .await
        .map_err(|e| AppError::internal(anyhow::anyhow!("hashing task: {e}")))?
}

/// [`verify`] off the async runtime.
pub async fn verify_blocking(password: &str, stored: &str) -> Verified {
    let (pw, st) = (password.to_string(), stored.to_string());
    tokio::task::spawn_blocking(move || verify(&pw, &st))
        .await
        .unwrap_or(Verified {
            ok: false,
            needs_rehash: false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = hash("a correct horse, battery staple").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        let v = verify("a correct horse, battery staple", &h);
        assert!(v.ok && !v.needs_rehash);
        assert!(!verify("a correct horse, battery stapl", &h).ok);
        assert!(!verify("anything", "not a hash").ok);
        assert_ne!(h, hash("a correct horse, battery staple").unwrap());
        assert!(valid_hash_format(&h));
    }

    #[test]
    fn old_argon2_params_need_rehash() {
        let weak = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8 * 1024, 1, 1, None).unwrap(),
        );
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let h = weak
            .hash_password(b"old params password", &salt)
            .unwrap()
            .to_string();
        let v = verify("old params password", &h);
        assert!(v.ok && v.needs_rehash);
        assert!(!verify("wrong", &h).needs_rehash);
        // Argon2i / Argon2d hashes are not accepted.
        let i = Argon2::new(Algorithm::Argon2i, Version::V0x13, Params::default())
            .hash_password(b"pw", &salt)
            .unwrap()
            .to_string();
        assert!(!verify("pw", &i).ok);
    }

    #[test]
    fn bcrypt_accepted_and_needs_rehash() {
        for prefix in ["$2b$", "$2a$", "$2y$"] {
            let h = bcrypt::hash("legacy password 1", 4).unwrap();
            let h = format!("{prefix}{}", &h[4..]);
            assert!(valid_hash_format(&h), "{h}");
            let v = verify("legacy password 1", &h);
            assert!(v.ok && v.needs_rehash, "{prefix}");
            assert!(!verify("legacy password 2", &h).ok);
        }
        assert!(!valid_hash_format("$2b$04$short"));
        assert!(!valid_hash_format("$1$md5crypt$abc"));
    }

    #[test]
    fn long_passwords_are_kept_whole() {
        let base: String = "Tr0ub4dor&3-horse-".repeat(12).chars().take(200).collect();
        assert_eq!(base.chars().count(), 200);
        let h = hash(&base).unwrap();
        assert!(verify(&base, &h).ok);
        // Differs only after character 72 (bcrypt would not notice).
        let mut other: Vec<char> = base.chars().collect();
        other[150] = if other[150] == 'x' { 'y' } else { 'x' };
        let other: String = other.into_iter().collect();
        assert!(!verify(&other, &h).ok);
        let truncated: String = base.chars().take(72).collect();
        assert!(!verify(&truncated, &h).ok);
        // Multi-byte characters count as one each.
        let e = "é".repeat(256);
        assert_eq!(e.len(), 512);
        if let Err(m) = check_policy(&e, &[]) {
            assert!(!m.contains("too long"), "{m}");
        }
        assert!(check_policy(&"é".repeat(257), &[])
            .unwrap_err()
            .contains("too long"));
        // Leading/trailing spaces are part of the password.
        let spaced = hash("  spaced out words here  ").unwrap();
        assert!(!verify("spaced out words here", &spaced).ok);
    }

    #[test]
    fn policy_messages() {
        let short = check_policy("abc12", &[]).unwrap_err();
        assert!(
            short.contains("too short") && short.contains("at least 8"),
            "{short}"
        );
        let max = format!("Glacier-Tulip-Kettle-93 {}", "x".repeat(232));
        assert_eq!(max.chars().count(), 256);
        assert!(check_policy(&max, &[]).is_ok());
        let long = format!("{max}x");
        assert!(check_policy(&long, &[]).unwrap_err().contains("too long"));
        let common = check_policy("Password123", &[]).unwrap_err();
        assert!(common.contains("commonly used"), "{common}");
        let common = check_policy("QWERTYUIOP", &[]).unwrap_err();
        assert!(common.contains("commonly used"), "{common}");
        let weak = check_policy("aaaaaaaaaaaa", &[]).unwrap_err();
        assert!(weak.contains("too easy to guess"), "{weak}");
        assert!(weak.to_lowercase().contains("repeat"), "{weak}");
        // The user's own email is a known word.
        let own = check_policy("adamsmith2024", &["adamsmith@a.test", "Adam Smith"]);
        assert!(own.is_err());
        assert!(check_policy("correct horse battery staple velvet", &[]).is_ok());
        assert!(check_policy("Glacier-Tulip-Kettle-93", &[]).is_ok());
    }
}
