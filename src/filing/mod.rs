//! The filing use case: its types, the flow ([`flow`]: check → authorise → parse → route
//! by rules → store blobs durably → one transaction with message, filings and audit entries
//! → answer), deduplication ([`dedup`]) and the reads. Idempotent per (message, record).

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, AnyPool, Row};

use crate::access;
use crate::directory::RecordKind;
use crate::error::AppResult;
use crate::mail::{Mailbox, ParsedMessage};
use crate::tenancy::script::Script;

pub mod dedup;
mod flow;
pub mod remove;

pub use flow::file_message;

pub const MAX_TARGETS: usize = 20;
pub const MAX_NOTE_CHARS: usize = 2000;

/// `{"kind": "matter", "id": "M-2024-017"}`: a record by kind and reference.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, utoipa::ToSchema,
)]
#[serde(deny_unknown_fields)]
pub struct TargetRef {
    /// `matter`, `case` or `contract`.
    #[schema(example = "matter")]
    pub kind: String,
    /// The record's reference.
    #[schema(example = "M-2024-017")]
    pub id: String,
}

impl TargetRef {
    /// Parses `matter:M-2024-017`.
    pub fn parse(s: &str) -> Option<TargetRef> {
        let (kind, id) = s.split_once(':')?;
        Some(TargetRef {
            kind: kind.trim().to_string(),
            id: id.trim().to_string(),
        })
    }
}

impl std::fmt::Display for TargetRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind, self.id)
    }
}

/// `"all"` or a list of attachment indices (0-based, in message order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AttachmentSelection {
    #[default]
    All,
    Only(Vec<usize>),
}

impl utoipa::PartialSchema for AttachmentSelection {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["all"])),
            )
            .item(
                ArrayBuilder::new().items(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(0)),
                ),
            )
            .description(Some(
                "`\"all\"` (the default), or the 0-based indices of the attachments to keep",
            ))
            .into()
    }
}

impl utoipa::ToSchema for AttachmentSelection {}

impl<'de> Deserialize<'de> for AttachmentSelection {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            List(Vec<usize>),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("attachments must be \"all\" or a list of attachment indices")
        })? {
            Raw::Word(w) if w == "all" => Ok(AttachmentSelection::All),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "attachments must be \"all\" or a list of indices, not {w:?}"
            ))),
            Raw::List(l) => Ok(AttachmentSelection::Only(l)),
        }
    }
}

pub struct FilingInput {
    pub raw: Vec<u8>,
    pub gmail_message_id: Option<String>,
    pub gmail_thread_id: Option<String>,
    pub targets: Vec<TargetRef>,
    pub attachments: AttachmentSelection,
    pub note: Option<String>,
}

/// The record a filing is in.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TargetView {
    pub kind: String,
    pub id: String,
    pub title: String,
}

/// An attachment as stored: its bytes after undoing the Content-Transfer-Encoding.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttachmentView {
    /// 0-based position in the message (`GET /v1/filings/{id}/attachments/{index}`).
    pub index: i64,
    pub name: String,
    pub content_type: String,
    /// Bytes.
    pub size: i64,
    /// Lowercase hex SHA-256 of the stored bytes.
    pub sha256: String,
}

/// A stored message (one per distinct message, whatever the number of filings).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MessageView {
    pub id: String,
    pub message_id: Option<String>,
    pub subject: Option<String>,
    pub from: Vec<Mailbox>,
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    pub date: Option<String>,
    pub in_reply_to: Vec<String>,
    pub references: Vec<String>,
    pub size: i64,
    pub sha256: String,
    pub gmail_message_id: Option<String>,
    pub gmail_thread_id: Option<String>,
    /// Every attachment of the message (the filing's `attachments` are those it kept).
    pub attachments: Vec<AttachmentView>,
}

/// A message filed to a record.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FilingView {
    pub id: String,
    pub target: TargetView,
    pub filed_by: String,
    pub filed_at: String,
    pub note: Option<String>,
    pub attachments: Vec<AttachmentView>,
    pub message: MessageView,
    /// In a filing answer: whether this call created the filing (false: it already existed).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub created: Option<bool>,
}

