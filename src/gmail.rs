//! Reading the open message from the Gmail API with the add-on's per-message token
//! (GOOGLE.md §2). A plain HTTP call: google-gmail1 cannot send `X-Goog-Gmail-Access-Token`
//! and rejects unpadded base64 in `raw`.

use crate::budget::{Budget, Reservation};
use std::time::Duration;

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use serde::Deserialize;

pub const GMAIL_ACCESS_TOKEN_HEADER: &str = "X-Goog-Gmail-Access-Token";

const B64URL_ANY: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// `msg-f:1659728385805497086` → `17088a2c5b91b2fe`; `thread-f:…` likewise; hex ids pass.
pub fn normalise_id(id: &str) -> Option<String> {
    let id = id.trim();
    let bare = match id.split_once(':') {
        Some((prefix, rest)) if prefix.starts_with("msg-") || prefix.starts_with("thread-") => rest,
        Some(_) => return None,
        None => id,
    };
    if bare.is_empty() || bare.len() > 32 {
        return None;
    }
    if id.contains(':') {
        // Prefixed ids are decimal.
        return bare.parse::<u64>().ok().map(|n| format!("{n:x}"));
    }
    bare.bytes()
        .all(|b| b.is_ascii_hexdigit())
        .then(|| bare.to_ascii_lowercase())
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GmailError {
    #[error(
        "Google did not accept docket's access to this message; reopen the message and try again"
    )]
    Unauthorized,
    #[error("docket is not allowed to read this message")]
    Forbidden,
    #[error("the message no longer exists in Gmail")]
    NotFound,
    #[error("Gmail is rate-limiting requests; try again in a minute")]
    RateLimited,
    #[error("Gmail is unavailable right now (status {0}); try again shortly")]
    Unavailable(u16),
    #[error("Gmail did not answer in time; try again")]
    Timeout,
    #[error("Gmail's answer could not be read")]
    Malformed,
    #[error("the message is larger than docket accepts ({0} bytes at most)")]
    TooLarge(usize),
    #[error("the Gmail message id {0:?} is not valid")]
    BadId(String),
    #[error("docket is handling as many messages as its memory budget allows; try again shortly")]
    Busy,
}

#[derive(Deserialize)]
struct RawMessage {
    raw: String,
    #[serde(rename = "threadId")]
    thread_id: Option<String>,
}

/// The message's raw RFC 822 bytes and its Gmail thread id, with the share of the message
/// budget ([`crate::budget`]) it was read under: keep `held` as long as `raw` is in use.
pub struct FetchedMessage {
    pub id: String,
    pub thread_id: Option<String>,
    pub raw: Vec<u8>,
    pub held: Reservation,
}

/// A thread's message ids, listed through domain-wide delegation, and the delegated access
/// token to read each one with ([`GmailClient::get_delegated`]).
pub struct DelegatedThread {
    token: String,
    /// At most 100, in the thread's order.
    pub ids: Vec<String>,
}

pub struct GmailClient {
    http: reqwest::Client,
    timeout: Duration,
    /// Largest answer read, in bytes (a raw message of `limits.max_message_bytes`, base64url,
    /// with its JSON around it); more is refused, never buffered.
    max_answer_bytes: usize,
    /// `https://gmail.googleapis.com/` (trailing slash kept).
    base: String,
}

impl GmailClient {
    /// `max_message_bytes`: the largest message docket accepts (`limits.max_message_bytes`).
    pub fn new(base: &str, timeout: Duration, max_message_bytes: usize) -> Self {
        let mut base = base.to_string();
        if !base.ends_with('/') {
            base.push('/');
        }
        GmailClient {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .expect("HTTP client"),
            timeout,
            max_answer_bytes: max_message_bytes / 3 * 4 + 64 * 1024,
            base,
        }
    }

    /// `users.messages.get?format=raw` with the user's OAuth token and the per-message token.
    /// The answer is read under `budget`: [`GmailError::Busy`] when it cannot cover it.
    pub async fn get_raw(
        &self,
        user_oauth_token: &str,
        message_token: &str,
        message_id: &str,
        budget: &Budget,
    ) -> Result<FetchedMessage, GmailError> {
        self.get_raw_with(user_oauth_token, Some(message_token), message_id, budget)
            .await
    }

    /// One message of a thread listed by [`GmailClient::thread_as_user`], read like
    /// [`GmailClient::get_raw`] with the delegated token.
    pub async fn get_delegated(
        &self,
        thread: &DelegatedThread,
        message_id: &str,
        budget: &Budget,
    ) -> Result<FetchedMessage, GmailError> {
        self.get_raw_with(&thread.token, None, message_id, budget)
            .await
    }

