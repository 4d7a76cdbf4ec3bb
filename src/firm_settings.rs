//! A firm's own settings, changed by its administrators (console "Firm settings" page):
//! the sign-in domains and address mappings that decide who signs in to the firm, the
//! subject pattern that finds record references in subjects (with a test against the
//! firm's records), and the time zone. Every change is audited in the firm's chain.
//!
//! Domains and mappings live in the instance catalogue (they route a sign-in to its firm);
//! the audit entry lives in the firm's database. A change whose audit entry cannot be
//! written is undone, so no unaudited change stays.

use axum::http::StatusCode;
use serde::Serialize;
use sqlx::Row;

use crate::audit::{self, AuditEvent};
use crate::error::{AppError, AppResult};
use crate::suggest;
use crate::tenancy::{valid_domain, Catalog, Tenant};

/// The settings as the page shows them.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FirmSettings {
    /// Sign-in domains (Google Workspace `hd`, and the console's e-mail domain), sorted.
    pub domains: Vec<String>,
    /// Single addresses mapped to the firm (accounts outside its domains), sorted.
    pub addresses: Vec<String>,
    /// The subject pattern in force (the default when none is set).
    pub subject_pattern: String,
    /// Whether `subject_pattern` is docket's default.
    pub default_pattern: bool,
    /// The Gmail label filed mail gets, before the record's reference (`Filed` labels a
    /// message filed to M-1 `Filed/M-1`); `null`: docket labels nothing.
    pub gmail_label_prefix: Option<String>,
}

pub async fn load(catalog: &Catalog, tenant: &Tenant) -> AppResult<FirmSettings> {
    let info = catalog
        .tenant_info(&tenant.id)
        .await?
        .ok_or_else(|| AppError::not_found("no such tenant"))?;
    let mut domains = info.domains;
    domains.sort();
    let stored = suggest::setting(&tenant.db, "subject_pattern").await?;
    Ok(FirmSettings {
        domains,
        addresses: catalog.tenant_addresses(&tenant.id).await?,
        default_pattern: stored.is_none(),
        subject_pattern: stored.unwrap_or_else(|| suggest::DEFAULT_SUBJECT_PATTERN.into()),
        gmail_label_prefix: gmail_label_prefix(tenant).await?,
    })
}

/// The settings key of [`FirmSettings::gmail_label_prefix`].
const GMAIL_LABEL_PREFIX: &str = "gmail_label_prefix";

/// The firm's Gmail label prefix; `None` when it does not label filed mail.
pub async fn gmail_label_prefix(tenant: &Tenant) -> AppResult<Option<String>> {
    suggest::setting(&tenant.db, GMAIL_LABEL_PREFIX).await
}

/// Turns the "Filed" labels in Gmail on with `prefix` (1 to 40 characters, no control
/// characters, no empty level such as `/x`, `x/` or `a//b`, not one of Gmail's own labels
/// such as INBOX), or off with `None`. 422 `invalid-label`. Audited `setting.changed`.
pub async fn set_gmail_label_prefix(
    tenant: &Tenant,
    prefix: Option<&str>,
    actor: &str,
) -> AppResult<()> {
    let Some(prefix) = prefix.map(str::trim).filter(|p| !p.is_empty()) else {
        return suggest::clear_setting(&tenant.db, GMAIL_LABEL_PREFIX, actor).await;
    };
    valid_label_prefix(prefix).map_err(|m| AppError::unprocessable("invalid-label", m))?;
    suggest::set_setting(&tenant.db, GMAIL_LABEL_PREFIX, prefix, actor).await
}

/// Gmail's system labels (users.labels, type `system`): never a firm's prefix.
const GMAIL_SYSTEM_LABELS: &[&str] = &[
    "INBOX",
    "SPAM",
    "TRASH",
    "UNREAD",
    "STARRED",
    "IMPORTANT",
    "SENT",
    "DRAFT",
    "CHAT",
];

fn valid_label_prefix(p: &str) -> Result<(), String> {
    if p.chars().count() > 40 {
        return Err("a label prefix has at most 40 characters".into());
    }
    if p.chars().any(char::is_control) || p.split('/').any(|level| level.trim().is_empty()) {
        return Err("a label prefix has no control characters and no empty level (nothing before, after or between its /)".into());
    }
    let first = p.split('/').next().unwrap_or(p).to_ascii_uppercase();
    if GMAIL_SYSTEM_LABELS.contains(&first.as_str()) || first.starts_with("CATEGORY_") {
        return Err(format!("{p} is one of Gmail's own labels"));
    }
    Ok(())
}

fn conflict(slug: &'static str, detail: String) -> AppError {
    AppError::new(StatusCode::CONFLICT, slug, detail)
}

/// Writes the audit entry of a catalogue change, undoing the change when it cannot.
async fn audited(
    tenant: &Tenant,
    event: AuditEvent,
    undo: impl std::future::Future<Output = anyhow::Result<bool>>,
) -> AppResult<()> {
    if let Err(e) = audit::record(&tenant.db, &[event]).await {
        if let Err(u) = undo.await {
            tracing::error!(error = %u, "could not undo an unaudited settings change");
        }
        return Err(e.into());
    }
    Ok(())
}

