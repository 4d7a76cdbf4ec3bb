//! Console pages for the record catalogue: `/console/records` (filter, list, add),
//! `/console/records/{id}` (edit, close/reopen, team editor with members and exclusions),
//! `/console/records/import` (CSV upload with the per-row report).

use std::collections::HashMap;

use askama::Template;
use axum::extract::{DefaultBodyLimit, Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use super::{render, render_status, Chrome, ConsoleCtx, ConsoleForm, ConsoleUpload};
use crate::access::{Principal, PrincipalKind};
use crate::directory::{
    self, ImportReport, NewRecord, Record, RecordDetail, RecordKind, RecordPatch, IMPORT_MAX_BYTES,
};
use crate::error::{AppError, AppResult};
use crate::http::admin::records::{filter_of, RecordQuery};
use crate::http::AppState;

fn problem_text(e: &AppError) -> Option<String> {
    match e {
        AppError::Problem { detail, .. } => Some(detail.clone()),
        AppError::Internal(_) => None,
    }
}

fn flash_for(done: Option<&str>) -> Option<&'static str> {
    match done? {
        "added" => Some("Record created"),
        "saved" => Some("Saved"),
        "team" => Some("Team saved"),
        "closed" => Some("Record closed"),
        "reopened" => Some("Record reopened"),
        _ => None,
    }
}

/// Contacts typed one per line (commas, semicolons and spaces also separate).
fn contacts_of(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c == ';' || c.is_whitespace())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    done: Option<String>,
    #[serde(default)]
    page: Option<usize>,
}

/// Who sees a listed record, at a glance: its team and its walls, by name.
#[derive(Default)]
pub struct Glance {
    pub members: Vec<String>,
    pub excluded: Vec<String>,
}

/// The team members and walls of `records`, by the user's address or the group's name.
async fn glances(db: &sqlx::AnyPool, records: &[Record]) -> AppResult<HashMap<String, Glance>> {
    let mut out: HashMap<String, Glance> = HashMap::new();
    if records.is_empty() {
        return Ok(out);
    }
    let ids: Vec<String> = (1..=records.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT a.record_id, a.effect, COALESCE(u.email, g.name, a.principal_id) AS name \
         FROM record_access a \
         LEFT JOIN users u ON a.principal_kind = 'user' AND u.id = a.principal_id \
         LEFT JOIN groups g ON a.principal_kind = 'group' AND g.id = a.principal_id \
         WHERE a.record_id IN ({}) ORDER BY a.principal_kind DESC, name",
        ids.join(", ")
    );
    let mut q = sqlx::query(&sql);
    for r in records {
        q = q.bind(&r.id);
    }
    for row in q.fetch_all(db).await? {
        use sqlx::Row;
        let (id, effect, name): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        let g = out.entry(id).or_default();
        if effect == "excluded" {
            g.excluded.push(name);
        } else {
            g.members.push(name);
        }
    }
    Ok(out)
}