/// The answer to `POST /v1/filings`: one filing per target, in the order given.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FilingOutcome {
    pub filings: Vec<FilingView>,
    /// Filings the firm's routing rules added (`auto_file` rules), filed by the system user.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub auto_filed: Vec<AutoFiled>,
    /// An earlier, different message used this message's Message-ID: this one was stored
    /// as its own message (never taken for a duplicate of that one).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub message_id_reused: bool,
    /// What happened, in words, when there is something to say (`message_id_reused`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
}

/// The words for `message_id_reused`.
pub fn reused_id_notice(message_id: Option<&str>) -> String {
    format!(
        "An earlier, different message used the same Message-ID <{}>; this message is kept as its own message, not as a copy of that one.",
        message_id.unwrap_or("")
    )
}

/// A filing made by an `auto_file` routing rule alongside the user's own.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AutoFiled {
    pub filing_id: String,
    pub target: TargetView,
    /// The rule that filed it.
    pub rule: String,
    /// False when the message was already filed there.
    pub created: bool,
}

impl FilingOutcome {
    /// 201 when this call filed anything new, 200 when everything already existed.
    pub fn status(&self) -> StatusCode {
        if self.filings.iter().any(|f| f.created == Some(true)) {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        }
    }
}

impl MessageView {
    /// The view of a message this call is inserting (row `id`, see [`insert_message`]):
    /// what [`load_filing`] reads back once it has committed, built without reading it.
    fn inserted(
        id: &str,
        p: &ParsedMessage,
        gmail_message_id: Option<String>,
        gmail_thread_id: Option<String>,
    ) -> MessageView {
        MessageView {
            id: id.to_string(),
            message_id: p.message_id.clone(),
            subject: p.subject.clone(),
            from: p.from.clone(),
            to: p.to.clone(),
            cc: p.cc.clone(),
            date: p.sent_at.clone(),
            in_reply_to: p.in_reply_to.clone(),
            references: p.references.clone(),
            size: p.raw_size as i64,
            sha256: p.raw_sha256.clone(),
            gmail_message_id,
            gmail_thread_id,
            attachments: p
                .attachments
                .iter()
                .map(|a| AttachmentView {
                    index: a.index as i64,
                    name: a.display_name.clone(),
                    content_type: a.content_type.clone(),
                    size: a.size as i64,
                    sha256: a.sha256.clone(),
                })
                .collect(),
        }
    }
}

/// The message's row and its attachments' rows, added to `writes`; returns the new id.
/// The message's participants ([`crate::suggest::terms::parties`]).
fn insert_parties(writes: &mut Script, id: &str, p: &ParsedMessage, now: &str) {
    for (address, domain) in crate::suggest::terms::parties(p) {
        writes.push(
            "INSERT INTO message_parties (message_id, address, domain, at) VALUES ($1, $2, $3, $4)",
            vec![id.into(), address.into(), domain.into(), now.into()],
        );
    }
}

fn insert_message(
    writes: &mut Script,
    p: &ParsedMessage,
    dedup_key: &str,
    gmail_message_id: Option<&str>,
    gmail_thread_id: Option<&str>,
    now: &str,
) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    writes.push(
        "INSERT INTO messages (id, dedup_key, message_id, subject, from_json, to_json, cc_json, sent_at, \
         in_reply_to_json, references_json, raw_size, raw_sha256, gmail_message_id, gmail_thread_id, created_at, from_addr, \
         content_sha256) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
        vec![
            (&id).into(),
            dedup_key.into(),
            p.message_id.clone().into(),
            p.subject.clone().into(),
            js(&p.from).into(),
            js(&p.to).into(),
            js(&p.cc).into(),
            p.sent_at.clone().into(),
            js(&p.in_reply_to).into(),
            js(&p.references).into(),
            (p.raw_size as i64).into(),
            (&p.raw_sha256).into(),
            gmail_message_id.into(),
            gmail_thread_id.into(),
            now.into(),
            p.from.iter().find_map(|b| b.address.clone()).into(),
            (&p.content_sha256).into(),
        ],
    );
    insert_parties(writes, &id, p, now);
    for a in &p.attachments {
        writes.push(
            "INSERT INTO message_attachments (message_id, idx, display_name, content_type, size, sha256) VALUES ($1, $2, $3, $4, $5, $6)",
            vec![
                (&id).into(),
                (a.index as i64).into(),
                (&a.display_name).into(),
                (&a.content_type).into(),
                (a.size as i64).into(),
                (&a.sha256).into(),
            ],
        );
    }
    id
}

