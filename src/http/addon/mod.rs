//! The HTTP-runtime Gmail add-on: Google POSTs event objects to `/addon/homepage`,
//! `/addon/message` and `/addon/action`, with a system ID token in `Authorization` and the
//! user's tokens inside the event. Answers are card JSON.
//!
//! Also the JSON API the Apps Script client uses (`/v1/addon/context`, `/v1/records`), with
//! the same rules as the cards.

pub mod cards;

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;

use super::extract::{token_error, verify_user, ReaderCtx, TenantCtx};
use super::AppState;
use crate::error::{AppError, AppResult};
use crate::filing::{self, AttachmentSelection, FilingInput, FilingView, TargetRef};
use crate::gmail::GmailError;
use crate::mail::{self, ParsedMessage};
use crate::suggest::{self, MessageFacts};
use cards::{action_button, buttons, checkboxes, decorated, esc, paragraph, text_input, Card};

pub const SCOPE_EXECUTE: &str = "https://www.googleapis.com/auth/gmail.addons.execute";
pub const SCOPE_MESSAGE: &str =
    "https://www.googleapis.com/auth/gmail.addons.current.message.readonly";
pub const SCOPE_EMAIL: &str = "https://www.googleapis.com/auth/userinfo.email";

/// `message_body_limit`: bytes a request that carries a whole message may have (the JSON
/// API's `raw`), as for `POST /v1/filings`.
pub fn router(
    message_body_limit: usize,
    intake: std::sync::Arc<crate::http::intake::Intake>,
) -> Router<AppState> {
    Router::new()
        .route("/addon/homepage", post(homepage))
        .route("/addon/message", post(message))
        .route("/addon/action", post(action))
        .route(
            "/v1/addon/context",
            post(context_api)
                .layer::<_, std::convert::Infallible>(axum::Extension(intake))
                .layer(axum::extract::DefaultBodyLimit::max(message_body_limit)),
        )
        .route("/v1/records", get(records_api))
}

