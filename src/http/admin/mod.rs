//! The JSON admin API under `/v1/admin/...`: everything the console does, authenticated by
//! a session (with `X-CSRF-Token` on changes) or a personal access token. The OpenAPI
//! document at `/v1/openapi.json` is generated from the handlers' annotations.

pub mod account;
pub mod browse;
pub mod ctx;
pub mod people;
pub mod privacy;
pub mod records;
pub mod rules;
pub mod security;

use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use super::AppState;

pub use ctx::{AdminCtx, Client, PendingCtx, Via};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "docket admin API",
        description = "Tenant administration: users, groups, records and teams, routing rules, \
                       access tokens, sign-in audit, reset requests, closure. Authenticate with a \
                       session cookie (send `X-CSRF-Token` on changes) or `Authorization: Bearer \
                       dkt_...` (a personal access token with the `read` or `admin` scope)."
    ),
    modifiers(&Security),
    security(("access_token" = []), ("session" = []))
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let c = openapi.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "access_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        c.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("docket_session"))),
        );
    }
}

/// Every admin route, with its OpenAPI description.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(account::router())
        .merge(people::router())
        .merge(privacy::router())
        .merge(records::router())
        .merge(rules::router())
        .merge(browse::router())
        .merge(security::router())
        .split_for_parts()
}

pub fn router() -> Router<AppState> {
    let (routes, doc) = api();
    let doc = std::sync::Arc::new(doc);
    routes.route(
        "/v1/openapi.json",
        get(move || {
            let doc = doc.clone();
            async move { Json(doc.as_ref().clone()) }
        }),
    )
}