fn js<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("serialising plain data")
}

const FILING_SELECT: &str = "SELECT f.id AS fid, f.filed_at, f.note, u.email AS filed_by, \
    r.kind, r.reference, r.title, m.id AS mid, m.message_id, m.subject, m.from_json, m.to_json, m.cc_json, \
    m.sent_at, m.in_reply_to_json, m.references_json, m.raw_size, m.raw_sha256, m.gmail_message_id, m.gmail_thread_id \
    FROM filings f JOIN messages m ON m.id = f.message_id JOIN records r ON r.id = f.record_id \
    JOIN users u ON u.id = f.filed_by";

/// Visibility of `r` for `viewer` bound as `$n`; the system user (automatic filing) sees
/// what it filed.
fn visible_for(viewer: &str, n: usize) -> String {
    if viewer == access::SYSTEM_USER {
        format!("${n} = ${n}")
    } else {
        access::visible_sql("r", n)
    }
}

fn parse_json<T: serde::de::DeserializeOwned + Default>(s: &str) -> T {
    serde_json::from_str(s).unwrap_or_default()
}

/// A filing's view from its row: the message's attachments, and which of them the filing
/// kept, in one more query on `conn`.
async fn view_from_row(conn: &mut AnyConnection, r: &sqlx::any::AnyRow) -> AppResult<FilingView> {
    let fid: String = r.try_get("fid")?;
    let mid: String = r.try_get("mid")?;
    let rows = sqlx::query(
        "SELECT a.idx, a.display_name, a.content_type, a.size, a.sha256, k.idx AS kept \
         FROM message_attachments a \
         LEFT JOIN filing_attachments k ON k.filing_id = $1 AND k.idx = a.idx \
         WHERE a.message_id = $2 ORDER BY a.idx",
    )
    .bind(&fid)
    .bind(&mid)
    .fetch_all(&mut *conn)
    .await?;
    let attachments: Vec<AttachmentView> = rows
        .iter()
        .map(|a| AttachmentView {
            index: a.get(0),
            name: a.get(1),
            content_type: a.get(2),
            size: a.get(3),
            sha256: a.get(4),
        })
        .collect();
    let kept: Vec<bool> = rows
        .iter()
        .map(|a| a.get::<Option<i64>, _>(5).is_some())
        .collect();
    Ok(FilingView {
        target: TargetView {
            kind: r.try_get("kind")?,
            id: r.try_get("reference")?,
            title: r.try_get("title")?,
        },
        filed_by: r.try_get("filed_by")?,
        filed_at: r.try_get("filed_at")?,
        note: r.try_get("note")?,
        attachments: attachments
            .iter()
            .zip(&kept)
            .filter(|(_, kept)| **kept)
            .map(|(a, _)| a.clone())
            .collect(),
        message: MessageView {
            id: mid,
            message_id: r.try_get("message_id")?,
            subject: r.try_get("subject")?,
            from: parse_json(&r.try_get::<String, _>("from_json")?),
            to: parse_json(&r.try_get::<String, _>("to_json")?),
            cc: parse_json(&r.try_get::<String, _>("cc_json")?),
            date: r.try_get("sent_at")?,
            in_reply_to: parse_json(&r.try_get::<String, _>("in_reply_to_json")?),
            references: parse_json(&r.try_get::<String, _>("references_json")?),
            size: r.try_get("raw_size")?,
            sha256: r.try_get("raw_sha256")?,
            gmail_message_id: r.try_get("gmail_message_id")?,
            gmail_thread_id: r.try_get("gmail_thread_id")?,
            attachments,
        },
        id: fid,
        created: None,
    })
}

/// One filing, if `viewer` (a user id) may see its record; `None` otherwise, exactly as for
/// an unknown filing.
pub async fn load_filing(
    pool: &AnyPool,
    viewer: &str,
    filing_id: &str,
) -> AppResult<Option<FilingView>> {
    // One connection for both queries: one pool round, not two.
    let mut conn = pool.acquire().await?;
    let Some(row) = sqlx::query(&format!(
        "{FILING_SELECT} WHERE f.id = $1 AND {}",
        visible_for(viewer, 2)
    ))
    .bind(filing_id)
    .bind(viewer)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    view_from_row(&mut conn, &row).await.map(Some)
}