// ---- event objects -------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AddonEvent {
    pub common_event_object: CommonEvent,
    pub authorization_event_object: AuthorizationEvent,
    pub gmail: Option<GmailEvent>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CommonEvent {
    pub host_app: Option<String>,
    /// The user's time zone in Gmail (`{"id": "Europe/London", "offset": 0}`).
    pub time_zone: Option<EventTimeZone>,
    pub form_inputs: HashMap<String, FormInput>,
    pub parameters: HashMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct EventTimeZone {
    /// An IANA name.
    pub id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FormInput {
    pub string_inputs: Option<StringInputs>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct StringInputs {
    pub value: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AuthorizationEvent {
    pub user_o_auth_token: Option<String>,
    pub user_id_token: Option<String>,
    pub system_id_token: Option<String>,
    pub authorized_scopes: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GmailEvent {
    pub message_id: Option<String>,
    pub thread_id: Option<String>,
    pub access_token: Option<String>,
}

impl AddonEvent {
    fn inputs(&self, name: &str) -> Vec<String> {
        self.common_event_object
            .form_inputs
            .get(name)
            .and_then(|f| f.string_inputs.as_ref())
            .map(|s| s.value.clone())
            .unwrap_or_default()
    }
    fn input(&self, name: &str) -> Option<String> {
        self.inputs(name)
            .into_iter()
            .next()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }
    fn param(&self, name: &str) -> Option<&str> {
        self.common_event_object
            .parameters
            .get(name)
            .map(String::as_str)
    }
}

// ---- verification ----------------------------------------------------------------------

struct AddonSettings {
    public_url: String,
    service_account: String,
    oauth_client_id: String,
    /// Dates on the cards: the user's own time zone in Gmail, else the firm's, else UTC.
    time_zone: String,
}

fn settings(state: &AppState) -> AppResult<AddonSettings> {
    let a = &state.config.addon;
    match (&a.public_url, &a.service_account, &a.oauth_client_id) {
        (Some(u), Some(s), Some(c)) => Ok(AddonSettings {
            public_url: u.trim_end_matches('/').to_string(),
            service_account: s.to_ascii_lowercase(),
            oauth_client_id: c.clone(),
            time_zone: "UTC".into(),
        }),
        _ => Err(AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "addon-not-configured",
            "the Gmail add-on is not configured: set addon.public_url, addon.service_account and addon.oauth_client_id",
        )),
    }
}

/// The system ID token Google sends: our endpoint as `aud`, our add-on's service account.
async fn verify_system(
    state: &AppState,
    s: &AddonSettings,
    headers: &HeaderMap,
    uri: &Uri,
) -> AppResult<()> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| AppError::unauthorized("the add-on request carries no system ID token"))?;
    let audiences = if state.config.addon.endpoint_audiences.is_empty() {
        let path = uri.path();
        let mut v = vec![format!("{}{}", s.public_url, path)];
        if let Some(pq) = uri.path_and_query() {
            v.push(format!("{}{}", s.public_url, pq.as_str()));
        }
        v
    } else {
        state.config.addon.endpoint_audiences.clone()
    };
    let claims = state
        .verifier
        .verify(token, &audiences)
        .await
        .map_err(token_error)?;
    let email = claims.email.as_deref().map(str::to_ascii_lowercase);
    if email.as_deref() != Some(s.service_account.as_str()) || !claims.email_verified() {
        return Err(AppError::unauthorized(
            "the system ID token is not from this add-on's service account",
        ));
    }
    Ok(())
}

/// Parses the event, verifies the system token, checks scopes, resolves the user.
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
    body: &Bytes,
    needs_message: bool,
) -> AppResult<Result<(AddonEvent, TenantCtx, AddonSettings), Value>> {
    let mut s = settings(state)?;
    let ev: AddonEvent = serde_json::from_slice(body).map_err(|e| {
        AppError::bad_request(
            "invalid-event",
            format!("the add-on event is not valid JSON: {e}"),
        )
    })?;
    verify_system(state, &s, headers, uri).await?;
    let scopes = ev
        .authorization_event_object
        .authorized_scopes
        .clone()
        .unwrap_or_default();
    let mut needed = vec![SCOPE_EMAIL];
    if needs_message {
        needed.push(SCOPE_MESSAGE);
    }
    if needed.iter().any(|n| !scopes.iter().any(|s| s == n)) {
        return Ok(Err(cards::request_scopes(&[
            SCOPE_EXECUTE,
            SCOPE_MESSAGE,
            SCOPE_EMAIL,
        ])));
    }
    let user_token = ev
        .authorization_event_object
        .user_id_token
        .clone()
        .ok_or_else(|| AppError::unauthorized("the add-on event carries no user ID token"))?;
    let ctx = match verify_user(state, &user_token, std::slice::from_ref(&s.oauth_client_id)).await
    {
        Ok(ctx) => ctx,
        // A real person docket does not let in (not added yet, suspended, another firm's
        // account, a firm that is suspended): Gmail shows only a bare error for anything
        // but a card, so they get a card that says what to do, replacing whatever card was
        // on screen (another user's included).
        Err(e) if e.status() == axum::http::StatusCode::FORBIDDEN => {
            let card = not_let_in_card(&e);
            return Ok(Err(if uri.path().ends_with("/action") {
                cards::replace_all(card)
            } else {
                cards::push(card)
            }));
        }
        Err(e) => return Err(e),
    };
    s.time_zone = match ev
        .common_event_object
        .time_zone
        .as_ref()
        .map(|t| t.id.trim())
    {
        Some(tz) if crate::time_fmt::valid_time_zone(tz) => tz.to_string(),
        _ => crate::http::admin::ctx::firm_time_zone(&ctx.tenant).await?,
    };
    Ok(Ok((ev, ctx, s)))
}

/// The card for a person docket does not let in, with what to do about it.
fn not_let_in_card(e: &AppError) -> Value {
    let detail = match e {
        AppError::Problem { detail, .. } => detail.clone(),
        AppError::Internal(_) => String::new(),
    };
    let suspended = detail.contains("suspended") || detail.contains("not active");
    let (title, what) = if suspended {
        (
            "Your docket access is suspended",
            "Ask your firm's docket administrator to reactivate it, then reopen this message.",
        )
    } else {
        (
            "You are not set up in docket yet",
            "docket files your firm's email into its matters, cases and contracts. Ask your \
             firm's docket administrator to add you with the Google account you use in Gmail, \
             then reopen this message.",
        )
    };
    let mut first = detail;
    if let Some(c) = first.get(..1) {
        first = c.to_uppercase() + &first[1..];
    }
    Card::new("not-let-in", "docket")
        .subtitle(title)
        .section(
            None,
            vec![
                paragraph(&format!("{}.", esc(first.trim_end_matches('.')))),
                paragraph(what),
            ],
        )
        .build()
}

macro_rules! authed {
    ($state:expr, $headers:expr, $uri:expr, $body:expr, $needs:expr) => {
        match authenticate(&$state, &$headers, &$uri, &$body, $needs).await {
            Ok(Ok(x)) => x,
            Ok(Err(scopes)) => return Json(scopes).into_response(),
            Err(e) => return e.into_response(),
        }
    };
}

// ---- the open message --------------------------------------------------------------------

/// Why a message card could not be built, as the user should read it.
struct CardFailure {
    title: &'static str,
    detail: String,
}

impl From<GmailError> for CardFailure {
    fn from(e: GmailError) -> Self {
        CardFailure {
            title: "Could not read this message from Gmail",
            detail: e.to_string(),
        }
    }
}

impl From<AppError> for CardFailure {
    fn from(e: AppError) -> Self {
        let detail = match &e {
            AppError::Problem { detail, .. } => detail.clone(),
            AppError::Internal(err) => {
                tracing::error!(error = format!("{err:#}"), "add-on request failed");
                "Something went wrong on docket's side; it has been logged. Try again.".into()
            }
        };
        CardFailure {
            title: "This message cannot be filed",
            detail,
        }
    }
}

struct OpenMessage {
    raw: Vec<u8>,
    parsed: ParsedMessage,
    gmail_id: Option<String>,
    thread_id: Option<String>,
    /// The message's share of the message budget, held while it is in memory.
    _held: crate::budget::Reservation,
}

async fn open_message(state: &AppState, ev: &AddonEvent) -> Result<OpenMessage, CardFailure> {
    let g = ev.gmail.as_ref();
    let (Some(id), Some(access)) = (
        g.and_then(|g| g.message_id.clone()),
        g.and_then(|g| g.access_token.clone()),
    ) else {
        return Err(CardFailure {
            title: "No message is open",
            detail: "Open an email in Gmail to file it.".into(),
        });
    };
    let oauth = ev
        .authorization_event_object
        .user_o_auth_token
        .clone()
        .unwrap_or_default();
    let fetched = state
        .gmail
        .get_raw(&oauth, &access, &id, &state.budget)
        .await?;
    let thread_id = fetched.thread_id.clone().or_else(|| {
        g.and_then(|g| g.thread_id.as_deref())
            .and_then(crate::gmail::normalise_id)
    });
    let limits = state.config.limits.clone();
    let (raw, held) = (fetched.raw, fetched.held);
    let (raw, parsed) = mail::guard::isolated(move || {
        let parsed = mail::parse(&raw, &limits);
        Ok((raw, parsed))
    })
    .await?;
    Ok(OpenMessage {
        raw,
        parsed: parsed?,
        gmail_id: Some(fetched.id),
        thread_id,
        _held: held,
    })
}

/// Already filed and suggestions for a parsed message: the same for cards and the JSON API.
async fn message_context(
    state: &AppState,
    ctx: &TenantCtx,
    parsed: &ParsedMessage,
    raw: &[u8],
    thread: Option<&str>,
) -> AppResult<suggest::MessageContext> {
    // The firm's own domains: colleagues are not contacts.
    let domains = state
        .catalog
        .tenant_info(&ctx.tenant.id)
        .await?
        .map(|t| t.domains)
        .unwrap_or_default();
    let (dedup_key, message_id_reused) =
        crate::filing::dedup::resolve_key(&ctx.tenant, parsed).await?;
    let facts = MessageFacts {
        message: parsed,
        dedup_key: &dedup_key,
        gmail_thread_id: thread,
        own_domains: &domains,
        raw,
    };
    let mut context = suggest::context(&ctx.tenant.db, &ctx.user, &facts).await?;
    context.message_id_reused = message_id_reused;
    for f in &mut context.already_filed {
        let link = super::view::filing_link(state, "", &ctx.tenant.id, &f.filing_id, &ctx.user.id);
        f.view_path = Some(link);
    }
    Ok(context)
}

/// One "already filed" line: the record, who filed it (a rule by its name) and when, the
/// note, and a View button.
fn filed_line(f: &suggest::AlreadyFiled, s: &AddonSettings) -> Value {
    let public_url = &s.public_url;
    let when = crate::time_fmt::human_in(&f.filed_at, &s.time_zone);
    let mut bottom = format!("by {} · {when}", f.filed_by_name);
    if let Some(note) = f.note.as_deref().filter(|n| !n.trim().is_empty()) {
        bottom.push_str(&format!(" · “{}”", cards::truncate(note, 80)));
    }
    let mut w = decorated(
        None,
        &record_line(&f.target.kind, &f.target.id, &f.target.title),
        Some(&bottom),
    );
    if let Some(path) = &f.view_path {
        let url = format!("{public_url}{path}");
        w["decoratedText"]["button"] =
            serde_json::json!({ "text": "View", "onClick": { "openLink": { "url": url } } });
    }
    w
}

/// "When you file it, firm rule “X” also files it to M-1 · Title." (escaped HTML).
fn rules_also_file(rule_filings: &[suggest::RuleFiling]) -> String {
    let lines: Vec<String> = rule_filings
        .iter()
        .map(|r| {
            format!(
                "firm rule “{}” also files it to {}",
                esc(&r.rule),
                record_line(&r.target.kind, &r.target.id, &r.target.title)
            )
        })
        .collect();
    format!("When you file this message, {}.", lines.join("; "))
}

fn human_size(n: usize) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MB", n as f64 / (1 << 20) as f64),
        n if n >= 1 << 10 => format!("{} KB", n >> 10),
        n => format!("{n} B"),
    }
}

