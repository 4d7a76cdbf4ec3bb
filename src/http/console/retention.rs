//! Console pages for retention and legal hold: the retention policies, the disposition lists
//! waiting for approval (approved on a second page), and the legal holds (placed with a
//! reason, released on a second page). See [`crate::retention`].

use std::collections::HashMap;

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use super::{render, render_status, Chrome, ConsoleCtx, ConsoleForm};
use crate::error::{AppError, AppResult};
use crate::http::AppState;
use crate::retention::{self, Disposition, Hold, HoldOn, Policy};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/retention", get(retention_page))
        .route("/console/retention/policies", post(save_policies))
        .route("/console/retention/evaluate", post(evaluate))
        .route(
            "/console/retention/{id}/approve",
            get(approve_page).post(approve),
        )
        .route("/console/retention/{id}/reject", post(reject))
        .route("/console/holds", get(holds_page).post(place_hold))
        .route(
            "/console/holds/{id}/release",
            get(release_page).post(release),
        )
}

#[derive(Deserialize, Default)]
struct Done {
    #[serde(default)]
    done: Option<String>,
    #[serde(default)]
    page: Option<usize>,
}

fn flash(chrome: Chrome, done: &Done) -> Chrome {
    match done.done.as_deref() {
        Some("policies") => chrome.flash("Retention policies saved"),
        Some("listed") => chrome.flash("A new disposition list is waiting for approval"),
        Some("nothing") => chrome.flash("Nothing is due for disposition"),
        Some("approved") => chrome.flash("Disposition carried out"),
        Some("rejected") => chrome.flash("Disposition list rejected: nothing was deleted"),
        Some("placed") => chrome.flash("Legal hold placed"),
        Some("released") => chrome.flash("Legal hold released"),
        _ => chrome,
    }
}

fn message(e: &AppError) -> Option<String> {
    match e {
        AppError::Problem { status, detail, .. } if status.is_client_error() => {
            Some(detail.clone())
        }
        _ => None,
    }
}

// ---- retention --------------------------------------------------------------------------

/// One record kind's row in the policy form.
struct KindRow {
    kind: &'static str,
    years: String,
    updated: String,
}

#[derive(Template)]
#[template(path = "console/retention.html")]
struct RetentionPage {
    chrome: Chrome,
    error: Option<String>,
    kinds: Vec<KindRow>,
    pending: Vec<Disposition>,
    decided: Vec<Disposition>,
}

async fn load_retention(
    ctx: &ConsoleCtx,
    chrome: Chrome,
    error: Option<String>,
) -> AppResult<RetentionPage> {
    let db = &ctx.tenant.db;
    let policies: Vec<Policy> = retention::policies(db).await?;
    let kinds = retention::KINDS
        .iter()
        .map(|k| {
            let p = policies.iter().find(|p| p.kind == *k);
            KindRow {
                kind: k,
                years: p.map(|p| p.years.to_string()).unwrap_or_default(),
                updated: p
                    .map(|p| format!("set by {} on {}", p.updated_by, p.updated_at))
                    .unwrap_or_else(|| "kept for good".into()),
            }
        })
        .collect();
    let (pending, decided) = retention::dispositions(db)
        .await?
        .into_iter()
        .partition(|d| d.status == "pending");
    Ok(RetentionPage {
        chrome,
        error,
        kinds,
        pending,
        decided,
    })
}

async fn retention_page(
    ctx: ConsoleCtx,
    done: Result<Query<Done>, QueryRejection>,
) -> AppResult<Response> {
    let done = done.map(|d| d.0).unwrap_or_default();
    let chrome = flash(Chrome::new(&ctx, "retention"), &done);
    Ok(render(&load_retention(&ctx, chrome, None).await?))
}

async fn save_policies(
    ConsoleForm(ctx, form): ConsoleForm<HashMap<String, String>>,
) -> AppResult<Response> {
    for kind in retention::KINDS {
        let text = form
            .get(&format!("years_{kind}"))
            .map(|s| s.trim())
            .unwrap_or("");
        let years = match text {
            "" => None,
            t => match t.parse::<i64>() {
                Ok(y) => Some(y),
                Err(_) => {
                    let e = format!("{kind}: {t:?} is not a number of years");
                    let page =
                        load_retention(&ctx, Chrome::new(&ctx, "retention"), Some(e)).await?;
                    return Ok(render_status(StatusCode::UNPROCESSABLE_ENTITY, &page));
                }
            },
        };
        if let Err(e) = retention::set_policy(&ctx.tenant.db, kind, years, &ctx.actor()).await {
            let Some(msg) = message(&e) else {
                return Err(e);
            };
            let page = load_retention(&ctx, Chrome::new(&ctx, "retention"), Some(msg)).await?;
            return Ok(render_status(e.status(), &page));
        }
    }
    Ok(Redirect::to("/console/retention?done=policies").into_response())
}

#[derive(Deserialize)]
struct CsrfOnly {}

async fn evaluate(
    State(state): State<AppState>,
    ConsoleForm(ctx, _): ConsoleForm<CsrfOnly>,
) -> AppResult<Response> {
    let now = state.catalog.clock().now();
    let made = retention::evaluate(&ctx.tenant.db, now, &ctx.actor()).await?;
    let done = if made.is_some() { "listed" } else { "nothing" };
    Ok(Redirect::to(&format!("/console/retention?done={done}")).into_response())
}

#[derive(Template)]
#[template(path = "console/retention_approve.html")]
struct ApprovePage {
    chrome: Chrome,
    d: Disposition,
    total: i64,
}

