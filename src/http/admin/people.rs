//! Users and groups: `/v1/admin/users` and `/v1/admin/groups` (tag "people"). The internal
//! `system` user (automatic filing) is never listed and answers 404.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AdminCtx;
use crate::directory::{self, Group, Role, UserDetail, UserPatch};
use crate::error::{AppError, AppResult};
use crate::http::extract::ApiJson;
use crate::http::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// The user's Google identity email.
    pub email: String,
    #[serde(default)]
    pub display_name: String,
    pub role: Role,
    /// Group ids.
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupName {
    pub name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupMembers {
    /// The group's complete membership (user ids).
    pub user_ids: Vec<String>,
}

/// Every user (with groups).
#[utoipa::path(get, path = "/v1/admin/users",
    responses((status = 200, description = "Users by email", body = Vec<UserDetail>)), tag = "people")]
async fn list_users(ctx: AdminCtx) -> AppResult<Json<Vec<UserDetail>>> {
    Ok(Json(directory::list_user_details(&ctx.tenant.db).await?))
}

/// Adds a user. Adding an administrator needs a person's session with a recent sign-in.
#[utoipa::path(post, path = "/v1/admin/users", request_body = NewUser,
    responses((status = 201, description = "The new user", body = UserDetail),
        (status = 403, description = "`session-required` or `reauth-required` (role `admin`)"),
        (status = 409, description = "The email is taken"),
        (status = 422, description = "Invalid email, name or group, or `cannot-sign-in`: the address could never sign in to this firm")), tag = "people")]
async fn add_user(
    State(state): State<AppState>,
    ctx: AdminCtx,
    ApiJson(req): ApiJson<NewUser>,
) -> AppResult<(StatusCode, Json<UserDetail>)> {
    if req.role == Role::Admin {
        ctx.person("creating an administrator")?;
    }
    can_sign_in(&state, &ctx.tenant.id, &req.email).await?;
    let u = directory::create_user(
        &ctx.tenant.db,
        &req.email,
        &req.display_name,
        req.role,
        &req.groups,
        &ctx.actor(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(u)))
}

/// 422 `cannot-sign-in` when `email` could never sign in to the firm (its domain is not
/// the firm's and the address is not mapped to it): such a user would be a dead entry. An
/// address that is not an email address at all is left to `create_user` to name.
pub(crate) async fn can_sign_in(state: &AppState, tenant_id: &str, email: &str) -> AppResult<()> {
    let email = email.trim().to_ascii_lowercase();
    if !directory::valid_email(&email) {
        return Ok(());
    }
    let obstacle = state.catalog.sign_in_obstacle(tenant_id, &email).await;
    match obstacle.map_err(AppError::internal)? {
        Ok(()) => Ok(()),
        Err(why) => Err(AppError::unprocessable("cannot-sign-in", why)),
    }
}

fn no_user() -> AppError {
    AppError::not_found("no such user")
}

/// One user.
#[utoipa::path(get, path = "/v1/admin/users/{id}", params(("id" = String, Path, description = "User id")),
    responses((status = 200, description = "The user", body = UserDetail), (status = 404, description = "No such user")),
    tag = "people")]
async fn get_user(ctx: AdminCtx, Path(id): Path<String>) -> AppResult<Json<UserDetail>> {
    directory::user_detail(&ctx.tenant.db, &id)
        .await?
        .map(Json)
        .ok_or_else(no_user)
}

/// Changes a user's display name, role or groups. The last active admin cannot lose the
/// admin role (409 `last-admin`). A role change needs a person's session with a recent
/// sign-in (403 `session-required` / `reauth-required`).
#[utoipa::path(patch, path = "/v1/admin/users/{id}", params(("id" = String, Path, description = "User id")),
    request_body = UserPatch,
    responses((status = 200, description = "The user", body = UserDetail), (status = 404, description = "No such user"),
        (status = 409, description = "Would remove the last active admin"), (status = 422, description = "Invalid change")),
    tag = "people")]
async fn patch_user(
    ctx: AdminCtx,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UserPatch>,
) -> AppResult<Json<UserDetail>> {
    if changes_role(&ctx, &id, req.role).await? {
        ctx.person("changing a user's role")?;
    }
    Ok(Json(
        directory::update_user(&ctx.tenant.db, &id, &req, &ctx.actor()).await?,
    ))
}

/// Whether setting `role` on user `id` changes it (an unknown user changes nothing here;
/// the update answers 404).
pub async fn changes_role(ctx: &AdminCtx, id: &str, role: Option<Role>) -> AppResult<bool> {
    let Some(role) = role else { return Ok(false) };
    let current = directory::user_by_id(&ctx.tenant.db, id).await?;
    Ok(current.is_some_and(|u| u.role != role))
}

/// Every group with its members.
#[utoipa::path(get, path = "/v1/admin/groups",
    responses((status = 200, description = "Groups by name", body = Vec<Group>)), tag = "people")]
async fn list_groups(ctx: AdminCtx) -> AppResult<Json<Vec<Group>>> {
    Ok(Json(directory::list_groups(&ctx.tenant.db).await?))
}

/// Adds a group (names are unique).
#[utoipa::path(post, path = "/v1/admin/groups", request_body = GroupName,
    responses((status = 201, description = "The new group", body = Group),
        (status = 409, description = "The name is taken"), (status = 422, description = "Invalid name")), tag = "people")]
async fn add_group(
    ctx: AdminCtx,
    ApiJson(req): ApiJson<GroupName>,
) -> AppResult<(StatusCode, Json<Group>)> {
    let g = directory::create_group(&ctx.tenant.db, &req.name, &ctx.actor()).await?;
    Ok((StatusCode::CREATED, Json(g)))
}

/// Renames a group.
#[utoipa::path(patch, path = "/v1/admin/groups/{id}", params(("id" = String, Path, description = "Group id")),
    request_body = GroupName,
    responses((status = 200, description = "The group", body = Group), (status = 404, description = "No such group"),
        (status = 409, description = "The name is taken")), tag = "people")]
async fn rename_group(
    ctx: AdminCtx,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<GroupName>,
) -> AppResult<Json<Group>> {
    Ok(Json(
        directory::rename_group(&ctx.tenant.db, &id, &req.name, &ctx.actor()).await?,
    ))
}

/// Replaces a group's members.
#[utoipa::path(put, path = "/v1/admin/groups/{id}/members", params(("id" = String, Path, description = "Group id")),
    request_body = GroupMembers,
    responses((status = 200, description = "The group", body = Group), (status = 404, description = "No such group"),
        (status = 422, description = "Unknown user id")), tag = "people")]
async fn set_members(
    ctx: AdminCtx,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<GroupMembers>,
) -> AppResult<Json<Group>> {
    Ok(Json(
        directory::set_group_members(&ctx.tenant.db, &id, &req.user_ids, &ctx.actor()).await?,
    ))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, add_user))
        .routes(routes!(get_user, patch_user))
        .routes(routes!(list_groups, add_group))
        .routes(routes!(rename_group))
        .routes(routes!(set_members))
}