fn record_line(kind: &str, id: &str, title: &str) -> String {
    let _ = kind;
    format!("<b>{}</b> · {}", esc(id), esc(title))
}

/// A suggestion's line on the card: its likelihood in a word (when not "unsure") and its
/// two strongest reasons (the JSON API has them all).
fn suggestion_reasons(sg: &suggest::Suggestion) -> String {
    let reasons = sg
        .reasons
        .iter()
        .take(2)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    match sg.likelihood {
        "unsure" => reasons,
        word => format!("{word}: {reasons}"),
    }
}

/// The message-opened card: already filed, suggestions with reasons, search, attachments,
/// note, File.
async fn message_card(
    state: &AppState,
    ctx: &TenantCtx,
    s: &AddonSettings,
    msg: &OpenMessage,
    query: Option<&str>,
) -> AppResult<Value> {
    let pool = &ctx.tenant.db;
    let suggest::MessageContext {
        already_filed: filed,
        suggestions,
        rule_filings,
        message_id_reused,
    } = message_context(state, ctx, &msg.parsed, &msg.raw, msg.thread_id.as_deref()).await?;
    let hits = match query {
        Some(q) => suggest::search(pool, &ctx.user, q, 20).await?,
        None => Vec::new(),
    };
    let action_url = format!("{}/addon/action", s.public_url);
    let subject = msg
        .parsed
        .subject
        .clone()
        .unwrap_or_else(|| "(no subject)".into());
    let mut card = Card::new("message", "docket").subtitle(&subject);
    if message_id_reused {
        let id = msg.parsed.message_id.as_deref();
        let text = crate::filing::reused_id_notice(id);
        card = card.section(
            Some("Not the same message"),
            vec![paragraph(&cards::esc(&text))],
        );
    }

    if !filed.is_empty() {
        let widgets = filed.iter().map(|f| filed_line(f, s)).collect();
        card = card.section(Some("Already filed"), widgets);
    }
    if !suggest::fileable(&ctx.user) {
        return Ok(card
            .section(
                None,
                vec![paragraph(&format!(
                    "Your role ({}) can read filings but not file.",
                    ctx.user.role.as_str()
                ))],
            )
            .build());
    }
    let mut file_widgets = Vec::new();
    if suggestions.is_empty() {
        file_widgets.push(paragraph(
            "No suggestions for this message. Search for a record below.",
        ));
    } else {
        // Only the best suggestion is ticked: one click files where docket is most sure.
        let items = suggestions
            .iter()
            .enumerate()
            .map(|(i, sg)| {
                (
                    format!(
                        "{} · {} — {}",
                        sg.target.id,
                        cards::truncate(&sg.target.title, 40),
                        suggestion_reasons(sg)
                    ),
                    sg.target.target(),
                    i == 0 && filed.is_empty(),
                )
            })
            .collect();
        file_widgets.push(checkboxes("targets", "Suggested records", items));
    }
    if !rule_filings.is_empty() {
        file_widgets.push(paragraph(&rules_also_file(&rule_filings)));
    }
    if let Some(q) = query {
        if hits.is_empty() {
            file_widgets.push(paragraph(&format!("No open record matches “{}”.", esc(q))));
        } else {
            let items = hits
                .iter()
                .map(|h| {
                    let target = format!("{}:{}", h.kind, h.id);
                    let already = filed.iter().any(|f| f.target.target() == target);
                    let mark = if already { " (already filed)" } else { "" };
                    let title = cards::truncate(&h.title, 50);
                    (format!("{} · {title}{mark}", h.id), target, false)
                })
                .collect();
            file_widgets.push(checkboxes("found", "Search results", items));
        }
    }
    card = card.section(Some("File to"), file_widgets);
    card = card.section(
        Some("Find a record"),
        vec![
            text_input(
                "q",
                "Search records",
                Some("reference, title or client"),
                query,
            ),
            buttons(vec![action_button(
                "Search",
                &action_url,
                &[("op", "search")],
            )]),
        ],
    );
    let att_widget = if msg.parsed.attachments.is_empty() {
        paragraph("This message has no attachments.")
    } else {
        checkboxes(
            "attachments",
            "Attachments to keep",
            msg.parsed
                .attachments
                .iter()
                .map(|a| {
                    // Inline parts (signature logos) are kept but not ticked, as in Gmail.
                    let inline = if a.inline { ", inline image" } else { "" };
                    (
                        format!("{} ({}{inline})", a.display_name, human_size(a.size)),
                        a.index.to_string(),
                        !a.inline,
                    )
                })
                .collect(),
        )
    };
    let mut actions = vec![action_button("File", &action_url, &[("op", "file")])];
    // Only with a delegation key can docket read the rest of the thread.
    if msg.thread_id.is_some() && state.catalog.has_delegation(&ctx.tenant.id).await? {
        actions.push(action_button(
            "File whole thread",
            &action_url,
            &[("op", "file_thread")],
        ));
    }
    card = card.section(
        Some("Attachments and note"),
        vec![
            att_widget,
            text_input("note", "Note (optional)", None, None),
            buttons(actions),
        ],
    );
    Ok(card.build())
}