/// Filings of records `viewer` (a user id) may see, newest first, optionally of one record.
/// Which filings [`list_filings`] returns (besides visibility, which always applies).
#[derive(Debug, Clone, Default)]
pub struct FilingFilter<'a> {
    /// Only filings to this record.
    pub target: Option<(RecordKind, &'a str)>,
    /// Only filings made by this user (id).
    pub filed_by: Option<&'a str>,
    /// Only filings whose subject, sender, record reference or record title contains this
    /// text (case-insensitive).
    pub text: Option<&'a str>,
}

pub async fn list_filings(
    pool: &AnyPool,
    viewer: &str,
    filter: &FilingFilter<'_>,
    limit: i64,
    offset: i64,
) -> AppResult<Vec<FilingView>> {
    let mut binds: Vec<String> = vec![viewer.to_string()];
    let mut sql = format!("{FILING_SELECT} WHERE {}", visible_for(viewer, 1));
    if let Some((kind, reference)) = filter.target {
        binds.extend([kind.as_str().to_string(), reference.to_string()]);
        let n = binds.len();
        sql += &format!(" AND r.kind = ${} AND r.reference = ${n}", n - 1);
    }
    if let Some(user) = filter.filed_by {
        binds.push(user.to_string());
        sql += &format!(" AND f.filed_by = ${}", binds.len());
    }
    if let Some(text) = filter.text.filter(|t| !t.trim().is_empty()) {
        binds.push(crate::suggest::contains_pattern(text));
        let n = binds.len();
        sql += &format!(
            " AND (LOWER(COALESCE(m.subject, '')) LIKE ${n} ESCAPE '\\' \
             OR LOWER(COALESCE(m.from_addr, '')) LIKE ${n} ESCAPE '\\' \
             OR LOWER(r.reference) LIKE ${n} ESCAPE '\\' OR LOWER(r.title) LIKE ${n} ESCAPE '\\')"
        );
    }
    // `limit` and `offset` are numbers checked by the callers, never text.
    sql += &format!(" ORDER BY f.filed_at DESC, f.id LIMIT {limit} OFFSET {offset}");
    let mut q = sqlx::query(&sql);
    for b in &binds {
        q = q.bind(b);
    }
    let rows = q.fetch_all(pool).await?;
    let mut conn = pool.acquire().await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        out.push(view_from_row(&mut conn, r).await?);
    }
    Ok(out)
}

/// The raw-message blob id of a filing's message, if `viewer` may see the filing.
pub async fn raw_blob_of(
    pool: &AnyPool,
    viewer: &str,
    filing_id: &str,
) -> AppResult<Option<String>> {
    Ok(sqlx::query(&format!(
        "SELECT m.raw_sha256 FROM filings f JOIN messages m ON m.id = f.message_id \
         JOIN records r ON r.id = f.record_id WHERE f.id = $1 AND {}",
        visible_for(viewer, 2)
    ))
    .bind(filing_id)
    .bind(viewer)
    .fetch_optional(pool)
    .await?
    .map(|r| r.get(0)))
}

/// A kept attachment of a filing `viewer` may see: (blob id, display name).
pub async fn attachment_of(
    pool: &AnyPool,
    viewer: &str,
    filing_id: &str,
    index: i64,
) -> AppResult<Option<(String, String)>> {
    Ok(sqlx::query(&format!(
        "SELECT ma.sha256, ma.display_name FROM filing_attachments fa JOIN filings f ON f.id = fa.filing_id \
         JOIN records r ON r.id = f.record_id \
         JOIN message_attachments ma ON ma.message_id = f.message_id AND ma.idx = fa.idx \
         WHERE fa.filing_id = $1 AND fa.idx = $2 AND {}",
        visible_for(viewer, 3)
    ))
    .bind(filing_id)
    .bind(index)
    .bind(viewer)
    .fetch_optional(pool)
    .await?
    .map(|r| (r.get(0), r.get(1))))
}
