//! The console's "Firm settings" page (`/console/tenant`): the firm's facts, who signs in
//! (domains and address mappings), the subject pattern with a test, the time zone, and
//! closing the firm's docket. The changes themselves are in [`crate::firm_settings`].

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use super::security::message;
use super::{render, render_status, Chrome, ConsoleCtx, ConsoleForm};
use crate::error::AppError;
use crate::firm_settings::{self as settings, FirmSettings, Found};
use crate::http::admin::security::{self as api, TenantFacts};
use crate::http::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/tenant", get(tenant_page))
        .route("/console/tenant/close", post(close_tenant))
        .route("/console/tenant/time-zone", post(set_time_zone))
        .route("/console/tenant/subject-pattern", post(subject_pattern))
        .route("/console/tenant/gmail-labels", post(gmail_labels))
        .route("/console/tenant/domains", post(add_domain))
        .route("/console/tenant/domains/remove", post(remove_domain))
        .route("/console/tenant/addresses", post(map_address))
        .route("/console/tenant/addresses/remove", post(unmap_address))
}

/// A subject-pattern test shown on the page.
struct PatternTest {
    subject: String,
    found: Vec<Found>,
}

#[derive(Template)]
#[template(path = "console/security_tenant.html")]
struct TenantPage {
    chrome: Chrome,
    facts: TenantFacts,
    settings: FirmSettings,
    retention_days: u64,
    /// The pattern in the form: the one saved, or the one being tried.
    pattern: String,
    test: Option<PatternTest>,
    /// Why the closing was refused.
    error: Option<String>,
    /// Why a settings change was refused, and in which section (`domains`, `addresses`,
    /// `pattern`, `time-zone`).
    refused: Option<(&'static str, String)>,
}

impl TenantPage {
    fn error_in(&self, section: &str) -> Option<&str> {
        self.refused
            .as_ref()
            .filter(|(s, _)| *s == section)
            .map(|(_, m)| m.as_str())
    }
}

async fn page(state: &AppState, ctx: &ConsoleCtx, chrome: Chrome) -> Result<TenantPage, AppError> {
    let facts = api::tenant_facts_of(state, ctx).await?;
    let settings = settings::load(&state.catalog, &ctx.tenant).await?;
    Ok(TenantPage {
        chrome,
        facts,
        pattern: settings.subject_pattern.clone(),
        settings,
        retention_days: state.config.admin.retention_days,
        test: None,
        error: None,
        refused: None,
    })
}

#[derive(Deserialize, Default)]
struct Done {
    #[serde(default)]
    done: Option<String>,
}

fn flash(done: &Done) -> Option<&'static str> {
    Some(match done.done.as_deref()? {
        "time-zone" => "Time zone saved",
        "pattern" => "Subject pattern saved",
        "gmail-labels" => "Gmail labels saved",
        "domain-added" => "Domain added",
        "domain-removed" => "Domain removed",
        "address-mapped" => "Address mapped",
        "address-unmapped" => "Mapping removed",
        _ => return None,
    })
}

async fn tenant_page(
    State(state): State<AppState>,
    ctx: ConsoleCtx,
    done: Result<Query<Done>, QueryRejection>,
) -> Response {
    let done = done.map(|q| q.0).unwrap_or_default();
    let mut chrome = Chrome::new(&ctx, "tenant");
    if let Some(f) = flash(&done) {
        chrome = chrome.flash(f);
    }
    match page(&state, &ctx, chrome).await {
        Ok(p) => render(&p),
        Err(e) => e.into_response(),
    }
}