/// Mail services whose addresses belong to people, not to a firm: never a firm's domain.
pub(crate) const PERSONAL_MAIL: &[&str] = &[
    "gmail.com",
    "googlemail.com",
    "outlook.com",
    "hotmail.com",
    "live.com",
    "msn.com",
    "yahoo.com",
    "icloud.com",
    "me.com",
    "aol.com",
    "proton.me",
    "protonmail.com",
    "gmx.com",
    "gmx.net",
    "gmx.de",
    "web.de",
    "yandex.com",
    "mail.com",
    "zoho.com",
];

/// Adds a sign-in domain. 422 `invalid-domain`, 422 `personal-mail-domain` (gmail.com and
/// the like); 409 `domain-taken` when any firm on this instance has it or has an address
/// in it mapped (which firm is not said). Audited `tenant.domain_added`.
pub async fn add_domain(
    catalog: &Catalog,
    tenant: &Tenant,
    domain: &str,
    actor: &str,
) -> AppResult<()> {
    let domain = domain.trim().trim_start_matches('@').to_ascii_lowercase();
    if !valid_domain(&domain) {
        return Err(AppError::unprocessable(
            "invalid-domain",
            format!("“{domain}” is not a domain name: give one such as example-law.com"),
        ));
    }
    if PERSONAL_MAIL.contains(&domain.as_str()) {
        return Err(AppError::unprocessable(
            "personal-mail-domain",
            format!(
                "{domain} is a personal-mail service, not a firm's domain: map single \
                 addresses of it instead"
            ),
        ));
    }
    if catalog
        .domain_has_others_addresses(&tenant.id, &domain)
        .await?
        || !catalog.add_domain(&tenant.id, &domain).await?
    {
        return Err(conflict(
            "domain-taken",
            format!(
                "{domain} already belongs to a firm on this docket (this one or another): \
                 ask the operator if it should be yours"
            ),
        ));
    }
    let event = AuditEvent::new(actor, "tenant.domain_added", &tenant.id)
        .detail(serde_json::json!({ "domain": domain }));
    audited(tenant, event, catalog.remove_domain(&tenant.id, &domain)).await
}

/// Active people whose address is in `domain` and not mapped on its own: those who sign in
/// through the domain.
async fn people_in_domain(
    catalog: &Catalog,
    tenant: &Tenant,
    domain: &str,
) -> AppResult<Vec<String>> {
    let mapped = catalog.tenant_addresses(&tenant.id).await?;
    let rows = sqlx::query(
        "SELECT email FROM users WHERE status = 'active' AND LOWER(email) LIKE $1 ORDER BY email",
    )
    .bind(format!("%@{domain}"))
    .fetch_all(&tenant.db)
    .await?;
    Ok(rows
        .iter()
        .map(|r| r.get::<String, _>(0).to_ascii_lowercase())
        .filter(|e| !mapped.contains(e))
        .collect())
}

fn some_of(people: &[String]) -> String {
    let shown: Vec<&str> = people.iter().take(3).map(String::as_str).collect();
    let more = people.len().saturating_sub(shown.len());
    match more {
        0 => shown.join(", "),
        n => format!("{} and {n} more", shown.join(", ")),
    }
}

/// Removes a sign-in domain. 404 when the firm does not have it; 409 `domain-in-use` while
/// active people sign in through it (they would be locked out). Audited
/// `tenant.domain_removed`.
pub async fn remove_domain(
    catalog: &Catalog,
    tenant: &Tenant,
    domain: &str,
    actor: &str,
) -> AppResult<()> {
    let domain = domain.trim().to_ascii_lowercase();
    let people = people_in_domain(catalog, tenant, &domain).await?;
    if !people.is_empty() {
        return Err(conflict(
            "domain-in-use",
            format!(
                "{} active people sign in through {domain} ({}): they could no longer sign \
                 in. Suspend them or map their addresses first",
                people.len(),
                some_of(&people)
            ),
        ));
    }
    if !catalog.remove_domain(&tenant.id, &domain).await? {
        return Err(AppError::not_found(format!(
            "{domain} is not one of the firm's domains"
        )));
    }
    let event = AuditEvent::new(actor, "tenant.domain_removed", &tenant.id)
        .detail(serde_json::json!({ "domain": domain }));
    audited(tenant, event, catalog.add_domain(&tenant.id, &domain)).await
}

