//! The flow of a filing (DESIGN.md), one step per function: check the request → authorise
//! the filer and the targets → parse (bounded and isolated: `mail::guard`) → route by the
//! firm's rules → store blobs durably → record message, filings and audit entries in one
//! transaction → answer.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::http::StatusCode;
use sqlx::Row;

use super::{
    dedup, insert_message, load_filing, reused_id_notice, AttachmentSelection, AutoFiled,
    FilingInput, FilingOutcome, FilingView, MessageView, TargetRef, TargetView, MAX_NOTE_CHARS,
    MAX_TARGETS,
};
use crate::access;
use crate::audit::{self, AuditEvent};
use crate::config::Limits;
use crate::directory::{self, Record, RecordKind, User};
use crate::error::{AppError, AppResult};
use crate::mail::{self, ParsedMessage};
use crate::sweep_epoch;
use crate::tenancy::script::Script;
use crate::tenancy::{db::Tx, group, Tenant};
use crate::time_fmt::now_rfc3339;

/// A request that passed the checks that need no I/O.
struct Checked {
    raw: Arc<Vec<u8>>,
    targets: BTreeSet<TargetRef>,
    attachments: AttachmentSelection,
    note: Option<String>,
    gmail_message_id: Option<String>,
    gmail_thread_id: Option<String>,
}

/// Records the firm's `auto_file` rules add, with the rule's name.
type AutoTargets = Vec<(Record, String)>;

/// What the transaction wrote: the user's filings (id, created) and the rules' filings.
struct Recorded {
    message_id: String,
    /// A different message took this one's Message-ID while it was being filed.
    message_id_taken: bool,
    filings: Vec<UserFiling>,
    auto: Vec<(String, Record, String, bool)>,
}

/// One of the user's filings in [`Recorded`].
struct UserFiling {
    id: String,
    /// Created by this call (false: it existed).
    created: bool,
    /// Its view, built from what was written when both the filing and its message are new
    /// ([`fresh_view`]); `None`: read back after the commit.
    view: Option<FilingView>,
}

/// Files one message to one or more records on behalf of `user`.
pub async fn file_message(
    tenant: &Arc<Tenant>,
    limits: &Limits,
    user: &User,
    input: FilingInput,
) -> AppResult<FilingOutcome> {
    let req = check_request(input)?;
    authorise_filer(tenant, user).await?;
    let records = authorise_targets(tenant, user, &req.targets).await?;
    let mut parsed = mail::parse_isolated(req.raw.clone(), limits.clone()).await?;
    let (message_id_reused, looked_stored) = dedup::resolve(tenant, &mut parsed).await?;
    let auto = route_by_rules(tenant, user, &parsed, &req.raw, &records).await?;
    let selected = select_attachments(&parsed, &req.attachments)?;
    let parsed = Arc::new(parsed);
    let (mut attempt, mut looked_new) = (1, !looked_stored);
    let recorded = loop {
        // This process's sweep waits on the lease from the first blob write to the commit;
        // other processes' sweeps are kept off through the epoch (`sweep_epoch`).
        let _lease = tenant.blob_lease.read().await;
        let stored = store_blobs(tenant, &parsed, &req.raw, &selected, looked_new).await?;
        match record(tenant, user, &req, &parsed, &records, &auto, &stored).await {
            // A sweep elsewhere may have deleted a blob just written: write them again.
            Err(e) if sweep_epoch::raced(&e) && attempt < MAX_SWEEP_RACES => attempt += 1,
            Err(e) if sweep_epoch::raced(&e) => return Err(sweep_epoch::in_progress()),
            // A message was stored under the key since the lookup: look again, in the
            // transaction this time (the raw blob is stored by now).
            Err(e) if looked_new && dedup::raced(&e) => looked_new = false,
            other => break other?,
        }
    };
    answer(tenant, user, recorded, &parsed, message_id_reused).await
}

/// Attempts a filing makes at its blobs and transaction while sweeps elsewhere race it.
const MAX_SWEEP_RACES: u32 = 3;

/// Targets, note and Gmail ids, checked before anything is read or written.
fn check_request(input: FilingInput) -> AppResult<Checked> {
    if input.targets.is_empty() {
        return Err(AppError::unprocessable(
            "no-targets",
            "`targets` must name at least one record",
        ));
    }
    if input.targets.len() > MAX_TARGETS {
        return Err(AppError::unprocessable(
            "too-many-targets",
            format!("at most {MAX_TARGETS} targets per filing"),
        ));
    }
    let note = input
        .note
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty());
    if let Some(n) = &note {
        if n.chars().count() > MAX_NOTE_CHARS
            || n.chars().any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            return Err(AppError::unprocessable(
                "invalid-note",
                format!("a note is at most {MAX_NOTE_CHARS} characters of text"),
            ));
        }
    }
    Ok(Checked {
        raw: Arc::new(input.raw),
        targets: input.targets.into_iter().collect(),
        attachments: input.attachments,
        note,
        gmail_message_id: gmail_id("gmail_message_id", input.gmail_message_id)?,
        gmail_thread_id: gmail_id("gmail_thread_id", input.gmail_thread_id)?,
    })
}