/// Google Workspace add-on HTTP runtime: the homepage trigger (`homepageTrigger` in
/// `addon/http/deployment.json`). Google calls it with its system ID token and the user's
/// ID token in the event object; the answer is a card.
#[utoipa::path(post, path = "/addon/homepage",
    request_body(content = Object, description = "The add-on event object (Google's format)"),
    responses((status = 200, description = "A card (render action), also for errors the user can act on", body = Object)),
    security(("google_addon" = [])), tag = "gmail-add-on")]
pub(crate) async fn homepage(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let (_ev, ctx, s) = authed!(state, headers, uri, body, false);
    let card = home_card(&state, &ctx, &s, None)
        .await
        .unwrap_or_else(|e| failure_card(&s, e.into()));
    Json(cards::push(card)).into_response()
}

/// How many of the user's own filings the homepage lists.
const RECENT_FILINGS: i64 = 5;

/// The homepage: what docket is, a search of the filed mail the user may see, and the
/// user's recent filings, each with its View link. `query`: a search to show results for.
async fn home_card(
    state: &AppState,
    ctx: &TenantCtx,
    s: &AddonSettings,
    query: Option<&str>,
) -> AppResult<Value> {
    let action_url = format!("{}/addon/action", s.public_url);
    let about = format!(
        "docket files {}'s email into its matters, cases and contracts. Open an email to see \
         where it belongs and file it with one click.<br>Signed in as <b>{}</b> ({}).",
        esc(&ctx.tenant.name),
        esc(&ctx.user.email),
        ctx.user.role.as_str()
    );
    let search = vec![
        text_input(
            "q",
            "Search filed mail",
            Some("subject, sender or record"),
            query,
        ),
        buttons(vec![action_button(
            "Search",
            &action_url,
            &[("op", "home_search")],
        )]),
    ];
    let mut card = Card::new("home", "docket")
        .subtitle(&ctx.tenant.name)
        .section(None, vec![paragraph(&about)])
        .section(Some("Find filed mail"), search);
    let lines = |list: Vec<FilingView>| -> Vec<Value> {
        list.iter().map(|f| filing_line(state, ctx, s, f)).collect()
    };
    if let Some(q) = query {
        let filter = crate::filing::FilingFilter {
            text: Some(q),
            ..Default::default()
        };
        let found =
            crate::filing::list_filings(&ctx.tenant.db, &ctx.user.id, &filter, 20, 0).await?;
        let widgets = match found.is_empty() {
            true => vec![paragraph(&format!("Nothing filed matches “{}”.", esc(q)))],
            false => lines(found),
        };
        card = card.section(Some("Results"), widgets);
    }
    let mine = crate::filing::FilingFilter {
        filed_by: Some(&ctx.user.id),
        ..Default::default()
    };
    let recent =
        crate::filing::list_filings(&ctx.tenant.db, &ctx.user.id, &mine, RECENT_FILINGS, 0).await?;
    let widgets = match recent.is_empty() {
        true => vec![paragraph("You have not filed anything yet.")],
        false => lines(recent),
    };
    Ok(card.section(Some("Your recent filings"), widgets).build())
}

/// One filing in a list: its subject, the record, when, and a View button.
fn filing_line(state: &AppState, ctx: &TenantCtx, s: &AddonSettings, f: &FilingView) -> Value {
    let subject = f.message.subject.as_deref().unwrap_or("(no subject)");
    let when = crate::time_fmt::human_in(&f.filed_at, &s.time_zone);
    let mut w = decorated(
        Some(&format!(
            "{} · {}",
            f.target.id,
            cards::truncate(&f.target.title, 40)
        )),
        &esc(&cards::truncate(subject, 80)),
        Some(&when),
    );
    let link = super::view::filing_link(state, &s.public_url, &ctx.tenant.id, &f.id, &ctx.user.id);
    w["decoratedText"]["button"] =
        serde_json::json!({ "text": "View", "onClick": { "openLink": { "url": link } } });
    w
}

