//! Console pages for routing rules: the ordered list (move up/down, enable/disable), the
//! rule editor (name, condition rows, action, targets, stop, enabled; delete), and the dry
//! run (upload an `.eml` or name a filing; see every rule's match and reasons, then what
//! would happen). Plain HTML forms, no script.

use askama::Template;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use sqlx::Row;

use super::{render, render_status, Chrome, ConsoleCtx, ConsoleForm, ConsoleUpload};
use crate::error::{AppError, AppResult};
use crate::http::admin::rules::{dry_run, dry_run_body_limit, DryRun, DryRunSource};
use crate::http::AppState;
use crate::rules::{self, Action, Condition, Field, NewRule, Op, RulePatch, RuleView};

/// Condition rows a new rule's form shows.
const FORM_ROWS: usize = 5;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/rules", get(list))
        .route("/console/rules/new", get(new_form).post(create))
        .route(
            "/console/rules/dry-run",
            get(dry_run_form).merge(
                post(dry_run_post)
                    .layer::<_, std::convert::Infallible>(axum::middleware::from_fn(
                        crate::http::intake::within_budget,
                    ))
                    .layer(dry_run_body_limit()),
            ),
        )
        .route("/console/rules/{id}", get(edit_form).post(save))
        .route("/console/rules/{id}/delete", post(delete))
        .route("/console/rules/{id}/move", post(move_rule))
        .route("/console/rules/{id}/enabled", post(set_enabled))
}

/// A 4xx becomes (status, message) for the page; anything else stays an error.
fn form_error(e: AppError) -> AppResult<(StatusCode, String)> {
    let s = e.status();
    if s.is_client_error() {
        Ok((s, e.to_string()))
    } else {
        Err(e)
    }
}

// ---------------------------------------------------------------------------------------
// List
// ---------------------------------------------------------------------------------------

struct ListRow {
    rule: RuleView,
    summary: String,
    targets: String,
    first: bool,
    last: bool,
}

#[derive(Template)]
#[template(path = "console/rules_list.html")]
struct ListPage {
    chrome: Chrome,
    rows: Vec<ListRow>,
    pager: super::pager::Pager,
}

#[derive(serde::Deserialize, Default)]
struct Done {
    done: Option<String>,
    #[serde(default)]
    page: Option<usize>,
}

fn done_message(done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "created" => "Rule created",
        "saved" => "Rule saved",
        "deleted" => "Rule deleted",
        "moved" => "Rule moved",
        "enabled" => "Rule enabled",
        "disabled" => "Rule disabled",
        _ => return None,
    })
}

async fn list(ctx: ConsoleCtx, Query(done): Query<Done>) -> AppResult<Response> {
    let views = rules::views(&ctx.tenant.db, rules::list_rules(&ctx.tenant.db).await?).await?;
    let n = views.len();
    let rows = views
        .into_iter()
        .enumerate()
        .map(|(i, rule)| ListRow {
            summary: rule.conditions_summary(),
            targets: rule
                .targets
                .iter()
                .map(|t| {
                    if t.status == "open" {
                        t.target()
                    } else {
                        format!("{} ({})", t.target(), t.status)
                    }
                })
                .collect::<Vec<_>>()
                .join(", "),
            rule,
            first: i == 0,
            last: i + 1 == n,
        })
        .collect::<Vec<_>>();
    let mut chrome = Chrome::new(&ctx, "rules");
    if let Some(msg) = done_message(done.done.as_deref()) {
        chrome = chrome.flash(msg);
    }
    let (rows, pager) = super::pager::Pager::slice(rows, done.page, "/console/rules", &[]);
    Ok(render(&ListPage {
        chrome,
        rows,
        pager,
    }))
}

#[derive(serde::Deserialize)]
struct MoveForm {
    position: i64,
}

async fn move_rule(
    Path(id): Path<String>,
    ConsoleForm(ctx, form): ConsoleForm<MoveForm>,
) -> AppResult<Response> {
    rules::move_rule(&ctx.tenant, &id, form.position, &ctx.actor()).await?;
    Ok(Redirect::to("/console/rules?done=moved").into_response())
}

#[derive(serde::Deserialize)]
struct EnabledForm {
    enabled: String,
}

