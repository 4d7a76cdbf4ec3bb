//! The console's GDPR page: what docket holds about an address, its access export and its
//! erasure (on a second page). See [`crate::gdpr`].

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use super::{render, Chrome, ConsoleCtx, ConsoleForm};
use crate::error::AppResult;
use crate::gdpr;
use crate::http::admin::privacy::{summarise, zip_download, SubjectSummary};
use crate::http::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/privacy", get(privacy_page))
        .route("/console/privacy/export", get(export))
        .route("/console/privacy/erase", get(erase_page).post(erase))
}

#[derive(Deserialize, Default)]
struct EmailQuery {
    #[serde(default)]
    email: String,
    #[serde(default)]
    done: Option<String>,
}

#[derive(Template)]
#[template(path = "console/privacy.html")]
struct PrivacyPage {
    chrome: Chrome,
    email: String,
    error: Option<String>,
    found: Option<SubjectSummary>,
}

async fn privacy_page(
    ctx: ConsoleCtx,
    q: Result<Query<EmailQuery>, QueryRejection>,
) -> AppResult<Response> {
    let q = q.map(|q| q.0).unwrap_or_default();
    let mut page = PrivacyPage {
        chrome: Chrome::new(&ctx, "privacy"),
        email: q.email.trim().to_string(),
        error: None,
        found: None,
    };
    if q.done.as_deref() == Some("erased") {
        page.chrome = page
            .chrome
            .flash("Personal data erased; the audit chain still verifies");
    }
    if !page.email.is_empty() {
        match summarise(&ctx, &page.email).await {
            Ok(s) => page.found = Some(s),
            Err(e) if e.status().is_client_error() => page.error = Some(e.to_string()),
            Err(e) => return Err(e),
        }
    }
    Ok(render(&page))
}

async fn export(
    State(state): State<AppState>,
    ctx: ConsoleCtx,
    Query(q): Query<EmailQuery>,
) -> AppResult<Response> {
    let viewer = Some(ctx.user.id.as_str());
    let bytes = gdpr::export(&state.budget, &ctx.tenant, &q.email, viewer, &ctx.actor()).await?;
    Ok(zip_download(bytes, q.email.trim()))
}

#[derive(Template)]
#[template(path = "console/privacy_erase.html")]
struct ErasePage {
    chrome: Chrome,
    found: SubjectSummary,
}

async fn erase_page(ctx: ConsoleCtx, Query(q): Query<EmailQuery>) -> AppResult<Response> {
    let found = summarise(&ctx, &q.email).await?;
    Ok(render(&ErasePage {
        chrome: Chrome::new(&ctx, "privacy"),
        found,
    }))
}

#[derive(Deserialize)]
struct EraseForm {
    email: String,
    #[serde(default)]
    request: String,
}

async fn erase(
    State(state): State<AppState>,
    ConsoleForm(ctx, form): ConsoleForm<EraseForm>,
) -> AppResult<Response> {
    let actor = ctx.actor();
    let ask = gdpr::ErasureRequest {
        email: &form.email,
        request: &form.request,
        actor: &actor,
        caller: &ctx.user.email,
        viewer: Some(&ctx.user.id),
    };
    gdpr::erase(&state.catalog, &ctx.tenant, &ask).await?;
    crate::maintenance::sweep_soon(&state, &ctx.tenant);
    let to = format!(
        "/console/privacy?done=erased&{}",
        serde_urlencoded::to_string([("email", form.email.trim())]).unwrap_or_default()
    );
    Ok(Redirect::to(&to).into_response())
}