/// Google Workspace add-on HTTP runtime: the contextual trigger when a message is opened.
#[utoipa::path(post, path = "/addon/message",
    request_body(content = Object, description = "The add-on event object, with the message's Gmail ids and access token"),
    responses((status = 200, description = "The message card", body = Object)),
    security(("google_addon" = [])), tag = "gmail-add-on")]
pub(crate) async fn message(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let (ev, ctx, s) = authed!(state, headers, uri, body, true);
    let card = match open_message(&state, &ev).await {
        Ok(msg) => message_card(&state, &ctx, &s, &msg, None)
            .await
            .map_err(CardFailure::from),
        Err(f) => Err(f),
    };
    let card = card.unwrap_or_else(|f| failure_card(&s, f));
    Json(cards::push(card)).into_response()
}

fn failure_card(s: &AddonSettings, f: CardFailure) -> Value {
    let retry = action_button(
        "Try again",
        &format!("{}/addon/action", s.public_url),
        &[("op", "open")],
    );
    cards::error_card(f.title, &f.detail, Some(retry))
}

/// Google Workspace add-on HTTP runtime: a button on a card (file, file the thread, search).
#[utoipa::path(post, path = "/addon/action",
    request_body(content = Object, description = "The add-on event object, with the card's form inputs"),
    responses((status = 200, description = "A card update or navigation", body = Object)),
    security(("google_addon" = [])), tag = "gmail-add-on")]
pub(crate) async fn action(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let (ev, ctx, s) = authed!(state, headers, uri, body, true);
    let op = ev.param("op").unwrap_or("open").to_string();
    let reply = match op.as_str() {
        "open" | "search" => {
            let q = if op == "search" { ev.input("q") } else { None };
            match open_message(&state, &ev).await {
                Ok(msg) => match message_card(&state, &ctx, &s, &msg, q.as_deref()).await {
                    Ok(card) => cards::update(card, None),
                    Err(e) => cards::update(failure_card(&s, e.into()), None),
                },
                Err(f) => cards::update(failure_card(&s, f), None),
            }
        }
        "home_search" => match home_card(&state, &ctx, &s, ev.input("q").as_deref()).await {
            Ok(card) => cards::update(card, None),
            Err(e) => cards::update(failure_card(&s, e.into()), None),
        },
        "file" => file_action(&state, &ctx, &s, &ev).await,
        "file_thread" => file_thread_action(&state, &ctx, &s, &ev).await,
        "undo" => undo_action(&state, &ctx, &s, &ev).await,
        other => {
            return AppError::bad_request(
                "unknown-action",
                format!("unknown add-on action {other:?}"),
            )
            .into_response()
        }
    };
    Json(reply).into_response()
}

/// The card after filing: what was filed, "Undo" for the filings just made (`undo`: their
/// ids, empty for none; `labels`: the label prefix they were labelled with, which Undo takes
/// off even if the firm changes it meanwhile), and the way back to the message.
fn filed_card(
    s: &AddonSettings,
    subtitle: &str,
    widgets: Vec<Value>,
    undo: &[String],
    labels: Option<&str>,
) -> Value {
    let action_url = format!("{}/addon/action", s.public_url);
    let mut actions = Vec::new();
    if !undo.is_empty() {
        let ids = undo.join(",");
        let mut params = vec![("op", "undo"), ("filings", ids.as_str())];
        params.extend(labels.map(|p| ("labels", p)));
        actions.push(action_button("Undo", &action_url, &params));
    }
    actions.push(action_button(
        "Back to message",
        &action_url,
        &[("op", "open")],
    ));
    Card::new("filed", "docket")
        .subtitle(subtitle)
        .section(Some("Filed"), widgets)
        .section(None, vec![buttons(actions)])
        .build()
}

/// How long labelling may take after a filing (the card must answer within Google's 30 s,
/// and the message was fetched and filed before).
const LABEL_BUDGET: std::time::Duration = std::time::Duration::from_secs(8);

/// The Gmail label of a filing to `reference`: `{prefix}/{reference}`, a `/` in the
/// reference written `-` so that it makes no label level of its own.
fn label_name(prefix: &str, reference: &str) -> String {
    format!("{prefix}/{}", reference.replace('/', "-"))
}

/// Puts the labels `{prefix}/{reference}` for each of `refs` on the open message in the
/// user's Gmail (`add`), or takes them off; the line the card shows. At most
/// [`LABEL_BUDGET`]. A failure never undoes a filing: the card says it.
async fn gmail_labels(
    state: &AppState,
    ev: &AddonEvent,
    prefix: &str,
    refs: &[String],
    add: bool,
) -> Option<String> {
    let message = ev.gmail.as_ref()?.message_id.as_deref()?;
    let auth = &ev.authorization_event_object;
    let granted = auth
        .authorized_scopes
        .as_ref()
        .is_some_and(|s| s.iter().any(|s| s == crate::gmail::SCOPE_GMAIL_MODIFY));
    let no_scope = "Not labelled in Gmail: the add-on may not change your labels (it needs the gmail.modify scope; ask your docket administrator).";
    let (Some(oauth), true) = (auth.user_o_auth_token.as_deref(), granted) else {
        return Some(no_scope.into());
    };
    let names: std::collections::BTreeSet<String> =
        refs.iter().map(|r| label_name(prefix, r)).collect();
    if names.is_empty() {
        return None;
    }
    let names: Vec<String> = names.into_iter().collect();
    let labelled = state.gmail.set_labels(oauth, message, &names, add);
    let line = match tokio::time::timeout(LABEL_BUDGET, labelled).await {
        Ok(Ok(())) if add => format!("Labelled {} in Gmail", names.join(", ")),
        Ok(Ok(())) => format!("Label {} taken off in Gmail", names.join(", ")),
        Ok(Err(crate::gmail::GmailError::Forbidden)) => no_scope.into(),
        Ok(Err(e)) => format!("Not labelled in Gmail: {e}"),
        Err(_) => "Not labelled in Gmail: Gmail did not answer in time".into(),
    };
    Some(line)
}