async fn set_enabled(
    Path(id): Path<String>,
    ConsoleForm(ctx, form): ConsoleForm<EnabledForm>,
) -> AppResult<Response> {
    let enabled = form.enabled == "1";
    rules::update_rule(
        &ctx.tenant,
        &id,
        RulePatch {
            enabled: Some(enabled),
            ..Default::default()
        },
        &ctx.actor(),
    )
    .await?;
    Ok(Redirect::to(if enabled {
        "/console/rules?done=enabled"
    } else {
        "/console/rules?done=disabled"
    })
    .into_response())
}

// ---------------------------------------------------------------------------------------
// Editor
// ---------------------------------------------------------------------------------------

struct Opt {
    value: &'static str,
    label: &'static str,
    selected: bool,
}

struct RowView {
    /// 1-based, for labels.
    number: usize,
    /// 0-based, for input names.
    index: usize,
    fields: Vec<Opt>,
    ops: Vec<Opt>,
    value: String,
    negate: bool,
}

/// An open record offered by the target fields' `<datalist>` (native, no script).
struct RecordOpt {
    /// `kind:reference`, what the field takes.
    value: String,
    label: String,
}

#[derive(Template)]
#[template(path = "console/rules_form.html")]
struct EditorPage {
    chrome: Chrome,
    /// `None` for a new rule.
    rule_id: Option<String>,
    name: String,
    rows: Vec<RowView>,
    actions: Vec<Opt>,
    /// The chosen targets as `kind:reference` (or as typed, when the form came back).
    targets: Vec<String>,
    records: Vec<RecordOpt>,
    enabled: bool,
    stop: bool,
    error: Option<String>,
}

/// What the editor form holds (parsed from repeated keys).
#[derive(Default)]
struct Draft {
    name: String,
    action: String,
    enabled: bool,
    stop: bool,
    targets: Vec<String>,
    /// (field, op, value, negate) per row, as typed.
    rows: Vec<(String, String, String, bool)>,
}

impl Draft {
    fn from_pairs(pairs: &[(String, String)]) -> Draft {
        let mut d = Draft::default();
        let max_rows = rules::MAX_CONDITIONS;
        d.rows = vec![Default::default(); max_rows];
        let mut highest = 0;
        for (k, v) in pairs {
            match k.as_str() {
                "name" => d.name = v.clone(),
                "action" => d.action = v.clone(),
                "enabled" => d.enabled = !v.is_empty(),
                "stop" => d.stop = !v.is_empty(),
                "targets" if !v.trim().is_empty() => d.targets.push(v.trim().to_string()),
                _ => {
                    let Some((i, part)) = k
                        .strip_prefix('c')
                        .and_then(|rest| rest.split_once('_'))
                        .and_then(|(i, part)| Some((i.parse::<usize>().ok()?, part)))
                    else {
                        continue;
                    };
                    if i >= max_rows {
                        continue;
                    }
                    highest = highest.max(i + 1);
                    let row = &mut d.rows[i];
                    match part {
                        "field" => row.0 = v.clone(),
                        "op" => row.1 = v.clone(),
                        "value" => row.2 = v.clone(),
                        "not" => row.3 = !v.is_empty(),
                        _ => {}
                    }
                }
            }
        }
        d.rows.truncate(highest);
        d
    }

    fn from_rule(r: &RuleView) -> Draft {
        Draft {
            name: r.name.clone(),
            action: r.action.as_str().into(),
            enabled: r.enabled,
            stop: r.stop,
            targets: r.targets.iter().map(|t| t.id.clone()).collect(),
            rows: r
                .conditions
                .iter()
                .map(|c| {
                    (
                        c.field.as_str().into(),
                        c.op.as_str().into(),
                        c.value.clone(),
                        c.negate,
                    )
                })
                .collect(),
        }
    }

    /// Rows with a value become conditions; blank rows are ignored.
    fn conditions(&self) -> Result<Vec<Condition>, AppError> {
        let mut out = Vec::new();
        for (i, (field, op, value, negate)) in self.rows.iter().enumerate() {
            if value.trim().is_empty() {
                continue;
            }
            let field: Field = field.parse().map_err(|e: String| {
                AppError::unprocessable("invalid-condition", format!("condition {}: {e}", i + 1))
            })?;
            let op: Op = op.parse().map_err(|e: String| {
                AppError::unprocessable("invalid-condition", format!("condition {}: {e}", i + 1))
            })?;
            out.push(Condition {
                field,
                op,
                value: value.clone(),
                negate: *negate,
            });
        }
        Ok(out)
    }

