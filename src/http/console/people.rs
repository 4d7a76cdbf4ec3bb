//! Console pages for people: `/console/users` (list, add), `/console/users/{id}` (name, role,
//! groups; buttons for suspension, sessions and password links, whose handlers live with
//! account security), `/console/groups` (list, add, rename, members).

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use super::{render, render_status, step_up, Chrome, ConsoleCtx, ConsoleForm};
use crate::directory::{self, Group, Role, UserDetail, UserPatch};
use crate::error::{AppError, AppResult};
use crate::http::admin::people::{can_sign_in, changes_role};
use crate::http::AppState;

/// A checkbox or option: value, label, whether chosen.
pub struct Choice {
    pub id: String,
    pub label: String,
    pub checked: bool,
}

#[derive(Deserialize, Default)]
pub struct Done {
    #[serde(default)]
    done: Option<String>,
    /// The users list: words of an address or name, and the page.
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    page: Option<usize>,
}

fn flash_for(done: &Option<String>) -> Option<&'static str> {
    match done.as_deref()? {
        "added" => Some("User added"),
        "saved" => Some("Saved"),
        "group-added" => Some("Group added"),
        "renamed" => Some("Group renamed"),
        "members" => Some("Members saved"),
        "suspended" => Some("User suspended"),
        "reactivated" => Some("User reactivated"),
        "sessions-ended" => Some("Sessions ended"),
        _ => None,
    }
}

fn with_flash(chrome: Chrome, done: &Option<String>) -> Chrome {
    match flash_for(done) {
        Some(m) => chrome.flash(m),
        None => chrome,
    }
}

/// Problems become a page with the message; anything else (internal) stays an error.
fn problem_text(e: &AppError) -> Option<String> {
    match e {
        AppError::Problem { detail, .. } => Some(detail.clone()),
        AppError::Internal(_) => None,
    }
}

const ROLES: [&str; 3] = ["admin", "filer", "viewer"];