    async fn get_raw_with(
        &self,
        oauth_token: &str,
        message_token: Option<&str>,
        message_id: &str,
        budget: &Budget,
    ) -> Result<FetchedMessage, GmailError> {
        let id =
            normalise_id(message_id).ok_or_else(|| GmailError::BadId(message_id.to_string()))?;
        let url = format!("{}gmail/v1/users/me/messages/{id}?format=raw", self.base);
        let mut req = self.http.get(&url).bearer_auth(oauth_token);
        if let Some(t) = message_token {
            req = req.header(GMAIL_ACCESS_TOKEN_HEADER, t);
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                GmailError::Timeout
            } else {
                tracing::warn!(error = %e, "Gmail request failed");
                GmailError::Unavailable(0)
            }
        })?;
        let status = resp.status().as_u16();
        match status {
            200 => {}
            401 => return Err(GmailError::Unauthorized),
            403 => return Err(GmailError::Forbidden),
            404 => return Err(GmailError::NotFound),
            429 => return Err(GmailError::RateLimited),
            s => {
                tracing::warn!(status = s, "Gmail answered an error");
                return Err(GmailError::Unavailable(s));
            }
        }
        let mut held = budget.empty();
        let body = self.read_bounded(resp, budget, &mut held).await?;
        let body: RawMessage = serde_json::from_slice(&body).map_err(|_| GmailError::Malformed)?;
        let raw = B64URL_ANY
            .decode(body.raw.trim_end())
            .map_err(|_| GmailError::Malformed)?;
        Ok(FetchedMessage {
            id,
            thread_id: body.thread_id.and_then(|t| normalise_id(&t)),
            raw,
            held,
        })
    }
}

impl GmailClient {
    /// The answer's body, refused as soon as it is over `max_answer_bytes`; `held` grows
    /// with it, and the read stops with [`GmailError::Busy`] when `budget` cannot cover it.
    async fn read_bounded(
        &self,
        mut resp: reqwest::Response,
        budget: &Budget,
        held: &mut Reservation,
    ) -> Result<Vec<u8>, GmailError> {
        let max = self.max_answer_bytes;
        let too_large = || GmailError::TooLarge(max / 4 * 3);
        if resp.content_length().is_some_and(|n| n as usize > max) {
            return Err(too_large());
        }
        if let Some(n) = resp.content_length() {
            if !budget.try_grow(held, n as usize) {
                return Err(GmailError::Busy);
            }
        }
        let mut body = Vec::new();
        loop {
            let chunk = resp.chunk().await.map_err(|e| match e.is_timeout() {
                true => GmailError::Timeout,
                false => GmailError::Malformed,
            })?;
            let Some(chunk) = chunk else {
                return Ok(body);
            };
            if body.len() + chunk.len() > max {
                return Err(too_large());
            }
            if !budget.try_grow(held, body.len() + chunk.len()) {
                return Err(GmailError::Busy);
            }
            body.extend_from_slice(&chunk);
        }
    }
}

/// `gmail.modify`: what the add-on needs to put "Filed" labels on the user's mail.
pub const SCOPE_GMAIL_MODIFY: &str = "https://www.googleapis.com/auth/gmail.modify";

#[derive(Deserialize)]
struct LabelList {
    #[serde(default)]
    labels: Vec<Label>,
}

#[derive(Deserialize)]
struct Label {
    id: String,
    name: String,
}

impl GmailClient {
    /// Puts the labels `names` on message `message_id` (`add`), creating those that do not
    /// exist yet, parents first (`Filed` before `Filed/M-1`, so Gmail nests them); or takes
    /// them off (`!add`; labels that do not exist are skipped). Gmail compares label names
    /// without case, and so does this: an existing `filed` is used for `Filed`, and a
    /// create that loses a race (409) uses the label the other side made. With the user's
    /// OAuth token, which needs [`SCOPE_GMAIL_MODIFY`] ([`GmailError::Forbidden`] when
    /// Gmail says it lacks it). Gmail API `users.labels.list`, `users.labels.create` and
    /// `users.messages.modify`
    /// (<https://developers.google.com/gmail/api/reference/rest/v1/users.messages/modify>).
    pub async fn set_labels(
        &self,
        oauth: &str,
        message_id: &str,
        names: &[String],
        add: bool,
    ) -> Result<(), GmailError> {
        let id =
            normalise_id(message_id).ok_or_else(|| GmailError::BadId(message_id.to_string()))?;
        let mut known = self.labels(oauth).await?;
        let mut ids = Vec::new();
        for name in names {
            if add {
                let parents = name.match_indices('/').map(|(i, _)| &name[..i]);
                for wanted in parents.chain([name.as_str()]) {
                    if !known.contains_key(&wanted.to_lowercase()) {
                        self.create_label(oauth, wanted, &mut known).await?;
                    }
                }
            }
            let found = known.get(&name.to_lowercase()).cloned();
            if let Some(label) = found.filter(|l| !ids.contains(l)) {
                ids.push(label);
            }
        }
        if ids.is_empty() {
            return Ok(());
        }
        let key = if add { "addLabelIds" } else { "removeLabelIds" };
        let url = format!("{}gmail/v1/users/me/messages/{id}/modify", self.base);
        let req = self.http.post(&url).json(&serde_json::json!({ key: ids }));
        self.call::<serde_json::Value>(req, oauth).await.map(drop)
    }