    fn action(&self) -> Result<Action, AppError> {
        self.action
            .parse()
            .map_err(|e: String| AppError::unprocessable("invalid-action", e))
    }
}

async fn editor(
    ctx: &ConsoleCtx,
    rule_id: Option<String>,
    d: &Draft,
    error: Option<String>,
) -> AppResult<EditorPage> {
    let rows_wanted = d.rows.len().max(FORM_ROWS);
    let rows = (0..rows_wanted)
        .map(|i| {
            let (field, op, value, negate) = d.rows.get(i).cloned().unwrap_or_default();
            RowView {
                number: i + 1,
                index: i,
                fields: Field::ALL
                    .iter()
                    .map(|f| Opt {
                        value: f.as_str(),
                        label: f.label(),
                        selected: f.as_str() == field,
                    })
                    .collect(),
                ops: Op::ALL
                    .iter()
                    .map(|o| Opt {
                        value: o.as_str(),
                        label: o.label(),
                        selected: o.as_str() == op,
                    })
                    .collect(),
                value,
                negate,
            }
        })
        .collect();
    let actions = Action::ALL
        .iter()
        .map(|a| Opt {
            value: a.as_str(),
            label: a.label(),
            selected: a.as_str() == d.action,
        })
        .collect();
    let rows_db = sqlx::query(
        "SELECT id, kind, reference, title, status FROM records ORDER BY kind, reference",
    )
    .fetch_all(&ctx.tenant.db)
    .await?;
    let mut records = Vec::new();
    let mut refs = std::collections::HashMap::new();
    for r in rows_db {
        let id: String = r.try_get("id")?;
        let status: String = r.try_get("status")?;
        let kind: String = r.try_get("kind")?;
        let reference: String = r.try_get("reference")?;
        let value = format!("{kind}:{reference}");
        refs.insert(id, value.clone());
        if status == "open" {
            let label: String = r.try_get("title")?;
            records.push(RecordOpt { value, label });
        }
    }
    // Ids (a saved rule) read as references; what was typed stays as typed.
    let targets = d
        .targets
        .iter()
        .map(|t| refs.get(t).cloned().unwrap_or_else(|| t.clone()))
        .collect();
    Ok(EditorPage {
        chrome: Chrome::new(ctx, "rules"),
        rule_id,
        name: d.name.clone(),
        rows,
        actions,
        targets,
        records,
        enabled: d.enabled,
        stop: d.stop,
        error,
    })
}

async fn new_form(ctx: ConsoleCtx) -> AppResult<Response> {
    let d = Draft {
        enabled: true,
        action: "suggest".into(),
        ..Default::default()
    };
    Ok(render(&editor(&ctx, None, &d, None).await?))
}

async fn create(
    ConsoleForm(ctx, pairs): ConsoleForm<Vec<(String, String)>>,
) -> AppResult<Response> {
    let d = Draft::from_pairs(&pairs);
    let attempt = async {
        let input = NewRule {
            name: d.name.clone(),
            enabled: d.enabled,
            conditions: d.conditions()?,
            action: d.action()?,
            targets: d.targets.clone(),
            stop: d.stop,
        };
        rules::create_rule(&ctx.tenant, input, &ctx.actor()).await
    };
    match attempt.await {
        Ok(_) => Ok(Redirect::to("/console/rules?done=created").into_response()),
        Err(e) => {
            let (status, msg) = form_error(e)?;
            Ok(render_status(
                status,
                &editor(&ctx, None, &d, Some(msg)).await?,
            ))
        }
    }
}

async fn edit_form(ctx: ConsoleCtx, Path(id): Path<String>) -> AppResult<Response> {
    let rule = rules::get_rule(&ctx.tenant.db, &id)
        .await?
        .ok_or_else(|| AppError::not_found("no such rule"))?;
    let view = rules::view(&ctx.tenant.db, rule).await?;
    let d = Draft::from_rule(&view);
    Ok(render(&editor(&ctx, Some(view.id), &d, None).await?))
}

