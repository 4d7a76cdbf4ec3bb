//! `/v1/admin/rules`: routing rules (list, create, read, change, delete, move) and the dry
//! run (`POST /v1/admin/rules/dry-run` with an `.eml` in base64 or a filing id), which
//! answers the [`Decision`] with every rule's match and reasons. See `crate::rules`.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AdminCtx;
use crate::error::{AppError, AppResult};
use crate::http::extract::ApiJson;
use crate::http::filings::{decode_raw, read_blob};
use crate::http::AppState;
use crate::mail::{self, Mailbox, ParsedMessage};
use crate::rules::{self, Decision, NewRule, RulePatch, RuleView};
use crate::tenancy::Tenant;

#[derive(Debug, Serialize, ToSchema)]
pub struct RuleList {
    /// In evaluation order.
    pub rules: Vec<RuleView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveRule {
    /// The new 1-based position; the other rules shift.
    pub position: i64,
}

/// Give exactly one of `raw` (the `.eml`, base64 or base64url) or `filing_id`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DryRunRequest {
    pub raw: Option<String>,
    pub filing_id: Option<String>,
}

/// The message a dry run looked at.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DryRunMessage {
    pub subject: Option<String>,
    #[schema(value_type = Vec<Object>)]
    pub from: Vec<Mailbox>,
    #[schema(value_type = Vec<Object>)]
    pub to: Vec<Mailbox>,
    #[schema(value_type = Vec<Object>)]
    pub cc: Vec<Mailbox>,
    pub attachments: Vec<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DryRun {
    pub message: DryRunMessage,
    pub decision: Decision,
}

/// Where a dry run's message comes from.
pub enum DryRunSource {
    Raw(Vec<u8>),
    Filing(String),
}

fn summary(p: &ParsedMessage) -> DryRunMessage {
    DryRunMessage {
        subject: p.subject.clone(),
        from: p.from.clone(),
        to: p.to.clone(),
        cc: p.cc.clone(),
        attachments: p
            .attachments
            .iter()
            .map(|a| a.display_name.clone())
            .collect(),
    }
}

/// base64 or base64url, wrapped or not (what `base64 file.eml` prints works).
pub fn decode_any_base64(raw: &str, max: usize) -> AppResult<Vec<u8>> {
    let cleaned: String = raw
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    decode_raw(&cleaned, max)
}

/// Runs the tenant's rules against an uploaded message or a filed one (which `user_id` must
/// be able to see; otherwise 404).
pub async fn dry_run(
    state: &AppState,
    tenant: &Arc<Tenant>,
    user_id: &str,
    source: DryRunSource,
) -> AppResult<DryRun> {
    // A filed message read for the dry run holds its share of the budget until the end.
    let mut held_blob = None;
    let raw = match source {
        DryRunSource::Raw(raw) => raw,
        DryRunSource::Filing(id) => {
            let id = id.trim().to_ascii_lowercase();
            let valid = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
            let blob = if valid {
                crate::filing::raw_blob_of(&tenant.db, user_id, &id).await?
            } else {
                None
            };
            let blob = blob.ok_or_else(|| AppError::not_found("no such filing"))?;
            let crate::http::filings::HeldBlob { bytes, held } =
                read_blob(state, tenant, blob).await?;
            held_blob = Some(held);
            bytes
        }
    };
    let limits = state.config.limits.clone();
    let (raw, parsed) = mail::guard::isolated(move || {
        let parsed = mail::parse(&raw, &limits);
        Ok((raw, parsed))
    })
    .await?;
    let parsed = parsed?;
    let decision = rules::evaluate(&tenant.db, &parsed, &raw).await?;
    drop(held_blob);
    Ok(DryRun {
        message: summary(&parsed),
        decision,
    })
}

/// The body limit for dry runs: a message as large as filing accepts, in base64.
pub fn dry_run_body_limit() -> DefaultBodyLimit {
    DefaultBodyLimit::max(100 * 1024 * 1024)
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_rules, create_rule))
        .routes(routes!(get_rule, update_rule, delete_rule))
        .routes(routes!(move_rule))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(dry_run_rules))
                .layer(axum::middleware::from_fn(
                    crate::http::intake::within_budget,
                ))
                .layer(dry_run_body_limit()),
        )
}

/// Every rule, in evaluation order.
#[utoipa::path(get, path = "/v1/admin/rules",
    responses((status = 200, description = "The rules in order", body = RuleList)), tag = "rules")]