    /// The user's labels: lowercased name → id.
    async fn labels(
        &self,
        oauth: &str,
    ) -> Result<std::collections::HashMap<String, String>, GmailError> {
        let url = format!("{}gmail/v1/users/me/labels", self.base);
        let list: LabelList = self.call(self.http.get(&url), oauth).await?;
        Ok(list
            .labels
            .into_iter()
            .map(|l| (l.name.to_lowercase(), l.id))
            .collect())
    }

    /// Creates label `name` into `known`; on a 409 (it exists: made meanwhile, or a name
    /// Gmail reserves) the list is read again, and a name still missing is an error.
    async fn create_label(
        &self,
        oauth: &str,
        name: &str,
        known: &mut std::collections::HashMap<String, String>,
    ) -> Result<(), GmailError> {
        let url = format!("{}gmail/v1/users/me/labels", self.base);
        let body = serde_json::json!({"name": name, "labelListVisibility": "labelShow", "messageListVisibility": "show"});
        match self
            .call::<Label>(self.http.post(&url).json(&body), oauth)
            .await
        {
            Ok(made) => {
                known.insert(made.name.to_lowercase(), made.id);
                Ok(())
            }
            Err(GmailError::Unavailable(409)) => {
                *known = self.labels(oauth).await?;
                match known.contains_key(&name.to_lowercase()) {
                    true => Ok(()),
                    false => Err(GmailError::Unavailable(409)),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Sends `req` with `oauth` and reads its JSON answer, at most [`MAX_LABEL_ANSWER`]
    /// bytes read (a user with thousands of labels stays well under it). A 403 is
    /// [`GmailError::Forbidden`] only when Gmail says the token lacks a scope; a rate limit
    /// is [`GmailError::RateLimited`]; other 403s are `Unavailable(403)`.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        oauth: &str,
    ) -> Result<T, GmailError> {
        let mut resp = req
            .bearer_auth(oauth)
            .send()
            .await
            .map_err(|e| match e.is_timeout() {
                true => GmailError::Timeout,
                false => GmailError::Unavailable(0),
            })?;
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| match e.is_timeout() {
            true => GmailError::Timeout,
            false => GmailError::Malformed,
        })? {
            if body.len() + chunk.len() > MAX_LABEL_ANSWER {
                return Err(GmailError::Malformed);
            }
            body.extend_from_slice(&chunk);
        }
        match status {
            200 => serde_json::from_slice(&body).map_err(|_| GmailError::Malformed),
            401 => Err(GmailError::Unauthorized),
            403 => Err(forbidden_reason(&body)),
            404 => Err(GmailError::NotFound),
            429 => Err(GmailError::RateLimited),
            s => Err(GmailError::Unavailable(s)),
        }
    }
}

/// The most a label call's answer may be, in bytes.
const MAX_LABEL_ANSWER: usize = 4 << 20;

/// What a 403 of the Gmail API means, from its error body: a missing scope
/// (`ACCESS_TOKEN_SCOPE_INSUFFICIENT`, "insufficient authentication scopes"), a rate limit
/// (`rateLimitExceeded`, `userRateLimitExceeded`), or something else (a domain's policy).
fn forbidden_reason(body: &[u8]) -> GmailError {
    let text = String::from_utf8_lossy(body).to_ascii_lowercase();
    if text.contains("scope") {
        GmailError::Forbidden
    } else if text.contains("ratelimitexceeded") {
        GmailError::RateLimited
    } else {
        GmailError::Unavailable(403)
    }
}

/// `gmail.readonly`: what domain-wide delegation grants docket for thread filing.
pub const SCOPE_GMAIL_READONLY: &str = "https://www.googleapis.com/auth/gmail.readonly";

/// Checks that `json` is a service-account key usable for domain-wide delegation.
pub fn parse_delegation_key(
    json: &str,
) -> Result<google_gmail1::yup_oauth2::ServiceAccountKey, String> {
    let key: google_gmail1::yup_oauth2::ServiceAccountKey =
        serde_json::from_str(json).map_err(|e| format!("not a service-account key file: {e}"))?;
    if key
        .key_type
        .as_deref()
        .is_some_and(|t| t != "service_account")
    {
        return Err("the key's `type` must be service_account".into());
    }
    if !key.private_key.contains("PRIVATE KEY")
        || key.client_email.is_empty()
        || key.token_uri.is_empty()
    {
        return Err("the key lacks private_key, client_email or token_uri".into());
    }
    Ok(key)
}

impl GmailClient {
    /// The messages of a thread (the first 100), listed as `user` through a service account
    /// with domain-wide delegation (google-gmail1 + yup-oauth2, `subject` = the user). Each
    /// is then read with [`Self::get_delegated`], one at a time under the message budget
    /// (google-gmail1 is not used for that: it rejects unpadded `raw`).
    pub async fn thread_as_user(
        &self,
        key_json: &str,
        user: &str,
        thread_id: &str,
    ) -> Result<DelegatedThread, GmailError> {
        use google_gmail1::{hyper_rustls, hyper_util, yup_oauth2, Gmail};
        let thread =
            normalise_id(thread_id).ok_or_else(|| GmailError::BadId(thread_id.to_string()))?;
        let key = parse_delegation_key(key_json).map_err(|e| {
            tracing::error!(error = %e, "stored delegation key is unusable");
            GmailError::Unauthorized
        })?;
        let connector = || {
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_native_roots()
                .map(|b| b.https_or_http().enable_http1().build())
                .map_err(|e| {
                    tracing::error!(error = %e, "no TLS roots for the Gmail client");
                    GmailError::Unavailable(0)
                })
        };
        let executor = hyper_util::rt::TokioExecutor::new();
        let auth = yup_oauth2::ServiceAccountAuthenticator::with_client(
            key,
            yup_oauth2::client::CustomHyperClientBuilder::from(
                hyper_util::client::legacy::Client::builder(executor.clone()).build(connector()?),
            ),
        )
        .subject(user)
        .build()
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "delegation authenticator failed");
            GmailError::Unauthorized
        })?;
        let token = tokio::time::timeout(self.timeout(), auth.token(&[SCOPE_GMAIL_READONLY]))
            .await
            .map_err(|_| GmailError::Timeout)?
            .map_err(|e| {
                tracing::warn!(error = %e, user, "delegated token refused");
                GmailError::Forbidden
            })?;
        let token = token.token().ok_or(GmailError::Unauthorized)?.to_string();
        let mut hub = Gmail::new(
            hyper_util::client::legacy::Client::builder(executor).build(connector()?),
            token.clone(),
        );
        hub.base_url(self.base.clone());
        hub.root_url(self.base.clone());
        let call = hub
            .users()
            .threads_get("me", &thread)
            .format("minimal")
            .add_scope(google_gmail1::api::Scope::Readonly)
            .doit();
        let (_, listed) = tokio::time::timeout(self.timeout(), call)
            .await
            .map_err(|_| GmailError::Timeout)?
            .map_err(|e| match &e {
                google_gmail1::Error::Failure(resp) => match resp.status().as_u16() {
                    401 => GmailError::Unauthorized,
                    403 => GmailError::Forbidden,
                    404 => GmailError::NotFound,
                    429 => GmailError::RateLimited,
                    s => GmailError::Unavailable(s),
                },
                _ => {
                    tracing::warn!(error = %e, "threads.get failed");
                    GmailError::Unavailable(0)
                }
            })?;
        let ids = listed
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| m.id)
            .take(100)
            .collect();
        Ok(DelegatedThread { token, ids })
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }
}

#[cfg(test)]
mod tests {
    use super::normalise_id;

    #[test]
    fn ids() {
        assert_eq!(
            normalise_id("msg-f:1659728385805497086").as_deref(),
            Some("17088a2c5b91b2fe")
        );
        assert_eq!(
            normalise_id("thread-f:1659728385805497086").as_deref(),
            Some("17088a2c5b91b2fe")
        );
        assert_eq!(normalise_id("msg-a:r123").as_deref(), None);
        assert_eq!(
            normalise_id("17088A2C5B91B2FE").as_deref(),
            Some("17088a2c5b91b2fe")
        );
        assert_eq!(normalise_id("../etc").as_deref(), None);
        assert_eq!(normalise_id("other:12").as_deref(), None);
    }
}
