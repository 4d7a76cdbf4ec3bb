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
pub mod settings;

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
        title = "docket API",
        description = "Filing (`/v1/filings`, `/v1/addon/context`, `/v1/records`): authenticate \
                       with `Authorization: Bearer` and a Google ID token of a user of the firm, \
                       or a personal access token (`dkt_...`). Tenant administration \
                       (`/v1/admin/...`: users, groups, records and teams, routing rules, access \
                       tokens, sign-in audit, reset requests, closure): a session cookie (send \
                       `X-CSRF-Token` on changes) or a personal access token with the `read` or \
                       `admin` scope. The Gmail add-on's HTTP runtime (`/addon/...`) is called by \
                       Google. Every error is `application/problem+json` (RFC 9457)."
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
            "google_id_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A Google ID token (OpenID Connect) whose `aud` is one of \
                         `google.client_ids`; the firm comes from its `hd` claim or a mapped \
                         address",
                    ))
                    .build(),
            ),
        );
        c.add_security_scheme(
            "google_addon",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "Google's system ID token for the add-on's service account; the user's \
                         ID token travels in the event object (`authorizationEventObject`)",
                    ))
                    .build(),
            ),
        );
        c.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("docket_session"))),
        );
    }
}

/// The routes served outside the admin API (their routers live with them), described in
/// the same document.
#[derive(OpenApi)]
#[openapi(paths(
    crate::http::filings::create,
    crate::http::filings::list,
    crate::http::filings::show,
    crate::http::filings::undo,
    crate::http::filings::raw,
    crate::http::filings::attachment,
    crate::http::addon::context_api,
    crate::http::addon::records_api,
    crate::http::addon::homepage,
    crate::http::addon::message,
    crate::http::addon::action,
    crate::http::health::healthz,
    crate::http::health::ready,
))]
struct PublicDoc;

/// Every admin route, with the OpenAPI document of the whole API (admin and public).
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let mut doc = ApiDoc::openapi();
    doc.merge(PublicDoc::openapi());
    OpenApiRouter::with_openapi(doc)
        .merge(account::router())
        .merge(people::router())
        .merge(privacy::router())
        .merge(records::router())
        .merge(rules::router())
        .merge(browse::router())
        .merge(security::router())
        .merge(settings::router())
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