/// Gmail ids are kept in API form (hex) so thread suggestions match however they came.
fn gmail_id(name: &str, v: Option<String>) -> AppResult<Option<String>> {
    v.map(|v| {
        crate::gmail::normalise_id(&v).ok_or_else(|| {
            AppError::unprocessable(
                "invalid-gmail-id",
                format!("`{name}` is not a Gmail id (hex, or msg-f:/thread-f: decimal)"),
            )
        })
    })
    .transpose()
}

/// A role that may not file is refused, and the refusal audited.
async fn authorise_filer(tenant: &Tenant, user: &User) -> AppResult<()> {
    if user.role.can_file() {
        return Ok(());
    }
    audit::record(
        &tenant.db,
        &[AuditEvent::new(&user.email, "filing.denied", &user.id)
            .detail(serde_json::json!({"reason": "role cannot file", "role": user.role.as_str()}))],
    )
    .await?;
    Err(AppError::forbidden(format!(
        "your role ({}) may not file messages",
        user.role.as_str()
    )))
}

/// The records named, each open and visible to `user`. Unknown records, other tenants'
/// and those behind the user's ethical wall all answer the same 404, so none leaks.
async fn authorise_targets(
    tenant: &Tenant,
    user: &User,
    wanted: &BTreeSet<TargetRef>,
) -> AppResult<Vec<Record>> {
    let pool = &tenant.db;
    let mut records = Vec::new();
    for t in wanted {
        let kind = t.kind.parse::<RecordKind>().map_err(|_| {
            AppError::unprocessable(
                "invalid-target",
                format!(
                    "a target's kind is matter, case or contract, not {:?}",
                    t.kind
                ),
            )
        })?;
        let rec = directory::find_record_seen_by(pool, kind, t.id.trim(), &user.id).await?;
        let rec = match rec {
            Some((r, visible)) if visible || user.id == access::SYSTEM_USER => Some(r),
            _ => None,
        };
        let Some(rec) = rec else {
            return Err(AppError::not_found(format!("no record {t}")));
        };
        if rec.status != "open" {
            return Err(AppError::new(
                StatusCode::CONFLICT,
                "record-closed",
                format!("record {t} is closed"),
            ));
        }
        // Two spellings of one record (" M-1" and "M-1") file once.
        if !records.iter().any(|r: &Record| r.id == rec.id) {
            records.push(rec);
        }
    }
    Ok(records)
}

/// The firm's `auto_file` rules add their open targets (filed as the system user); a
/// `never_auto_file` rule suppresses them. The system user itself never triggers rules.
async fn route_by_rules(
    tenant: &Tenant,
    user: &User,
    parsed: &ParsedMessage,
    raw: &[u8],
    records: &[Record],
) -> AppResult<AutoTargets> {
    let mut auto: AutoTargets = Vec::new();
    if user.id == access::SYSTEM_USER {
        return Ok(auto);
    }
    let decision = crate::rules::evaluate(&tenant.db, parsed, raw).await?;
    for routed in decision.auto_file {
        let id = &routed.record.id;
        if records.iter().any(|r| &r.id == id) || auto.iter().any(|(r, _)| &r.id == id) {
            continue;
        }
        let kind: RecordKind = routed
            .record
            .kind
            .parse()
            .map_err(|e: String| AppError::internal(anyhow::anyhow!(e)))?;
        let rec = directory::find_record(&tenant.db, kind, &routed.record.reference).await?;
        if let Some(rec) = rec.filter(|r| r.status == "open") {
            auto.push((rec, routed.rule));
        }
    }
    Ok(auto)
}

/// The attachment indices to keep, each one that exists.
fn select_attachments(
    parsed: &ParsedMessage,
    selection: &AttachmentSelection,
) -> AppResult<Vec<usize>> {
    let count = parsed.attachments.len();
    match selection {
        AttachmentSelection::All => Ok((0..count).collect()),
        AttachmentSelection::Only(list) => {
            let set: BTreeSet<usize> = list.iter().copied().collect();
            if let Some(bad) = set.iter().find(|i| **i >= count) {
                return Err(AppError::unprocessable(
                    "invalid-attachment",
                    format!("attachment {bad} does not exist; the message has {count}"),
                ));
            }
            Ok(set.into_iter().collect())
        }
    }
}