/// Maps one address outside the firm's domains (a consultant's Gmail, say) to the firm.
/// 422 `invalid-address`, 422 `address-in-domain` (it signs in through the domain already);
/// 409 `address-taken` when it is mapped, or its domain belongs, to any firm. Audited
/// `tenant.address_mapped`.
pub async fn map_address(
    catalog: &Catalog,
    tenant: &Tenant,
    email: &str,
    actor: &str,
) -> AppResult<()> {
    let email = email.trim().to_ascii_lowercase();
    let domain = match email.split_once('@') {
        Some((local, d)) if !local.is_empty() && valid_domain(d) => d.to_string(),
        _ => {
            return Err(AppError::unprocessable(
                "invalid-address",
                format!("“{email}” is not an e-mail address"),
            ))
        }
    };
    match catalog.tenant_id_for_domain(&domain).await? {
        Some(id) if id == tenant.id => {
            return Err(AppError::unprocessable(
                "address-in-domain",
                format!("{email} already signs in through the firm's domain {domain}"),
            ))
        }
        Some(_) => return Err(taken(&email)),
        None => {}
    }
    if catalog.tenant_id_for_address(&email).await?.is_some() {
        return Err(taken(&email));
    }
    catalog
        .map_address(&tenant.id, &email)
        .await
        .map_err(|_| taken(&email))?;
    let event = AuditEvent::new(actor, "tenant.address_mapped", &tenant.id)
        .detail(serde_json::json!({ "email": email }));
    audited(tenant, event, catalog.unmap_address(&tenant.id, &email)).await
}

fn taken(email: &str) -> AppError {
    conflict(
        "address-taken",
        format!(
            "{email} already signs in to a firm on this docket (this one or another): ask \
             the operator if it should be yours"
        ),
    )
}

/// Removes an address mapping. 404 when there is none; 409 `address-in-use` while an active
/// person of the firm signs in with it. Audited `tenant.address_unmapped`.
pub async fn unmap_address(
    catalog: &Catalog,
    tenant: &Tenant,
    email: &str,
    actor: &str,
) -> AppResult<()> {
    let email = email.trim().to_ascii_lowercase();
    let active = sqlx::query("SELECT 1 FROM users WHERE LOWER(email) = $1 AND status = 'active'")
        .bind(&email)
        .fetch_optional(&tenant.db)
        .await?
        .is_some();
    if active {
        return Err(conflict(
            "address-in-use",
            format!(
                "{email} is an active person of the firm who signs in with this mapping: \
                 suspend them first"
            ),
        ));
    }
    if !catalog.unmap_address(&tenant.id, &email).await? {
        return Err(AppError::not_found(format!(
            "{email} is not mapped to the firm"
        )));
    }
    let event = AuditEvent::new(actor, "tenant.address_unmapped", &tenant.id)
        .detail(serde_json::json!({ "email": email }));
    let remap = async {
        catalog.map_address(&tenant.id, &email).await?;
        Ok(true)
    };
    audited(tenant, event, remap).await
}

/// Sets the subject pattern (a regular expression, 500 characters at most); an empty one
/// removes the firm's own, so docket's default (and its future improvements) applies. 422 `invalid-pattern`. Audited `setting.changed`.
pub async fn set_subject_pattern(tenant: &Tenant, pattern: &str, actor: &str) -> AppResult<()> {
    let pattern = pattern.trim();
    if pattern.is_empty() {
        return suggest::clear_setting(&tenant.db, "subject_pattern", actor).await;
    }
    suggest::validate_pattern(pattern)
        .map_err(|m| AppError::unprocessable("invalid-pattern", m))?;
    suggest::set_setting(&tenant.db, "subject_pattern", pattern, actor).await
}

/// One reference a pattern finds in a subject, and the records it names.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Found {
    pub reference: String,
    /// `kind:reference — title` of each record with this reference (closed ones say so).
    pub records: Vec<String>,
}

/// What `pattern` finds in `subject` (at most 10 references, as filing does) and which of
/// the firm's records each names. Changes nothing. 422 `invalid-pattern`.
pub async fn test_subject_pattern(
    tenant: &Tenant,
    pattern: &str,
    subject: &str,
) -> AppResult<Vec<Found>> {
    let pattern = match pattern.trim() {
        "" => suggest::DEFAULT_SUBJECT_PATTERN,
        p => p,
    };
    let re = suggest::validate_pattern(pattern)
        .map_err(|m| AppError::unprocessable("invalid-pattern", m))?;
    let mut out: Vec<Found> = Vec::new();
    for m in re.find_iter(subject).take(10) {
        let reference = m.as_str().to_string();
        if out
            .iter()
            .any(|f| f.reference.eq_ignore_ascii_case(&reference))
        {
            continue;
        }
        let rows = sqlx::query(
            "SELECT kind, reference, title, status FROM records \
             WHERE UPPER(reference) = UPPER($1) ORDER BY kind",
        )
        .bind(&reference)
        .fetch_all(&tenant.db)
        .await?;
        let records = rows
            .iter()
            .map(|r| {
                let (kind, rf, title, status): (String, String, String, String) =
                    (r.get(0), r.get(1), r.get(2), r.get(3));
                let closed = if status == "open" { "" } else { " (closed)" };
                format!("{kind}:{rf} — {title}{closed}")
            })
            .collect();
        out.push(Found { reference, records });
    }
    Ok(out)
}