async fn save(
    Path(id): Path<String>,
    ConsoleForm(ctx, pairs): ConsoleForm<Vec<(String, String)>>,
) -> AppResult<Response> {
    if rules::get_rule(&ctx.tenant.db, &id).await?.is_none() {
        return Err(AppError::not_found("no such rule"));
    }
    let d = Draft::from_pairs(&pairs);
    let attempt = async {
        let patch = RulePatch {
            name: Some(d.name.clone()),
            enabled: Some(d.enabled),
            conditions: Some(d.conditions()?),
            action: Some(d.action()?),
            targets: Some(d.targets.clone()),
            stop: Some(d.stop),
        };
        rules::update_rule(&ctx.tenant, &id, patch, &ctx.actor()).await
    };
    match attempt.await {
        Ok(_) => Ok(Redirect::to("/console/rules?done=saved").into_response()),
        Err(e) => {
            let (status, msg) = form_error(e)?;
            Ok(render_status(
                status,
                &editor(&ctx, Some(id), &d, Some(msg)).await?,
            ))
        }
    }
}

#[derive(serde::Deserialize)]
struct Empty {}

async fn delete(
    Path(id): Path<String>,
    ConsoleForm(ctx, _): ConsoleForm<Empty>,
) -> AppResult<Response> {
    rules::delete_rule(&ctx.tenant, &id, &ctx.actor()).await?;
    Ok(Redirect::to("/console/rules?done=deleted").into_response())
}

// ---------------------------------------------------------------------------------------
// Dry run
// ---------------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "console/rules_dry_run.html")]
struct DryRunPage {
    chrome: Chrome,
    filing_id: String,
    file_name: String,
    result: Option<DryRun>,
    error: Option<String>,
}

impl DryRunPage {
    fn senders(&self) -> String {
        self.result
            .as_ref()
            .map(|r| {
                r.message
                    .from
                    .iter()
                    .filter_map(|m| m.address.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    }
}

#[derive(serde::Deserialize, Default)]
struct DryRunPrefill {
    #[serde(default)]
    filing_id: String,
}

/// The dry-run form; `?filing_id=` (the filing page links here) picks that filed message.
async fn dry_run_form(
    ctx: ConsoleCtx,
    prefill: Result<Query<DryRunPrefill>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let filing_id = prefill.map(|Query(p)| p.filing_id).unwrap_or_default();
    render(&DryRunPage {
        chrome: Chrome::new(&ctx, "rules"),
        filing_id: filing_id.trim().chars().take(64).collect(),
        file_name: String::new(),
        result: None,
        error: None,
    })
}

async fn dry_run_post(
    axum::extract::State(state): axum::extract::State<AppState>,
    upload: ConsoleUpload,
) -> AppResult<Response> {
    let filing_id = upload
        .text("filing_id")
        .unwrap_or_default()
        .trim()
        .to_string();
    let ConsoleUpload(ctx, mut fields) = upload;
    let file = fields.remove("eml").filter(|u| !u.bytes.is_empty());
    let file_name = file
        .as_ref()
        .and_then(|u| u.file_name.clone())
        .unwrap_or_default();
    let mut page = DryRunPage {
        chrome: Chrome::new(&ctx, "rules"),
        filing_id: filing_id.clone(),
        file_name,
        result: None,
        error: None,
    };
    let source = match (file, filing_id.is_empty()) {
        (Some(f), true) => DryRunSource::Raw(f.bytes),
        (None, false) => DryRunSource::Filing(filing_id),
        (Some(_), false) => {
            page.error = Some("Choose either a message file or a filing id, not both.".into());
            return Ok(render_status(StatusCode::UNPROCESSABLE_ENTITY, &page));
        }
        (None, true) => {
            page.error = Some("Choose a message (.eml) file or enter a filing id.".into());
            return Ok(render_status(StatusCode::UNPROCESSABLE_ENTITY, &page));
        }
    };
    if let DryRunSource::Raw(b) = &source {
        if b.len() > state.config.limits.max_message_bytes {
            page.error = Some(format!(
                "The message is {} bytes; the limit is {}.",
                b.len(),
                state.config.limits.max_message_bytes
            ));
            return Ok(render_status(StatusCode::PAYLOAD_TOO_LARGE, &page));
        }
    }
    match dry_run(&state, &ctx.tenant, &ctx.user.id, source).await {
        Ok(r) => {
            page.result = Some(r);
            Ok(render(&page))
        }
        Err(e) => {
            let (status, msg) = form_error(e)?;
            page.error = Some(msg);
            Ok(render_status(status, &page))
        }
    }
}