async fn pending_list(ctx: &ConsoleCtx, id: &str) -> AppResult<Disposition> {
    match retention::disposition(&ctx.tenant.db, id).await? {
        Some(d) if d.status == "pending" => Ok(d),
        Some(_) => Err(AppError::unprocessable(
            "disposition-decided",
            "this list was already decided",
        )),
        None => Err(AppError::not_found("no such disposition list")),
    }
}

async fn approve_page(ctx: ConsoleCtx, Path(id): Path<String>) -> AppResult<Response> {
    let d = pending_list(&ctx, &id).await?;
    let total = d.items.iter().map(|i| i.filings_now).sum();
    Ok(render(&ApprovePage {
        chrome: Chrome::new(&ctx, "retention"),
        d,
        total,
    }))
}

async fn approve(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ConsoleForm(ctx, _): ConsoleForm<CsrfOnly>,
) -> AppResult<Response> {
    let now = state.catalog.clock().now();
    retention::approve(&ctx.tenant.db, &id, &ctx.actor(), now).await?;
    crate::maintenance::sweep_soon(&state, &ctx.tenant);
    Ok(Redirect::to("/console/retention?done=approved").into_response())
}

async fn reject(
    Path(id): Path<String>,
    ConsoleForm(ctx, _): ConsoleForm<CsrfOnly>,
) -> AppResult<Response> {
    retention::reject(&ctx.tenant.db, &id, &ctx.actor()).await?;
    Ok(Redirect::to("/console/retention?done=rejected").into_response())
}

// ---- legal holds ------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "console/holds.html")]
struct HoldsPage {
    chrome: Chrome,
    error: Option<String>,
    active: Vec<Hold>,
    released: Vec<Hold>,
    pager: super::pager::Pager,
    form_record: String,
    form_email: String,
    form_reason: String,
}

async fn load_holds(ctx: &ConsoleCtx, chrome: Chrome, page: Option<usize>) -> AppResult<HoldsPage> {
    let (active, released): (Vec<_>, Vec<_>) = retention::holds(&ctx.tenant.db, true)
        .await?
        .into_iter()
        .partition(|h| h.released_at.is_none());
    let (released, pager) = super::pager::Pager::slice(released, page, "/console/holds", &[]);
    Ok(HoldsPage {
        chrome,
        error: None,
        active,
        released,
        pager,
        form_record: String::new(),
        form_email: String::new(),
        form_reason: String::new(),
    })
}

async fn holds_page(
    ctx: ConsoleCtx,
    done: Result<Query<Done>, QueryRejection>,
) -> AppResult<Response> {
    let done = done.map(|d| d.0).unwrap_or_default();
    let chrome = flash(Chrome::new(&ctx, "holds"), &done);
    Ok(render(&load_holds(&ctx, chrome, done.page).await?))
}

/// The record a hold form names: `kind:reference`, or a bare reference that only one
/// record has.
async fn record_named(ctx: &ConsoleCtx, text: &str) -> AppResult<String> {
    let text = text.trim();
    let matches: Vec<_> = crate::directory::list_records(&ctx.tenant.db)
        .await?
        .into_iter()
        .filter(|r| {
            let label = format!("{}:{}", r.kind, r.reference);
            label.eq_ignore_ascii_case(text) || r.reference.eq_ignore_ascii_case(text)
        })
        .collect();
    match matches.as_slice() {
        [one] => Ok(one.id.clone()),
        [] => Err(AppError::unprocessable(
            "unknown-record",
            format!("no record {text:?}"),
        )),
        _ => Err(AppError::unprocessable(
            "ambiguous-record",
            format!("several records are {text:?}: give kind:reference, e.g. matter:{text}"),
        )),
    }
}

async fn place_hold(
    ConsoleForm(ctx, form): ConsoleForm<HashMap<String, String>>,
) -> AppResult<Response> {
    let field = |k: &str| {
        form.get(k)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let (record, email, reason) = (field("record"), field("email"), field("reason"));
    let placed = async {
        let on = match (record.is_empty(), email.is_empty()) {
            (false, true) => HoldOn::Record(record_named(&ctx, &record).await?),
            (true, false) => HoldOn::Person(email.clone()),
            _ => {
                return Err(AppError::unprocessable(
                    "hold-target",
                    "give either a record or a person's email address, not both",
                ))
            }
        };
        retention::place_hold(&ctx.tenant.db, &on, &reason, &ctx.actor()).await
    };
    match placed.await {
        Ok(_) => Ok(Redirect::to("/console/holds?done=placed").into_response()),
        Err(e) => {
            let Some(msg) = message(&e) else {
                return Err(e);
            };
            let mut page = load_holds(&ctx, Chrome::new(&ctx, "holds"), None).await?;
            page.error = Some(msg);
            (page.form_record, page.form_email, page.form_reason) = (record, email, reason);
            Ok(render_status(e.status(), &page))
        }
    }
}

#[derive(Template)]
#[template(path = "console/hold_release.html")]
struct ReleasePage {
    chrome: Chrome,
    h: Hold,
}

async fn release_page(ctx: ConsoleCtx, Path(id): Path<String>) -> AppResult<Response> {
    let h = retention::holds(&ctx.tenant.db, false)
        .await?
        .into_iter()
        .find(|h| h.id == id)
        .ok_or_else(|| AppError::not_found("no such hold in force"))?;
    Ok(render(&ReleasePage {
        chrome: Chrome::new(&ctx, "holds"),
        h,
    }))
}

async fn release(
    Path(id): Path<String>,
    ConsoleForm(ctx, _): ConsoleForm<CsrfOnly>,
) -> AppResult<Response> {
    retention::release_hold(&ctx.tenant.db, &id, &ctx.actor()).await?;
    Ok(Redirect::to("/console/holds?done=released").into_response())
}