#[derive(Template)]
#[template(path = "console/people_users.html")]
struct UsersPage {
    chrome: Chrome,
    users: Vec<UserDetail>,
    q: String,
    pager: super::pager::Pager,
    groups: Vec<Choice>,
    roles: [&'static str; 3],
    error: Option<String>,
    email: String,
    display_name: String,
    role: String,
}

async fn users_page(
    ctx: &ConsoleCtx,
    chrome: Chrome,
    error: Option<String>,
    form: Option<&HashMap<String, String>>,
    list: &Done,
) -> AppResult<UsersPage> {
    let q = list.q.clone().unwrap_or_default();
    let words = q.trim().to_lowercase();
    let users: Vec<UserDetail> = directory::list_user_details(&ctx.tenant.db)
        .await?
        .into_iter()
        .filter(|u| {
            words.is_empty()
                || u.email.to_lowercase().contains(&words)
                || u.display_name.to_lowercase().contains(&words)
        })
        .collect();
    let (users, pager) =
        super::pager::Pager::slice(users, list.page, "/console/users", &[("q", q.as_str())]);
    let get = |k: &str| form.and_then(|f| f.get(k)).cloned().unwrap_or_default();
    let groups = directory::list_groups(&ctx.tenant.db)
        .await?
        .into_iter()
        .map(|g| Choice {
            checked: form.is_some_and(|f| f.contains_key(&format!("group_{}", g.id))),
            id: g.id,
            label: g.name,
        })
        .collect();
    Ok(UsersPage {
        chrome,
        users,
        q,
        pager,
        groups,
        roles: ROLES,
        error,
        email: get("email"),
        display_name: get("display_name"),
        role: form
            .and_then(|f| f.get("role").cloned())
            .unwrap_or_else(|| "filer".into()),
    })
}

async fn list_users(ctx: ConsoleCtx, Query(d): Query<Done>) -> AppResult<Response> {
    let chrome = with_flash(Chrome::new(&ctx, "users"), &d.done);
    Ok(render(&users_page(&ctx, chrome, None, None, &d).await?))
}

fn chosen(form: &HashMap<String, String>, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = form
        .keys()
        .filter_map(|k| k.strip_prefix(prefix).map(str::to_string))
        .collect();
    v.sort();
    v
}

fn role_of(form: &HashMap<String, String>) -> Result<Role, String> {
    form.get("role").map(String::as_str).unwrap_or("").parse()
}

async fn add_user(
    State(state): State<AppState>,
    ConsoleForm(ctx, form): ConsoleForm<HashMap<String, String>>,
) -> AppResult<Response> {
    if role_of(&form) == Ok(Role::Admin) {
        if let Some(r) = step_up(&ctx, "creating an administrator", "/console/users") {
            return Ok(r);
        }
    }
    let email = form.get("email").map(String::as_str).unwrap_or("");
    let result = match role_of(&form) {
        Ok(role) => match can_sign_in(&state, &ctx.tenant.id, email).await {
            Err(e) => Err(e),
            Ok(()) => {
                directory::create_user(
                    &ctx.tenant.db,
                    form.get("email").map(String::as_str).unwrap_or(""),
                    form.get("display_name").map(String::as_str).unwrap_or(""),
                    role,
                    &chosen(&form, "group_"),
                    &ctx.actor(),
                )
                .await
            }
        },
        Err(e) => Err(AppError::unprocessable("invalid-role", e)),
    };
    match result {
        Ok(u) => Ok(Redirect::to(&format!("/console/users/{}?done=added", u.id)).into_response()),
        Err(e) => {
            let Some(msg) = problem_text(&e) else {
                return Err(e);
            };
            let chrome = Chrome::new(&ctx, "users");
            let page = users_page(&ctx, chrome, Some(msg), Some(&form), &Done::default()).await?;
            Ok(render_status(e.status(), &page))
        }
    }
}

#[derive(Template)]
#[template(path = "console/people_user.html")]
struct UserPage {
    chrome: Chrome,
    user: UserDetail,
    groups: Vec<Choice>,
    roles: [&'static str; 3],
    error: Option<String>,
}

async fn user_page(
    ctx: &ConsoleCtx,
    chrome: Chrome,
    id: &str,
    error: Option<String>,
) -> AppResult<UserPage> {
    let user = directory::user_detail(&ctx.tenant.db, id)
        .await?
        .ok_or_else(|| AppError::not_found("no such user"))?;
    let groups = directory::list_groups(&ctx.tenant.db)
        .await?
        .into_iter()
        .map(|g| Choice {
            checked: user.groups.iter().any(|m| m.id == g.id),
            id: g.id,
            label: g.name,
        })
        .collect();
    Ok(UserPage {
        chrome,
        user,
        groups,
        roles: ROLES,
        error,
    })
}

async fn show_user(
    ctx: ConsoleCtx,
    Path(id): Path<String>,
    Query(d): Query<Done>,
) -> AppResult<Response> {
    let chrome = with_flash(Chrome::new(&ctx, "users"), &d.done);
    Ok(render(&user_page(&ctx, chrome, &id, None).await?))
}

async fn save_user(
    Path(id): Path<String>,
    ConsoleForm(ctx, form): ConsoleForm<HashMap<String, String>>,
) -> AppResult<Response> {
    if changes_role(&ctx, &id, role_of(&form).ok()).await? {
        let back = format!("/console/users/{id}");
        if let Some(r) = step_up(&ctx, "changing a user's role", &back) {
            return Ok(r);
        }
    }
    let result = match role_of(&form) {
        Ok(role) => {
            directory::update_user(
                &ctx.tenant.db,
                &id,
                &UserPatch {
                    display_name: Some(form.get("display_name").cloned().unwrap_or_default()),
                    role: Some(role),
                    groups: Some(chosen(&form, "group_")),
                },
                &ctx.actor(),
            )
            .await
        }
        Err(e) => Err(AppError::unprocessable("invalid-role", e)),
    };
    match result {
        Ok(_) => Ok(Redirect::to(&format!("/console/users/{id}?done=saved")).into_response()),
        Err(e) => {
            let (Some(msg), false) = (problem_text(&e), e.status() == StatusCode::NOT_FOUND) else {
                return Err(e);
            };
            let page = user_page(&ctx, Chrome::new(&ctx, "users"), &id, Some(msg)).await?;
            Ok(render_status(e.status(), &page))
        }
    }
}

#[derive(Template)]
#[template(path = "console/people_groups.html")]
struct GroupsPage {
    chrome: Chrome,
    groups: Vec<Group>,
    pager: super::pager::Pager,
    /// Everyone, for the add-a-member field's suggestions (a native `<datalist>`).
    people: Vec<crate::directory::User>,
    error: Option<String>,
}

async fn groups_page(
    ctx: &ConsoleCtx,
    chrome: Chrome,
    error: Option<String>,
    page: Option<usize>,
) -> AppResult<GroupsPage> {
    let all = directory::list_groups(&ctx.tenant.db).await?;
    let (groups, pager) = super::pager::Pager::slice(all, page, "/console/groups", &[]);
    Ok(GroupsPage {
        chrome,
        groups,
        pager,
        people: directory::list_users(&ctx.tenant.db).await?,
        error,
    })
}

async fn list_groups(ctx: ConsoleCtx, Query(d): Query<Done>) -> AppResult<Response> {
    let chrome = with_flash(Chrome::new(&ctx, "groups"), &d.done);
    Ok(render(&groups_page(&ctx, chrome, None, d.page).await?))
}

async fn groups_result<T>(
    ctx: &ConsoleCtx,
    result: AppResult<T>,
    done: &str,
) -> AppResult<Response> {
    match result {
        Ok(_) => Ok(Redirect::to(&format!("/console/groups?done={done}")).into_response()),
        Err(e) => {
            let (Some(msg), false) = (problem_text(&e), e.status() == StatusCode::NOT_FOUND) else {
                return Err(e);
            };
            let page = groups_page(ctx, Chrome::new(ctx, "groups"), Some(msg), None).await?;
            Ok(render_status(e.status(), &page))
        }
    }
}

#[derive(Deserialize)]
struct NameForm {
    #[serde(default)]
    name: String,
}

async fn add_group(ConsoleForm(ctx, form): ConsoleForm<NameForm>) -> AppResult<Response> {
    let r = directory::create_group(&ctx.tenant.db, &form.name, &ctx.actor()).await;
    groups_result(&ctx, r, "group-added").await
}

async fn rename_group(
    Path(id): Path<String>,
    ConsoleForm(ctx, form): ConsoleForm<NameForm>,
) -> AppResult<Response> {
    let r = directory::rename_group(&ctx.tenant.db, &id, &form.name, &ctx.actor()).await;
    groups_result(&ctx, r, "renamed").await
}

async fn group_members(
    Path(id): Path<String>,
    ConsoleForm(ctx, form): ConsoleForm<HashMap<String, String>>,
) -> AppResult<Response> {
    let r =
        directory::set_group_members(&ctx.tenant.db, &id, &chosen(&form, "user_"), &ctx.actor())
            .await;
    groups_result(&ctx, r, "members").await
}

#[derive(Deserialize)]
struct MemberForm {
    /// The add form: a person's address (or display name, when only one has it).
    #[serde(default)]
    who: String,
    /// The remove buttons: a user id.
    #[serde(default)]
    user: String,
}

/// Adds one member to a group, or removes one, keeping the others. Audited as
/// `group.members_set`.
async fn change_member(
    Path((id, change)): Path<(String, String)>,
    ConsoleForm(ctx, f): ConsoleForm<MemberForm>,
) -> AppResult<Response> {
    let r = async {
        let db = &ctx.tenant.db;
        let actor = ctx.actor();
        match change.as_str() {
            "add" => {
                let Some(u) = super::person_named(db, &f.who).await? else {
                    return Err(AppError::unprocessable(
                        "unknown-user",
                        format!(
                            "“{}” is not the address of one person of this firm",
                            f.who.trim()
                        ),
                    ));
                };
                let u = u.id;
                directory::edit_group_members(db, &id, &actor, |ids| {
                    if !ids.contains(&u) {
                        ids.push(u)
                    }
                })
                .await
            }
            "remove" => {
                let gone = f.user.clone();
                directory::edit_group_members(db, &id, &actor, |ids| ids.retain(|m| *m != gone))
                    .await
            }
            _ => Err(AppError::not_found("no such page")),
        }
    }
    .await;
    groups_result(&ctx, r, "members").await
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/users", get(list_users).post(add_user))
        .route("/console/users/{id}", get(show_user).post(save_user))
        .route("/console/groups", get(list_groups).post(add_group))
        .route("/console/groups/{id}/rename", post(rename_group))
        .route("/console/groups/{id}/members", post(group_members))
        .route("/console/groups/{id}/members/{change}", post(change_member))
}