async fn list_rules(ctx: AdminCtx) -> AppResult<Json<RuleList>> {
    let rules = rules::list_rules(&ctx.tenant.db).await?;
    Ok(Json(RuleList {
        rules: rules::views(&ctx.tenant.db, rules).await?,
    }))
}

/// Creates a rule at the end of the list.
#[utoipa::path(post, path = "/v1/admin/rules", request_body = NewRule,
    responses((status = 201, description = "Created", body = RuleView),
        (status = 409, description = "A rule of that name exists"),
        (status = 422, description = "Invalid rule: bad regex or glob, unknown target, no conditions, …")),
    tag = "rules")]
async fn create_rule(ctx: AdminCtx, ApiJson(body): ApiJson<NewRule>) -> AppResult<Response> {
    let rule = rules::create_rule(&ctx.tenant, body, &ctx.actor()).await?;
    let view = rules::view(&ctx.tenant.db, rule).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// One rule.
#[utoipa::path(get, path = "/v1/admin/rules/{id}",
    params(("id" = String, Path, description = "Rule id")),
    responses((status = 200, description = "The rule", body = RuleView),
        (status = 404, description = "No such rule")), tag = "rules")]
async fn get_rule(ctx: AdminCtx, Path(id): Path<String>) -> AppResult<Json<RuleView>> {
    let rule = rules::get_rule(&ctx.tenant.db, &id)
        .await?
        .ok_or_else(|| AppError::not_found("no such rule"))?;
    Ok(Json(rules::view(&ctx.tenant.db, rule).await?))
}

/// Changes the fields given.
#[utoipa::path(patch, path = "/v1/admin/rules/{id}", request_body = RulePatch,
    params(("id" = String, Path, description = "Rule id")),
    responses((status = 200, description = "The changed rule", body = RuleView),
        (status = 404, description = "No such rule"),
        (status = 422, description = "Invalid change")), tag = "rules")]
async fn update_rule(
    ctx: AdminCtx,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RulePatch>,
) -> AppResult<Json<RuleView>> {
    let rule = rules::update_rule(&ctx.tenant, &id, body, &ctx.actor()).await?;
    Ok(Json(rules::view(&ctx.tenant.db, rule).await?))
}

/// Deletes a rule; the ones after it move up.
#[utoipa::path(delete, path = "/v1/admin/rules/{id}",
    params(("id" = String, Path, description = "Rule id")),
    responses((status = 204, description = "Deleted"),
        (status = 404, description = "No such rule")), tag = "rules")]
async fn delete_rule(ctx: AdminCtx, Path(id): Path<String>) -> AppResult<StatusCode> {
    rules::delete_rule(&ctx.tenant, &id, &ctx.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Moves a rule to another position; answers the whole list in its new order.
#[utoipa::path(post, path = "/v1/admin/rules/{id}/move", request_body = MoveRule,
    params(("id" = String, Path, description = "Rule id")),
    responses((status = 200, description = "The rules in their new order", body = RuleList),
        (status = 404, description = "No such rule"),
        (status = 422, description = "Position out of range")), tag = "rules")]
async fn move_rule(
    ctx: AdminCtx,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<MoveRule>,
) -> AppResult<Json<RuleList>> {
    rules::move_rule(&ctx.tenant, &id, body.position, &ctx.actor()).await?;
    let rules = rules::list_rules(&ctx.tenant.db).await?;
    Ok(Json(RuleList {
        rules: rules::views(&ctx.tenant.db, rules).await?,
    }))
}

/// Which rules would match a message, why, and what would happen. Changes nothing.
#[utoipa::path(post, path = "/v1/admin/rules/dry-run", request_body = DryRunRequest,
    responses((status = 200, description = "Every rule with its match and reasons, then the outcome", body = DryRun),
        (status = 404, description = "No such filing"),
        (status = 422, description = "Not an email, or neither/both of raw and filing_id")), tag = "rules")]
async fn dry_run_rules(
    State(state): State<AppState>,
    ctx: AdminCtx,
    ApiJson(body): ApiJson<DryRunRequest>,
) -> AppResult<Json<DryRun>> {
    let source = match (body.raw, body.filing_id) {
        (Some(raw), None) => DryRunSource::Raw(decode_any_base64(
            &raw,
            state.config.limits.max_message_bytes,
        )?),
        (None, Some(id)) => DryRunSource::Filing(id),
        _ => {
            return Err(AppError::unprocessable(
                "invalid-request",
                "give exactly one of `raw` (the .eml in base64) or `filing_id`",
            ))
        }
    };
    Ok(Json(
        dry_run(&state, &ctx.tenant, &ctx.user.id, source).await?,
    ))
}