/// The blobs a filing stored before its transaction.
struct Stored {
    /// The sweep epoch read before the first write, checked again in the transaction.
    epoch: sweep_epoch::Epoch,
    /// The selected attachments (indices into the parsed message's).
    selected: Vec<usize>,
    /// Whether the raw message was stored too (it looked new).
    raw: bool,
}

/// Blobs first, durably (written, fsynced, renamed, directory fsynced). Content-addressed,
/// so a retry or a concurrent copy is harmless. The raw message only when `store_raw` (it
/// looked new to [`dedup::resolve`]; if it turns out new after all, the transaction stores
/// it, see [`Job::store_raw`]). `Stored::raw` then tells the transaction that the message
/// looked new ([`Job::message_row`]).
async fn store_blobs(
    tenant: &Tenant,
    parsed: &Arc<ParsedMessage>,
    raw: &Arc<Vec<u8>>,
    selected: &[usize],
    store_raw: bool,
) -> AppResult<Stored> {
    let epoch = sweep_epoch::settled(tenant).await?;
    let selected = selected.to_vec();
    let (blobs, parsed, raw) = (tenant.blobs.clone(), parsed.clone(), raw.clone());
    tokio::task::spawn_blocking(move || -> Result<Stored, crate::storage::BlobError> {
        if store_raw {
            blobs.put(&raw)?;
        }
        for i in &selected {
            blobs.put(&parsed.attachments[*i].bytes(&raw))?;
        }
        Ok(Stored {
            epoch,
            selected,
            raw: store_raw,
        })
    })
    .await
    .map_err(|e| AppError::internal(anyhow::anyhow!("blob task failed: {e}")))?
    .map_err(|e| AppError::storage(e, "storing blobs"))
}

/// Everything the transaction writes for one filing, owned, so that whichever filing's task
/// runs the shared transaction ([`crate::tenancy::group`]) can write it.
struct Job {
    blobs: crate::storage::TenantBlobs,
    user: User,
    /// The system user, who files for the firm's rules (only when rules add targets).
    system: Option<User>,
    note: Option<String>,
    raw: Arc<Vec<u8>>,
    gmail: (Option<String>, Option<String>),
    parsed: Arc<ParsedMessage>,
    records: Vec<Record>,
    auto: AutoTargets,
    selected: Vec<usize>,
    /// The raw message's blob was stored before the transaction.
    raw_stored: bool,
    epoch: sweep_epoch::Epoch,
}

/// The message (once), a filing per target (or the existing one), the kept attachments and
/// an audit entry for each, in a transaction shared with concurrent filings (group commit);
/// answered once it has committed.
async fn record(
    tenant: &Arc<Tenant>,
    user: &User,
    req: &Checked,
    parsed: &Arc<ParsedMessage>,
    records: &[Record],
    auto: &AutoTargets,
    stored: &Stored,
) -> AppResult<Recorded> {
    // Looked up before the transaction: inside it, a second pool connection could wait on
    // the writers queued behind this one's audit lock.
    let system = match auto.is_empty() {
        true => None,
        false => directory::user_by_id(&tenant.db, access::SYSTEM_USER).await?,
    };
    let job = Job {
        blobs: tenant.blobs.clone(),
        user: user.clone(),
        system,
        note: req.note.clone(),
        raw: req.raw.clone(),
        gmail: (req.gmail_message_id.clone(), req.gmail_thread_id.clone()),
        parsed: parsed.clone(),
        records: records.to_vec(),
        auto: auto.clone(),
        selected: stored.selected.clone(),
        raw_stored: stored.raw,
        epoch: stored.epoch,
    };
    tenant
        .group_commit::<Recorded>(Box::new(move |tx, batch| {
            Box::pin(async move { Ok(Box::new(job.write(tx, batch).await?) as group::Answer) })
        }))
        .await
}