/// After a settings change: back to the page with a flash, or the page with the refusal in
/// its section (the problem's status).
async fn outcome(
    state: &AppState,
    ctx: &ConsoleCtx,
    result: Result<(), AppError>,
    section: &'static str,
    done: &str,
) -> Response {
    match result {
        Ok(()) => Redirect::to(&format!("/console/tenant?done={done}")).into_response(),
        Err(e) if e.status().is_client_error() => {
            match page(state, ctx, Chrome::new(ctx, "tenant")).await {
                Ok(mut p) => {
                    p.refused = Some((section, message(&e)));
                    render_status(e.status(), &p)
                }
                Err(e) => e.into_response(),
            }
        }
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
struct TimeZoneForm {
    #[serde(default)]
    time_zone: String,
}

/// Sets the firm's time zone (an IANA name), audited as `setting.changed`; an unknown name
/// is refused on the page (422) and nothing changes.
async fn set_time_zone(
    State(state): State<AppState>,
    ConsoleForm(ctx, form): ConsoleForm<TimeZoneForm>,
) -> Response {
    let tz = form.time_zone.trim().to_string();
    let result = if crate::time_fmt::valid_time_zone(&tz) {
        let key = crate::http::admin::ctx::TIME_ZONE_SETTING;
        crate::suggest::set_setting(&ctx.tenant.db, key, &tz, &ctx.actor()).await
    } else {
        Err(AppError::unprocessable(
            "invalid-time-zone",
            format!("“{tz}” is not a time zone: give an IANA name such as Europe/London"),
        ))
    };
    outcome(&state, &ctx, result, "time-zone", "time-zone").await
}

#[derive(Deserialize)]
struct LabelsForm {
    #[serde(default)]
    prefix: String,
    /// `off` turns the labels off; anything else saves `prefix`.
    #[serde(default)]
    action: String,
}

/// Turns the "Filed" labels in Gmail on (with a prefix) or off.
async fn gmail_labels(
    State(state): State<AppState>,
    ConsoleForm(ctx, form): ConsoleForm<LabelsForm>,
) -> Response {
    let prefix = (form.action != "off").then_some(form.prefix.as_str());
    let saved = settings::set_gmail_label_prefix(&ctx.tenant, prefix, &ctx.actor()).await;
    outcome(&state, &ctx, saved, "gmail-labels", "gmail-labels").await
}

#[derive(Deserialize)]
struct PatternForm {
    #[serde(default)]
    pattern: String,
    #[serde(default)]
    subject: String,
    /// `test` tries the pattern on `subject` without saving; anything else saves.
    #[serde(default)]
    action: String,
}

/// Tests (changes nothing) or saves the subject pattern.
async fn subject_pattern(
    State(state): State<AppState>,
    ConsoleForm(ctx, form): ConsoleForm<PatternForm>,
) -> Response {
    if form.action != "test" {
        let saved = settings::set_subject_pattern(&ctx.tenant, &form.pattern, &ctx.actor()).await;
        return outcome(&state, &ctx, saved, "pattern", "pattern").await;
    }
    let tried = settings::test_subject_pattern(&ctx.tenant, &form.pattern, &form.subject).await;
    let mut p = match page(&state, &ctx, Chrome::new(&ctx, "tenant")).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    p.pattern = form.pattern.clone();
    match tried {
        Ok(found) => {
            p.test = Some(PatternTest {
                subject: form.subject,
                found,
            });
            render(&p)
        }
        Err(e) => {
            p.refused = Some(("pattern", message(&e)));
            render_status(e.status(), &p)
        }
    }
}

#[derive(Deserialize)]
struct DomainForm {
    #[serde(default)]
    domain: String,
}

async fn add_domain(
    State(state): State<AppState>,
    ConsoleForm(ctx, f): ConsoleForm<DomainForm>,
) -> Response {
    if let Some(r) = super::step_up(&ctx, "adding a sign-in domain", "/console/tenant") {
        return r;
    }
    let r = settings::add_domain(&state.catalog, &ctx.tenant, &f.domain, &ctx.actor()).await;
    outcome(&state, &ctx, r, "domains", "domain-added").await
}

async fn remove_domain(
    State(state): State<AppState>,
    ConsoleForm(ctx, f): ConsoleForm<DomainForm>,
) -> Response {
    if let Some(r) = super::step_up(&ctx, "removing a sign-in domain", "/console/tenant") {
        return r;
    }
    let r = settings::remove_domain(&state.catalog, &ctx.tenant, &f.domain, &ctx.actor()).await;
    outcome(&state, &ctx, r, "domains", "domain-removed").await
}

#[derive(Deserialize)]
struct AddressForm {
    #[serde(default)]
    email: String,
}

async fn map_address(
    State(state): State<AppState>,
    ConsoleForm(ctx, f): ConsoleForm<AddressForm>,
) -> Response {
    if let Some(r) = super::step_up(&ctx, "mapping an address to the firm", "/console/tenant") {
        return r;
    }
    let r = settings::map_address(&state.catalog, &ctx.tenant, &f.email, &ctx.actor()).await;
    outcome(&state, &ctx, r, "addresses", "address-mapped").await
}

async fn unmap_address(
    State(state): State<AppState>,
    ConsoleForm(ctx, f): ConsoleForm<AddressForm>,
) -> Response {
    if let Some(r) = super::step_up(&ctx, "removing an address mapping", "/console/tenant") {
        return r;
    }
    let r = settings::unmap_address(&state.catalog, &ctx.tenant, &f.email, &ctx.actor()).await;
    outcome(&state, &ctx, r, "addresses", "address-unmapped").await
}

#[derive(Deserialize)]
struct CloseForm {
    #[serde(default)]
    password: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    confirm_name: String,
}

async fn close_tenant(
    State(state): State<AppState>,
    ConsoleForm(ctx, form): ConsoleForm<CloseForm>,
) -> Response {
    let closed = api::close(&state, &ctx, &form.password, &form.code, &form.confirm_name).await;
    let chrome = match &closed {
        Ok(_) => Chrome::new(&ctx, "tenant").flash("This firm's docket is closed"),
        Err(_) => Chrome::new(&ctx, "tenant"),
    };
    let mut p = match page(&state, &ctx, chrome).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    match closed {
        Ok(c) => {
            p.facts.closure = Some(c);
            render(&p)
        }
        Err(e) if e.status().is_client_error() => {
            p.error = Some(message(&e));
            render_status(e.status(), &p)
        }
        Err(e) => e.into_response(),
    }
}