/// The firm's label prefix for the filed card; `None` when it does not label (or the
/// setting cannot be read: the filing stands either way).
async fn label_prefix(ctx: &TenantCtx) -> Option<String> {
    crate::firm_settings::gmail_label_prefix(&ctx.tenant)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(tenant = %ctx.tenant.id, error = %e, "reading the label prefix failed");
            None
        })
}

/// The references the messages `ids` are still filed to (their labels stay on undo: a
/// reference of another kind, or a colleague's filing). Empty when they cannot be read.
async fn still_filed(ctx: &TenantCtx, ids: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for id in ids {
        let rows = sqlx::query(
            "SELECT r.reference FROM filings f JOIN records r ON r.id = f.record_id WHERE f.message_id = $1",
        )
        .bind(id)
        .fetch_all(&ctx.tenant.db)
        .await;
        out.extend(
            rows.unwrap_or_default()
                .iter()
                .map(|r| sqlx::Row::get::<String, _>(r, 0)),
        );
    }
    out
}

/// "Undo" on the filed card: takes back each filing named (the user's own, within the grace
/// period; see [`crate::filing::remove`]) and says what went and what could not.
async fn undo_action(
    state: &AppState,
    ctx: &TenantCtx,
    s: &AddonSettings,
    ev: &AddonEvent,
) -> Value {
    let ids: Vec<&str> = ev
        .param("filings")
        .unwrap_or("")
        .split(',')
        .filter(|id| !id.is_empty())
        .take(filing::MAX_TARGETS)
        .collect();
    let (mut widgets, mut undone, mut refused) = (Vec::new(), Vec::new(), Vec::new());
    let (mut labels_off, mut messages) = (Vec::new(), Vec::new());
    for id in ids {
        match super::filings::undo_filing(state, ctx, id).await {
            Ok(r) => {
                let (kind, reference) = r.target.split_once(':').unwrap_or(("", &r.target));
                let also = (!r.also_removed.is_empty())
                    .then(|| format!("with the rules' filings to {}", r.also_removed.join(", ")));
                widgets.push(decorated(
                    Some("Taken back from"),
                    &record_line(kind, reference, &r.title),
                    also.as_deref(),
                ));
                undone.push(reference.to_string());
                messages.push(r.message_id.clone());
                labels_off.push(reference.to_string());
                let rules = r
                    .also_removed
                    .iter()
                    .map(|t| t.split_once(':').map_or(t.as_str(), |(_, r)| r));
                labels_off.extend(rules.map(str::to_string));
            }
            Err(e) => refused.push(CardFailure::from(e).detail),
        }
    }
    if undone.is_empty() {
        let why = refused
            .first()
            .cloned()
            .unwrap_or_else(|| "Nothing to undo.".into());
        return cards::update(
            cards::error_card("Not undone", &why, None),
            Some("Not undone"),
        );
    }
    widgets.extend(refused.iter().map(|f| paragraph(&esc(f))));
    if let Some(prefix) = ev.param("labels").filter(|p| !p.is_empty()) {
        let still = still_filed(ctx, &messages).await;
        labels_off.retain(|r| !still.contains(r));
        if let Some(line) = gmail_labels(state, ev, prefix, &labels_off, false).await {
            widgets.push(paragraph(&esc(&line)));
        }
    }
    let note = format!("Filing undone: {}", undone.join(", "));
    cards::update(
        filed_card(s, "Filing undone", widgets, &[], None),
        Some(&note),
    )
}

/// The records ticked in the card (suggestions and search results), or a notification.
fn chosen_targets(ev: &AddonEvent) -> Result<Vec<TargetRef>, Value> {
    let mut targets: Vec<TargetRef> = Vec::new();
    for v in ev.inputs("targets").into_iter().chain(ev.inputs("found")) {
        match TargetRef::parse(&v) {
            Some(t) if !targets.contains(&t) => targets.push(t),
            Some(_) => {}
            None => {
                return Err(cards::notify(
                    "That record choice is not valid; reopen the message.",
                ))
            }
        }
    }
    if targets.is_empty() {
        return Err(cards::notify("Choose at least one record to file to."));
    }
    Ok(targets)
}

/// Files every message of the open message's thread (read through domain-wide delegation).
async fn file_thread_action(
    state: &AppState,
    ctx: &TenantCtx,
    s: &AddonSettings,
    ev: &AddonEvent,
) -> Value {
    let targets = match chosen_targets(ev) {
        Ok(t) => t,
        Err(n) => return n,
    };
    let key = match state.catalog.delegation_key(&ctx.tenant.id).await {
        Ok(Some(k)) => k,
        Ok(None) => return cards::notify("Thread filing is not set up for your firm."),
        Err(e) => return cards::update(failure_card(s, AppError::internal(e).into()), None),
    };
    let Some(thread) = ev.gmail.as_ref().and_then(|g| g.thread_id.as_deref()) else {
        return cards::notify("No thread is open.");
    };
    let listed = match state
        .gmail
        .thread_as_user(&key, &ctx.user.email, thread)
        .await
    {
        Ok(t) => t,
        Err(e) => return cards::update(failure_card(s, e.into()), None),
    };
    let (mut created, mut existing, mut failed) = (0, 0, Vec::new());
    // One message in memory at a time, each under the message budget.
    for id in &listed.ids {
        let m = match state.gmail.get_delegated(&listed, id, &state.budget).await {
            Ok(m) => m,
            Err(e) => {
                failed.push(e.to_string());
                continue;
            }
        };
        let result = filing::file_message(
            &ctx.tenant,
            &state.config.limits,
            &ctx.user,
            FilingInput {
                raw: m.raw,
                gmail_message_id: Some(m.id.clone()),
                gmail_thread_id: m.thread_id.clone(),
                targets: targets.clone(),
                attachments: AttachmentSelection::All,
                note: ev.input("note"),
            },
        )
        .await;
        crate::metrics::global().filed(crate::metrics::Client::AddonCard, result.as_ref());
        match result {
            Ok(o) if o.filings.iter().any(|f| f.created == Some(true)) => created += 1,
            Ok(_) => existing += 1,
            Err(e) => {
                let f: CardFailure = e.into();
                failed.push(f.detail);
            }
        }
    }
    let names: Vec<String> = targets.iter().map(|t| t.id.clone()).collect();
    let mut widgets = vec![decorated(
        Some("Thread filed to"),
        &esc(&names.join(", ")),
        Some(&format!(
            "{created} new · {existing} already filed · {} not filed",
            failed.len()
        )),
    )];
    for f in failed.iter().take(10) {
        widgets.push(paragraph(&esc(f)));
    }
    let card = filed_card(s, "Whole thread", widgets, &[], None);
    cards::update(
        card,
        Some(&format!(
            "Thread filed to {}: {created} new",
            names.join(", ")
        )),
    )
}