impl Job {
    async fn write(&self, tx: &mut Tx, batch: &mut group::Batch) -> AppResult<Recorded> {
        sweep_epoch::check(batch.sweep_epoch, self.epoch)?;
        let now = now_rfc3339();
        let (row, message_id_taken) = self.message_row(tx, &mut batch.writes, &now).await?;
        // A message inserted just now keeps every selected attachment and has no filings.
        let kept = match row.new {
            true => self.selected.iter().map(|i| *i as i64).collect(),
            false => kept_attachments(tx, &row.id, &self.parsed, &self.selected).await?,
        };
        let (gmail_message, gmail_thread) = self.gmail.clone();
        let message_view = row
            .new
            .then(|| MessageView::inserted(&row.id, &self.parsed, gmail_message, gmail_thread));
        let mut out = Recorded {
            message_id: row.id.clone(),
            message_id_taken,
            filings: Vec::new(),
            auto: Vec::new(),
        };
        let everyone = self
            .records
            .iter()
            .map(|r| (r, None))
            .chain(self.auto.iter().map(|(r, rule)| (r, Some(rule.as_str()))));
        for (rec, rule) in everyone {
            let filer = match (rule, &self.system) {
                (Some(_), None) => continue,
                (Some(rule), Some(sys)) => Filer {
                    user: sys,
                    note: Some(format!("filed automatically by rule “{rule}”")),
                    rule: Some(rule),
                    on_behalf_of: Some(&self.user.email),
                    at: &now,
                },
                (None, _) => Filer {
                    user: &self.user,
                    note: self.note.clone(),
                    rule: None,
                    on_behalf_of: None,
                    at: &now,
                },
            };
            let (fid, created) =
                file_one(tx, batch, &filer, rec, &row, &self.parsed, &kept).await?;
            match rule {
                Some(rule) => out.auto.push((fid, rec.clone(), rule.to_string(), created)),
                None => out.filings.push(UserFiling {
                    view: fresh_view(&fid, created, rec, &filer, message_view.as_ref(), &kept),
                    id: fid,
                    created,
                }),
            }
        }
        Ok(out)
    }

    /// The stored message for the parsed one (see [`dedup`]), inserted (through `writes`)
    /// when new; and whether a different message took its Message-ID since
    /// [`dedup::resolve`] looked.
    async fn message_row(
        &self,
        tx: &mut Tx,
        writes: &mut Script,
        now: &str,
    ) -> AppResult<(MessageRow, bool)> {
        let parsed = &self.parsed;
        let (key, stored) = match self.raw_stored {
            // It looked new: inserted without looking again. A message stored under the key
            // since then fails the INSERT on the key's UNIQUE constraint, and `file_message`
            // tries again with `raw_stored` false (`dedup::raced`).
            true => (parsed.dedup_key.clone(), None),
            false => dedup::stored_in_tx(tx, parsed).await?,
        };
        let taken = key != parsed.dedup_key;
        if let Some(id) = stored {
            return Ok((MessageRow { id, new: false }, taken));
        }
        if !self.raw_stored {
            self.store_raw().await?;
        }
        let (gmail_message, gmail_thread) = (self.gmail.0.as_deref(), self.gmail.1.as_deref());
        let id = insert_message(writes, parsed, &key, gmail_message, gmail_thread, now);
        Ok((MessageRow { id, new: true }, taken))
    }
}

impl Job {
    /// The raw blob, for a message that looked stored when its blobs were written and is new
    /// now (a concurrent first filing of it rolled back): stored unless it is there.
    async fn store_raw(&self) -> AppResult<()> {
        let (blobs, raw) = (self.blobs.clone(), self.raw.clone());
        let id = self.parsed.raw_sha256.clone();
        tokio::task::spawn_blocking(move || match blobs.exists(&id)? {
            true => Ok(()),
            false => blobs.put(&raw).map(drop),
        })
        .await
        .map_err(|e| AppError::internal(anyhow::anyhow!("blob task failed: {e}")))?
        .map_err(|e| AppError::storage(e, "storing the raw blob"))
    }
}

/// Which selected attachment indices the stored message has with the same bytes.
async fn kept_attachments(
    tx: &mut Tx,
    message_id: &str,
    parsed: &ParsedMessage,
    selected: &[usize],
) -> AppResult<Vec<i64>> {
    let stored = sqlx::query("SELECT idx, sha256 FROM message_attachments WHERE message_id = $1")
        .bind(message_id)
        .fetch_all(&mut **tx)
        .await?;
    Ok(selected
        .iter()
        .filter(|i| {
            stored.iter().any(|r| {
                r.get::<i64, _>(0) == **i as i64
                    && r.get::<String, _>(1) == parsed.attachments[**i].sha256
            })
        })
        .map(|i| *i as i64)
        .collect())
}

/// Who files to one record: the user, or the system user for a rule.
struct Filer<'a> {
    user: &'a User,
    note: Option<String>,
    rule: Option<&'a str>,
    on_behalf_of: Option<&'a str>,
    /// When (RFC 3339, UTC).
    at: &'a str,
}

/// The stored message a filing refers to.
struct MessageRow {
    id: String,
    /// Inserted by this transaction: it has no filings yet.
    new: bool,
}