#[derive(Template)]
#[template(path = "console/records_list.html")]
struct ListPage {
    chrome: Chrome,
    records: Vec<(Record, Glance)>,
    pager: super::pager::Pager,
    /// The search found the most a list holds (5000): there may be more.
    capped: bool,
    q: String,
    status: String,
    kind: String,
    kinds: [&'static str; 3],
    error: Option<String>,
    form: HashMap<String, String>,
    form_firm_wide: bool,
}

impl ListPage {
    fn field(&self, name: &str) -> &str {
        self.form.get(name).map(String::as_str).unwrap_or("")
    }
}

const KINDS: [&str; 3] = ["matter", "case", "contract"];

async fn list_page(
    ctx: &ConsoleCtx,
    lq: &ListQuery,
    error: Option<String>,
    form: HashMap<String, String>,
) -> AppResult<ListPage> {
    let rq = RecordQuery {
        q: lq.q.clone(),
        status: lq.status.clone(),
        kind: lq.kind.clone(),
        limit: Some(5000),
    };
    let (filter, limit) = filter_of(&rq)?;
    let all = directory::search_catalogue(&ctx.tenant.db, &filter, limit).await?;
    let capped = all.len() as i64 == limit;
    let (q, status, kind) = (
        lq.q.clone().unwrap_or_default(),
        lq.status.clone().unwrap_or_default(),
        lq.kind.clone().unwrap_or_default(),
    );
    let params = [("q", q.as_str()), ("status", &status), ("kind", &kind)];
    let (shown, pager) = super::pager::Pager::slice(all, lq.page, "/console/records", &params);
    let mut glance = glances(&ctx.tenant.db, &shown).await?;
    let records = shown
        .into_iter()
        .map(|r| {
            let g = glance.remove(&r.id).unwrap_or_default();
            (r, g)
        })
        .collect();
    let chrome = Chrome::new(ctx, "records");
    let chrome = match flash_for(lq.done.as_deref()) {
        Some(m) => chrome.flash(m),
        None => chrome,
    };
    let form_firm_wide = form.is_empty() || form.contains_key("firm_wide");
    Ok(ListPage {
        chrome,
        records,
        pager,
        capped,
        q,
        status,
        kind,
        kinds: KINDS,
        error,
        form,
        form_firm_wide,
    })
}

async fn list(ctx: ConsoleCtx, Query(lq): Query<ListQuery>) -> AppResult<Response> {
    Ok(render(&list_page(&ctx, &lq, None, HashMap::new()).await?))
}

async fn add(ConsoleForm(ctx, form): ConsoleForm<HashMap<String, String>>) -> AppResult<Response> {
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    let result = match get("kind").parse::<RecordKind>() {
        Ok(kind) => {
            directory::create_record(
                &ctx.tenant.db,
                &NewRecord {
                    kind,
                    reference: get("reference"),
                    title: get("title"),
                    client: get("client"),
                    contacts: contacts_of(&get("contacts")),
                    firm_wide: form.contains_key("firm_wide"),
                    members: Vec::new(),
                    excluded: Vec::new(),
                },
                &ctx.actor(),
            )
            .await
        }
        Err(e) => Err(AppError::unprocessable("invalid-kind", e)),
    };
    match result {
        Ok(r) => Ok(Redirect::to(&format!("/console/records/{}?done=added", r.id)).into_response()),
        Err(e) => {
            let Some(msg) = problem_text(&e) else {
                return Err(e);
            };
            let page = list_page(&ctx, &ListQuery::default(), Some(msg), form).await?;
            Ok(render_status(e.status(), &page))
        }
    }
}

/// One person or group on a record's team (a member, or walled off).
pub struct TeamRow {
    /// `user:<id>` or `group:<id>`, as the remove form posts it.
    pub principal: String,
    /// The user's address or the group's name.
    pub label: String,
    pub group: bool,
    /// `member` or `excluded`.
    pub effect: &'static str,
}

/// One suggestion of the add-to-team field (a native `<datalist>`, no script).
pub struct Choice {
    pub value: String,
    pub label: String,
}

#[derive(Template)]
#[template(path = "console/records_record.html")]
struct RecordPage {
    chrome: Chrome,
    record: RecordDetail,
    /// The newest filings of the record the admin may see (walls apply to admins too).
    filings: Vec<crate::http::admin::browse::FilingRow>,
    /// Whether there are more than `filings` shows.
    more_filings: bool,
    contacts_text: String,
    team: Vec<TeamRow>,
    choices: Vec<Choice>,
    error: Option<String>,
}

/// How many filings a record's page lists (the filings browser has the rest).
const RECORD_PAGE_FILINGS: i64 = 25;

async fn record_page(
    ctx: &ConsoleCtx,
    id: &str,
    done: Option<&str>,
    error: Option<String>,
) -> AppResult<RecordPage> {
    let record = directory::record_detail(&ctx.tenant.db, id)
        .await?
        .ok_or_else(|| AppError::not_found("no such record"))?;
    let row = |p: &crate::access::NamedPrincipal, effect| TeamRow {
        principal: principal_text(p.kind, &p.id),
        label: p.name.clone(),
        group: p.kind == PrincipalKind::Group,
        effect,
    };
    let mut team: Vec<TeamRow> = record.members.iter().map(|p| row(p, "member")).collect();
    team.extend(record.excluded.iter().map(|p| row(p, "excluded")));
    let mut choices: Vec<Choice> = directory::list_users(&ctx.tenant.db)
        .await?
        .into_iter()
        .map(|u| Choice {
            label: u.display_name,
            value: u.email,
        })
        .collect();
    choices.extend(
        directory::list_groups(&ctx.tenant.db)
            .await?
            .into_iter()
            .map(|g| Choice {
                value: format!("group: {}", g.name),
                label: format!("{} members", g.members.len()),
            }),
    );
    let chrome = Chrome::new(ctx, "records");
    let chrome = match flash_for(done) {
        Some(m) => chrome.flash(m),
        None => chrome,
    };
    let q = crate::http::admin::browse::FilingQuery {
        record: Some(record.id.clone()),
        limit: Some(RECORD_PAGE_FILINGS + 1),
        ..Default::default()
    };
    let mut filings =
        crate::http::admin::browse::search_filings(&ctx.tenant.db, &ctx.user.id, &q).await?;
    let more_filings = filings.len() as i64 > RECORD_PAGE_FILINGS;
    filings.truncate(RECORD_PAGE_FILINGS as usize);
    Ok(RecordPage {
        chrome,
        filings,
        more_filings,
        contacts_text: record.contacts.join("\n"),
        record,
        team,
        choices,
        error,
    })
}

#[derive(Deserialize)]
struct DoneQuery {
    #[serde(default)]
    done: Option<String>,
}

async fn show(
    ctx: ConsoleCtx,
    Path(id): Path<String>,
    Query(d): Query<DoneQuery>,
) -> AppResult<Response> {
    Ok(render(
        &record_page(&ctx, &id, d.done.as_deref(), None).await?,
    ))
}

async fn after<T>(ctx: &ConsoleCtx, id: &str, r: AppResult<T>, done: &str) -> AppResult<Response> {
    match r {
        Ok(_) => Ok(Redirect::to(&format!("/console/records/{id}?done={done}")).into_response()),
        Err(e) => {
            let (Some(msg), false) = (problem_text(&e), e.status() == StatusCode::NOT_FOUND) else {
                return Err(e);
            };
            let page = record_page(ctx, id, None, Some(msg)).await?;
            Ok(render_status(e.status(), &page))
        }
    }
}

async fn save(
    Path(id): Path<String>,
    ConsoleForm(ctx, form): ConsoleForm<HashMap<String, String>>,
) -> AppResult<Response> {
    let patch = RecordPatch {
        title: Some(form.get("title").cloned().unwrap_or_default()),
        client: Some(form.get("client").cloned().unwrap_or_default()),
        contacts: Some(contacts_of(
            form.get("contacts").map(String::as_str).unwrap_or(""),
        )),
        ..Default::default()
    };
    let r = directory::update_record(&ctx.tenant.db, &id, &patch, &ctx.actor()).await;
    after(&ctx, &id, r, "saved").await
}

#[derive(Deserialize)]
struct StatusForm {
    status: String,
    /// `yes` on the confirmation page's form (closing asks first).
    #[serde(default)]
    confirm: Option<String>,
}

async fn set_status(
    Path(id): Path<String>,
    ConsoleForm(ctx, form): ConsoleForm<StatusForm>,
) -> AppResult<Response> {
    if form.status == "closed" && !super::confirmed(&form.confirm) {
        let record = directory::record_detail(&ctx.tenant.db, &id)
            .await?
            .ok_or_else(|| AppError::not_found("no such record"))?;
        let name = format!("{} {}", record.reference, record.title);
        return Ok(render(&super::ConfirmPage {
            chrome: Chrome::new(&ctx, "records"),
            question: format!("Close {name}?"),
            consequence: "Nobody can file to a closed record until it is reopened. Its filings \
                          stay, and its retention period starts to run."
                .into(),
            action: format!("/console/records/{id}/status"),
            fields: vec![("status".into(), "closed".into())],
            button: "Close record".into(),
            back: format!("/console/records/{id}"),
        }));
    }
    let patch = RecordPatch {
        status: Some(form.status.clone()),
        ..Default::default()
    };
    let r = directory::update_record(&ctx.tenant.db, &id, &patch, &ctx.actor()).await;
    let done = if form.status == "closed" {
        "closed"
    } else {
        "reopened"
    };
    after(&ctx, &id, r, done).await
}

async fn save_team(
    Path(id): Path<String>,
    ConsoleForm(ctx, form): ConsoleForm<HashMap<String, String>>,
) -> AppResult<Response> {
    let mut members = Vec::new();
    let mut excluded = Vec::new();
    let mut bad = None;
    for (k, v) in &form {
        let (kind, pid) = if let Some(p) = k.strip_prefix("user_") {
            (PrincipalKind::User, p)
        } else if let Some(p) = k.strip_prefix("group_") {
            (PrincipalKind::Group, p)
        } else {
            continue;
        };
        let p = Principal {
            kind,
            id: pid.to_string(),
        };
        match v.as_str() {
            "" => {}
            "member" => members.push(p),
            "excluded" => excluded.push(p),
            other => bad = Some(format!("unknown access {other:?}")),
        }
    }
    let r = match bad {
        Some(b) => Err(AppError::unprocessable("invalid-access", b)),
        None => {
            directory::set_record_team(
                &ctx.tenant.db,
                &id,
                form.contains_key("firm_wide"),
                &members,
                &excluded,
                &ctx.actor(),
            )
            .await
        }
    };
    after(&ctx, &id, r, "team").await
}

fn principal_text(kind: PrincipalKind, id: &str) -> String {
    match kind {
        PrincipalKind::User => format!("user:{id}"),
        PrincipalKind::Group => format!("group:{id}"),
    }
}

fn unknown_principal(who: &str) -> AppError {
    AppError::unprocessable(
        "unknown-principal",
        format!(
            "“{who}” is neither the address of one person nor the name of a group of this \
             firm (a name several people share needs the address)"
        ),
    )
}

/// What the add-to-team field names: `group: Name`, a user's address, a group's name, or a
/// user's display name when only one person has it (all case-insensitive).
async fn resolve_principal(db: &sqlx::AnyPool, who: &str) -> AppResult<Principal> {
    let who = who.trim();
    let group_name = who.strip_prefix("group:").map(str::trim);
    let groups = directory::list_groups(db).await?;
    let group = groups
        .iter()
        .find(|g| g.name.eq_ignore_ascii_case(group_name.unwrap_or(who)));
    if let Some(g) = group {
        if group_name.is_some() || !who.contains('@') {
            return Ok(Principal {
                kind: PrincipalKind::Group,
                id: g.id.clone(),
            });
        }
    }
    if group_name.is_some() {
        return Err(unknown_principal(who));
    }
    match super::person_named(db, who).await? {
        Some(u) => Ok(Principal {
            kind: PrincipalKind::User,
            id: u.id,
        }),
        None => Err(unknown_principal(who)),
    }
}

#[derive(Deserialize)]
struct TeamChange {
    /// The add form: who (address, group name), and `member` or `excluded`.
    #[serde(default)]
    who: String,
    #[serde(default)]
    effect: String,
    /// The remove buttons: `user:<id>` or `group:<id>`.
    #[serde(default)]
    principal: String,
    /// The whole-firm form.
    #[serde(default)]
    firm_wide: Option<String>,
}

/// Changes one thing about a record's team and keeps the rest: `add` a person or group as
/// member or walled off, `remove` one, or set `firm-wide`. Audited as `record.team_changed`.
async fn change_team(
    Path((id, change)): Path<(String, String)>,
    ConsoleForm(ctx, f): ConsoleForm<TeamChange>,
) -> AppResult<Response> {
    let r = async {
        let db = &ctx.tenant.db;
        let actor = ctx.actor();
        match change.as_str() {
            "add" => {
                let p = resolve_principal(db, &f.who).await?;
                let wall = match f.effect.as_str() {
                    "member" => false,
                    "excluded" => true,
                    other => {
                        let msg = format!("unknown access {other:?}");
                        return Err(AppError::unprocessable("invalid-access", msg));
                    }
                };
                directory::edit_record_team(db, &id, &actor, |t| {
                    t.members.retain(|m| m != &p);
                    t.excluded.retain(|m| m != &p);
                    if wall {
                        t.excluded.push(p)
                    } else {
                        t.members.push(p)
                    }
                })
                .await
            }
            "remove" => {
                let gone = f.principal.clone();
                directory::edit_record_team(db, &id, &actor, |t| {
                    let keep = |p: &Principal| principal_text(p.kind, &p.id) != gone;
                    t.members.retain(keep);
                    t.excluded.retain(keep);
                })
                .await
            }
            "firm-wide" => {
                let on = f.firm_wide.is_some();
                directory::edit_record_team(db, &id, &actor, |t| t.firm_wide = on).await
            }
            _ => Err(AppError::not_found("no such page")),
        }
    }
    .await;
    after(&ctx, &id, r, "team").await
}

#[derive(Template)]
#[template(path = "console/records_import.html")]
struct ImportPage {
    chrome: Chrome,
    report: Option<ImportReport>,
    error: Option<String>,
}

async fn import_form(ctx: ConsoleCtx) -> Response {
    render(&ImportPage {
        chrome: Chrome::new(&ctx, "records"),
        report: None,
        error: None,
    })
}

async fn import(upload: ConsoleUpload) -> AppResult<Response> {
    let valid_rows = upload
        .text("import_valid_rows")
        .is_some_and(|v| !v.is_empty());
    let ConsoleUpload(ctx, fields) = upload;
    let bytes = fields
        .get("file")
        .map(|u| u.bytes.as_slice())
        .unwrap_or(&[]);
    let chrome = Chrome::new(&ctx, "records");
    if bytes.is_empty() {
        return Ok(render_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            &ImportPage {
                chrome,
                report: None,
                error: Some("Choose a CSV file to import.".into()),
            },
        ));
    }
    match directory::import_records_csv(&ctx.tenant.db, bytes, valid_rows, &ctx.actor()).await {
        Ok(report) => {
            let status = if report.invalid > 0 && report.imported == 0 {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::OK
            };
            let chrome = if report.imported > 0 {
                chrome.flash(format!(
                    "Imported {} record{}",
                    report.imported,
                    if report.imported == 1 { "" } else { "s" }
                ))
            } else {
                chrome
            };
            Ok(render_status(
                status,
                &ImportPage {
                    chrome,
                    report: Some(report),
                    error: None,
                },
            ))
        }
        Err(e) => {
            let Some(msg) = problem_text(&e) else {
                return Err(e);
            };
            Ok(render_status(
                e.status(),
                &ImportPage {
                    chrome,
                    report: None,
                    error: Some(msg),
                },
            ))
        }
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/records", get(list).post(add))
        .route(
            "/console/records/import",
            get(import_form)
                .post(import)
                .layer(DefaultBodyLimit::max(IMPORT_MAX_BYTES + 256 * 1024)),
        )
        .route("/console/records/{id}", get(show).post(save))
        .route("/console/records/{id}/status", post(set_status))
        .route("/console/records/{id}/team", post(save_team))
        .route("/console/records/{id}/team/{change}", post(change_team))
}