async fn file_action(
    state: &AppState,
    ctx: &TenantCtx,
    s: &AddonSettings,
    ev: &AddonEvent,
) -> Value {
    let targets = match chosen_targets(ev) {
        Ok(t) => t,
        Err(n) => return n,
    };
    let attachments = ev
        .inputs("attachments")
        .iter()
        .filter_map(|v| v.parse::<usize>().ok())
        .collect();
    let msg = match open_message(state, ev).await {
        Ok(m) => m,
        Err(f) => return cards::update(failure_card(s, f), None),
    };
    let outcome = filing::file_message(
        &ctx.tenant,
        &state.config.limits,
        &ctx.user,
        FilingInput {
            raw: msg.raw,
            gmail_message_id: msg.gmail_id,
            gmail_thread_id: msg.thread_id,
            targets,
            attachments: AttachmentSelection::Only(attachments),
            note: ev.input("note"),
        },
    )
    .await;
    crate::metrics::global().filed(crate::metrics::Client::AddonCard, outcome.as_ref());
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            let f: CardFailure = e.into();
            return cards::update(
                cards::error_card("Not filed", &f.detail, None),
                Some("Not filed"),
            );
        }
    };
    let widgets = outcome
        .filings
        .iter()
        .map(|f| {
            let top = if f.created == Some(true) {
                "Filed to"
            } else {
                "Already filed to"
            };
            let kept = match f.attachments.len() {
                0 => "no attachments kept".to_string(),
                1 => "1 attachment kept".to_string(),
                n => format!("{n} attachments kept"),
            };
            let link =
                super::view::filing_link(state, &s.public_url, &ctx.tenant.id, &f.id, &ctx.user.id);
            let mut w = decorated(
                Some(top),
                &record_line(&f.target.kind, &f.target.id, &f.target.title),
                Some(&kept),
            );
            w["decoratedText"]["button"] =
                serde_json::json!({ "text": "View", "onClick": { "openLink": { "url": link } } });
            w
        })
        .chain(outcome.auto_filed.iter().map(|a| {
            decorated(
                Some(if a.created {
                    "Also filed automatically to"
                } else {
                    "Already filed automatically to"
                }),
                &record_line(&a.target.kind, &a.target.id, &a.target.title),
                Some(&format!("by the firm's rule “{}”", a.rule)),
            )
        }))
        .collect();
    let subject = outcome
        .filings
        .first()
        .and_then(|f| f.message.subject.as_deref())
        .unwrap_or("(no subject)");
    let mut widgets: Vec<Value> = widgets;
    if let Some(notice) = &outcome.notice {
        widgets.push(paragraph(&cards::esc(notice)));
    }
    let prefix = label_prefix(ctx).await;
    if let Some(prefix) = &prefix {
        let refs: Vec<String> = outcome
            .filings
            .iter()
            .map(|f| f.target.id.clone())
            .chain(outcome.auto_filed.iter().map(|a| a.target.id.clone()))
            .collect();
        if let Some(line) = gmail_labels(state, ev, prefix, &refs, true).await {
            widgets.push(paragraph(&esc(&line)));
        }
    }
    let undo: Vec<String> = match state.config.filing.undo_grace_minutes {
        0 => Vec::new(),
        _ => outcome
            .filings
            .iter()
            .filter(|f| f.created == Some(true))
            .map(|f| f.id.clone())
            .collect(),
    };
    let card = filed_card(s, subject, widgets, &undo, prefix.as_deref());
    let ids = |created: bool| -> Vec<String> {
        outcome
            .filings
            .iter()
            .filter(|f| (f.created == Some(true)) == created)
            .map(|f| f.target.id.clone())
            .collect()
    };
    let (new, old) = (ids(true), ids(false));
    let note = match (new.is_empty(), old.is_empty()) {
        (false, true) => format!("Filed to {}", new.join(", ")),
        (false, false) => format!(
            "Filed to {} · already filed to {}",
            new.join(", "),
            old.join(", ")
        ),
        _ => format!("Already filed to {}", old.join(", ")),
    };
    cards::update(card, Some(&note))
}

// ---- JSON API for the Apps Script client -------------------------------------------------

/// The message open in Gmail, for the Apps Script client's sidebar.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ContextRequest {
    /// The whole message in base64url (as for `POST /v1/filings`).
    #[schema(value_type = String)]
    raw: crate::http::intake::RawField,
    #[serde(default)]
    gmail_message_id: Option<String>,
    #[serde(default)]
    gmail_thread_id: Option<String>,
}

impl crate::http::intake::CarriesMessage for ContextRequest {
    fn take_raw(&mut self) -> crate::http::intake::RawField {
        std::mem::take(&mut self.raw)
    }
}