/// One record's filing of the message: the existing one (audited as a duplicate) or a new
/// one with its kept attachments. Returns (filing id, created).
async fn file_one(
    tx: &mut Tx,
    batch: &mut group::Batch,
    filer: &Filer<'_>,
    rec: &Record,
    message: &MessageRow,
    parsed: &ParsedMessage,
    kept: &[i64],
) -> AppResult<(String, bool)> {
    let target = format!("{}:{}", rec.kind, rec.reference);
    let message_id = message.id.as_str();
    let existing = match message.new {
        true => None,
        false => {
            sqlx::query("SELECT id FROM filings WHERE message_id = $1 AND record_id = $2")
                .bind(message_id)
                .bind(&rec.id)
                .fetch_optional(&mut **tx)
                .await?
        }
    };
    if let Some(row) = existing {
        let fid: String = row.get(0);
        let detail =
            serde_json::json!({"target": target, "message": message_id, "rule": filer.rule});
        let event = AuditEvent::new(&filer.user.email, "filing.duplicate", &fid).detail(detail);
        batch.append_audit(&event);
        return Ok((fid, false));
    }
    let fid = uuid::Uuid::new_v4().simple().to_string();
    batch.writes.push(
        "INSERT INTO filings (id, message_id, record_id, filed_by, filed_at, note) VALUES ($1, $2, $3, $4, $5, $6)",
        vec![
            (&fid).into(),
            message_id.into(),
            (&rec.id).into(),
            (&filer.user.id).into(),
            filer.at.into(),
            filer.note.clone().into(),
        ],
    );
    for i in kept {
        batch.writes.push(
            "INSERT INTO filing_attachments (filing_id, idx) VALUES ($1, $2)",
            vec![(&fid).into(), (*i).into()],
        );
    }
    let detail = serde_json::json!({
        "target": target,
        "message": message_id,
        "raw_sha256": parsed.raw_sha256,
        "attachments": kept,
        "rule": filer.rule,
        "on_behalf_of": filer.on_behalf_of,
    });
    let event = AuditEvent::new(&filer.user.email, "filing.created", &fid).detail(detail);
    batch.append_audit(&event);
    Ok((fid, true))
}

/// The view of a filing when this transaction created it with a message it inserted: what
/// [`load_filing`] reads back after the commit, built without the two queries (test
/// `filings::the_answer_to_a_new_filing_is_what_reads_back`). `None` otherwise.
fn fresh_view(
    fid: &str,
    created: bool,
    rec: &Record,
    filer: &Filer<'_>,
    message: Option<&MessageView>,
    kept: &[i64],
) -> Option<FilingView> {
    let message = message.filter(|_| created)?;
    Some(FilingView {
        id: fid.to_string(),
        target: TargetView {
            kind: rec.kind.as_str().to_string(),
            id: rec.reference.clone(),
            title: rec.title.clone(),
        },
        filed_by: filer.user.email.clone(),
        filed_at: filer.at.to_string(),
        note: filer.note.clone(),
        attachments: (message.attachments.iter())
            .filter(|a| kept.contains(&a.index))
            .cloned()
            .collect(),
        message: message.clone(),
        created: None,
    })
}

/// The answer: each of the user's filings (built or read back), and the rules' filings.
async fn answer(
    tenant: &Tenant,
    user: &User,
    recorded: Recorded,
    parsed: &ParsedMessage,
    message_id_reused: bool,
) -> AppResult<FilingOutcome> {
    let mut filings = Vec::new();
    for f in recorded.filings {
        let mut view = match f.view {
            Some(view) => view,
            None => load_filing(&tenant.db, &user.id, &f.id)
                .await?
                .ok_or_else(|| AppError::internal(anyhow::anyhow!("filing vanished")))?,
        };
        view.created = Some(f.created);
        filings.push(view);
    }
    let message_id_reused = message_id_reused || recorded.message_id_taken;
    tracing::info!(tenant = %tenant.id, user = %user.id, message = %recorded.message_id,
        created = filings.iter().filter(|f| f.created == Some(true)).count(), "filed");
    let auto_filed = recorded
        .auto
        .into_iter()
        .map(|(filing_id, rec, rule, created)| AutoFiled {
            filing_id,
            target: TargetView {
                kind: rec.kind.as_str().to_string(),
                id: rec.reference.clone(),
                title: rec.title.clone(),
            },
            rule,
            created,
        })
        .collect();
    Ok(FilingOutcome {
        filings,
        auto_filed,
        notice: message_id_reused.then(|| reused_id_notice(parsed.message_id.as_deref())),
        message_id_reused,
    })
}