/// The open message as docket sees it: its header facts.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ContextMessage {
    subject: Option<String>,
    from: Vec<crate::mail::Mailbox>,
    message_id: Option<String>,
}

/// An attachment the sidebar offers (inline parts unticked by default).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ContextAttachment {
    /// What `attachments: [..]` of `POST /v1/filings` picks.
    index: usize,
    name: String,
    content_type: String,
    /// Bytes.
    size: usize,
    /// Shown in the body (e.g. a signature logo) rather than attached.
    inline: bool,
}

/// What the sidebar shows for a message: where it is filed, where it probably belongs, and
/// its attachments.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ContextAnswer {
    message: ContextMessage,
    already_filed: Vec<suggest::AlreadyFiled>,
    /// Records to choose from, best first; only the first is meant to be pre-ticked.
    suggestions: Vec<suggest::Suggestion>,
    /// Where the firm's `auto_file` rules also file the message when it is filed: shown
    /// apart, never as a choice.
    rule_filings: Vec<suggest::RuleFiling>,
    /// An earlier, different message used this message's Message-ID.
    message_id_reused: bool,
    /// That, in words (null otherwise).
    notice: Option<String>,
    /// Whether the caller may file (not a viewer).
    can_file: bool,
    attachments: Vec<ContextAttachment>,
    /// The firm's "Filed" label prefix: after filing, the client labels the message
    /// `{prefix}/{reference}` in Gmail (and takes it off on undo); `null`: no labels.
    gmail_label_prefix: Option<String>,
}

/// The sidebar's data for a message (the Apps Script client's counterpart of the HTTP
/// runtime's message card). Reads only: any access token scope may call it.
#[utoipa::path(post, path = "/v1/addon/context", request_body = ContextRequest,
    responses((status = 200, description = "Filings, suggestions and attachments", body = ContextAnswer),
        (status = 400, description = "Malformed JSON or `raw` not base64url"),
        (status = 401, description = "No valid bearer token"),
        (status = 413, description = "Over `limits.max_message_bytes`"),
        (status = 422, description = "Not a message docket can read, or a bad Gmail id"),
        (status = 503, description = "Busy (`Retry-After`)")),
    security(("google_id_token" = []), ("access_token" = [])), tag = "add-on")]
pub(crate) async fn context_api(
    State(state): State<AppState>,
    ReaderCtx(ctx): ReaderCtx,
    body: crate::http::intake::MessageJson<ContextRequest>,
) -> AppResult<Json<ContextAnswer>> {
    let (req, raw) = (body.value, body.raw);
    let thread = match &req.gmail_thread_id {
        Some(t) => Some(crate::gmail::normalise_id(t).ok_or_else(|| {
            AppError::unprocessable("invalid-gmail-id", "`gmail_thread_id` is not a Gmail id")
        })?),
        None => None,
    };
    if let Some(m) = &req.gmail_message_id {
        crate::gmail::normalise_id(m).ok_or_else(|| {
            AppError::unprocessable("invalid-gmail-id", "`gmail_message_id` is not a Gmail id")
        })?;
    }
    let limits = state.config.limits.clone();
    let raw = std::sync::Arc::new(raw);
    let raw2 = raw.clone();
    let parsed = mail::parse_isolated(raw2, limits).await?;
    let suggest::MessageContext {
        already_filed: filed,
        suggestions,
        rule_filings,
        message_id_reused,
    } = message_context(&state, &ctx, &parsed, &raw, thread.as_deref()).await?;
    let notice =
        message_id_reused.then(|| crate::filing::reused_id_notice(parsed.message_id.as_deref()));
    let attachments = parsed
        .attachments
        .iter()
        .map(|a| ContextAttachment {
            index: a.index,
            name: a.display_name.clone(),
            content_type: a.content_type.clone(),
            size: a.size,
            inline: a.inline,
        })
        .collect();
    Ok(Json(ContextAnswer {
        message: ContextMessage {
            subject: parsed.subject.clone(),
            from: parsed.from.clone(),
            message_id: parsed.message_id.clone(),
        },
        already_filed: filed,
        suggestions,
        rule_filings,
        message_id_reused,
        notice,
        can_file: suggest::fileable(&ctx.user),
        attachments,
        gmail_label_prefix: crate::firm_settings::gmail_label_prefix(&ctx.tenant).await?,
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecordsQuery {
    /// Text found in the reference, title or client (case-insensitive); empty: every
    /// open record.
    #[serde(default)]
    q: Option<String>,
    /// 1 to 200; default 20.
    #[serde(default)]
    limit: Option<i64>,
}

/// Records found by `GET /v1/records`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct RecordList {
    records: Vec<suggest::RecordHit>,
}

/// Open records the caller may file to (teams and walls applied; none for a viewer), for
/// the sidebar's search; an exact reference comes first.
#[utoipa::path(get, path = "/v1/records", params(RecordsQuery),
    responses((status = 200, description = "Matching records", body = RecordList),
        (status = 400, description = "`invalid-query`"),
        (status = 401, description = "No valid bearer token")),
    security(("google_id_token" = []), ("access_token" = [])), tag = "add-on")]
pub(crate) async fn records_api(
    ctx: TenantCtx,
    query: Result<Query<RecordsQuery>, axum::extract::rejection::QueryRejection>,
) -> AppResult<Json<RecordList>> {
    let Query(q) = query.map_err(|e| AppError::bad_request("invalid-query", e.body_text()))?;
    let limit = q.limit.unwrap_or(20);
    if !(1..=200).contains(&limit) {
        return Err(AppError::bad_request(
            "invalid-query",
            "`limit` must be 1..=200",
        ));
    }
    let hits = suggest::search(
        &ctx.tenant.db,
        &ctx.user,
        q.q.as_deref().unwrap_or(""),
        limit,
    )
    .await?;
    Ok(Json(RecordList { records: hits }))
}
