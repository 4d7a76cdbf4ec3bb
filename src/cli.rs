//! The `docket` command line: server modes and operator commands.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use clap::{Args, Parser, Subcommand};

use crate::app::{self, Application, Mode};
use crate::audit::{self, ChainStatus};
use crate::config::Config;
use crate::dev::{self, TokenIssuer, DEV_CLIENT_ID, DEV_ISSUER};
use crate::directory::{self, RecordKind, Role};
use crate::filing::{self, AttachmentSelection, FilingInput, TargetRef};
use crate::tenancy::Catalog;

mod directory_cmd;

#[derive(Parser, Debug)]
#[command(
    name = "docket",
    version,
    about = "File Gmail messages into a firm's matters, cases and contracts."
)]
pub struct Cli {
    /// TOML config file; `DOCKET_…` environment variables override it.
    #[arg(long, global = true, env = "DOCKET_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the production server.
    ///
    /// Required settings (in the `--config` file, or as environment variables):
    ///   master_key or master_key_file   DOCKET_MASTER_KEY / DOCKET_MASTER_KEY_FILE: 32 bytes,
    ///                                   hex or base64; it wraps every tenant's data key
    ///   google.client_ids               DOCKET_GOOGLE__CLIENT_IDS: the OAuth client id(s)
    ///                                   the add-on's ID tokens are issued for
    ///
    /// For the Gmail add-on's HTTP runtime, also addon.public_url, addon.service_account and
    /// addon.oauth_client_id (DOCKET_ADDON__…). Everything else has a default: SQLite and
    /// blobs under data_dir (DOCKET_DATA_DIR, default ./data), listen 127.0.0.1:8080. The
    /// README's configuration section lists every setting.
    #[command(verbatim_doc_comment)]
    Serve,
    /// Run a local instance with a demo tenant and a dev identity issuer (loopback only).
    Dev {
        #[command(subcommand)]
        action: Option<DevAction>,
    },
    /// Create or upgrade the catalogue and every tenant database.
    Migrate,
    /// Tenants (firms).
    Tenant {
        #[command(subcommand)]
        action: TenantAction,
    },
    /// A tenant's record catalogue.
    Record {
        #[command(subcommand)]
        action: RecordAction,
    },
    /// A tenant's users.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// A tenant's groups of users (record teams and walls name groups).
    Group {
        #[command(subcommand)]
        action: GroupAction,
    },
    /// A tenant's audit chain.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// File an .eml from a script, as a registered user.
    File(FileArgs),
    /// Backups of tenants: take them, check them, see their state.
    Backup {
        #[command(subcommand)]
        action: BackupAction,
    },
    /// Retention: list the records due for disposition (an admin approves the list in the
    /// console before anything is deleted).
    Retention {
        #[command(subcommand)]
        action: RetentionAction,
    },
    /// Personal data requests (GDPR) about one email address: export, erasure.
    Subject {
        #[command(subcommand)]
        action: SubjectAction,
    },
    /// Legal holds: while one is in force, nothing under it is deleted.
    Hold {
        #[command(subcommand)]
        action: HoldAction,
    },
    /// Housekeeping (`docket serve` also runs it on a schedule).
    Maintenance {
        #[command(subcommand)]
        action: MaintenanceAction,
    },
    /// Measure docket itself (see the README's "How suggestions are ranked").
    Eval {
        #[command(subcommand)]
        action: EvalAction,
    },
}

#[derive(Subcommand, Debug)]
pub enum EvalAction {
    /// Replay a firm's mail history in time order — ask for suggestions as the filer, then
    /// file to the true record — and print top-1, top-3, "no suggestion" and the confidence
    /// calibration by category. Works in a throw-away SQLite tenant; touches no data dir.
    Suggestions {
        /// Seed of the synthetic firm (one seed, one firm); ignored with --dir.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Synthetic firm: number of records (at least 10: a firm of a few clients).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(10..=100_000))]
        records: u64,
        /// Synthetic firm: number of messages.
        #[arg(long, default_value_t = 1500, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        messages: u64,
        /// Replay a real history instead: DIR holds records.csv, truth.csv and the .eml
        /// files (see the README).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        /// With --dir: the firm's own mail domain (default: the first filer's).
        #[arg(long)]
        firm_domain: Option<String>,
        /// Also fit the confidence curve to this replay and print its coefficients.
        #[arg(long)]
        fit: bool,
        /// Print the first N messages whose true record was not suggested first.
        #[arg(long, default_value_t = 0)]
        show_misses: usize,
    },
}

#[derive(Subcommand, Debug)]
pub enum BackupAction {
    /// Back up one tenant, or every active one, while docket serves: into
    /// `DIR/<tenant id>/<backup id>/`, copying only blobs not already in `DIR/<tenant id>/blobs`.
    Create {
        /// Tenant id, name or domain.
        #[arg(long, required_unless_present = "all", conflicts_with = "all")]
        tenant: Option<String>,
        /// Every active tenant.
        #[arg(long)]
        all: bool,
        /// The backup directory.
        #[arg(long)]
        to: PathBuf,
    },
    /// Restore backups into a scratch place and check everything; exit 0 only if all pass,
    /// otherwise name the first failure. PATH: one backup, a tenant's backup directory (its
    /// newest backup) or a whole backup directory (each tenant's newest).
    Verify {
        /// A backup, a tenant's backup directory or a whole backup directory.
        path: PathBuf,
    },
    /// Restore a backup after checking it, into an empty place only: in place (the tenant
    /// suspended, its database gone), or `--as NAME` into a new tenant (new id, no domains).
    /// PATH: one backup, or a tenant's backup directory (its newest backup).
    Restore {
        /// A backup, or a tenant's backup directory (its newest backup).
        path: PathBuf,
        /// The tenant the backup is of (id, name or domain).
        #[arg(long)]
        tenant: String,
        /// Restore into a new tenant of this name instead.
        #[arg(long = "as")]
        as_name: Option<String>,
    },
    /// Each tenant's last successful backup and check, and whether the latest failed.
    Status,
    /// Copy a backup directory to the object store (`storage.backend = "s3"`), under
    /// `<prefix>/backups/`: only what the bucket lacks; each backup's manifest last.
    Push {
        /// The local backup directory (`backup create --to`).
        dir: PathBuf,
        /// Only this tenant's backups (id, name or domain).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Copy the object store's backups into a directory (only what it lacks), for `verify`
    /// or `restore`.
    Pull {
        /// The local directory to copy into.
        #[arg(long)]
        to: PathBuf,
        /// Only this tenant's backups (id, name or domain).
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum MaintenanceAction {
    /// Remove half-written `.tmp-*` blob files and blobs no filing refers to, older than the
    /// grace period, in every active tenant; prints the counts.
    Sweep {
        /// Only files older than this many minutes (at least 5); default
        /// `maintenance.sweep_grace_minutes`.
        #[arg(long)]
        grace_minutes: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
pub enum DevAction {
    /// Print an ID token from the dev issuer (same data dir as the dev instance).
    Token {
        /// The signed-in user's address (the `email` claim; `hd` is its domain).
        #[arg(long)]
        email: String,
        /// `aud` claim; default the configured (or dev) client id.
        #[arg(long)]
        audience: Option<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
}

#[derive(Subcommand, Debug)]
pub enum TenantAction {
    /// Create a tenant (a firm): its own database, data key and blob directory.
    Create {
        /// The firm's name, as its people will see it.
        #[arg(long)]
        name: String,
        /// Google Workspace domain (the `hd` claim); repeatable.
        #[arg(long = "domain", required = true)]
        domains: Vec<String>,
    },
    /// Every tenant: id, name, status, domains (and purge date once terminated).
    List,
    /// Suspend a tenant: every request of its users is refused (within 5 s on every docket
    /// process) until it is resumed; its data is kept. Needed before a restore in place.
    Suspend {
        /// The tenant: its id, name or one of its domains.
        #[arg(long)]
        tenant: String,
    },
    /// Resume a suspended tenant.
    Resume {
        /// The tenant: its id, name or one of its domains.
        #[arg(long)]
        tenant: String,
    },
    /// Terminate a tenant (the end of its contract): every session ends, every token is
    /// revoked, no one can use it again, and its data is purged `admin.retention_days` (90)
    /// days later. Audited. Cannot be undone.
    Terminate {
        /// The tenant: its id, name or one of its domains.
        #[arg(long)]
        tenant: String,
        /// The tenant's name, typed exactly, to confirm.
        #[arg(long)]
        confirm_name: String,
    },
    /// Purge every terminated tenant whose purge date has come, and finish purges that were
    /// interrupted (`docket serve` does this every `maintenance.purge_interval_minutes`).
    PurgeDue,
    /// The tombstones of purged tenants: when each was terminated, by whom, when purged, and
    /// what was deleted.
    Purged,
    /// Set the tenant's Google service-account key (domain-wide delegation, scope
    /// gmail.readonly) used to file whole threads; `--clear` removes it.
    SetDelegation {
        /// The tenant: its id, name or one of its domains.
        #[arg(long)]
        tenant: String,
        /// The service account's JSON key file.
        #[arg(long, required_unless_present = "clear")]
        key_file: Option<PathBuf>,
        /// Remove the key: whole threads can no longer be filed.
        #[arg(long)]
        clear: bool,
    },
    /// Set the regular expression that finds record references in subjects.
    SetSubjectPattern {
        /// The tenant: its id, name or one of its domains.
        #[arg(long)]
        tenant: String,
        /// The regular expression; its first capture group (or whole match) is the
        /// reference, e.g. `\b([MCK]-\d{4}-\d{3})\b`.
        #[arg(long)]
        pattern: String,
    },
    /// Set the firm's time zone (an IANA name such as Europe/London): dates on the console's
    /// pages are shown in it. Audited.
    SetTimeZone {
        /// The tenant: its id, name or one of its domains.
        #[arg(long)]
        tenant: String,
        /// The time zone, e.g. Europe/London, America/New_York, UTC.
        #[arg(long)]
        time_zone: String,
    },
    /// Map one address (e.g. an account without a Workspace domain) to a tenant.
    MapAddress {
        /// The tenant: its id, name or one of its domains.
        #[arg(long)]
        tenant: String,
        /// The address that signs in to the tenant.
        #[arg(long)]
        email: String,
    },
    /// Remove an address mapping (refused while an active user signs in with it).
    UnmapAddress {
        /// The tenant: its id, name or one of its domains.
        #[arg(long)]
        tenant: String,
        /// The mapped address.
        #[arg(long)]
        email: String,
    },
    /// Add a sign-in domain to a tenant (refused when any tenant has it).
    AddDomain {
        /// The tenant: its id, name or one of its domains.
        #[arg(long)]
        tenant: String,
        /// The domain, e.g. example-law.com.
        #[arg(long)]
        domain: String,
    },
    /// Remove a sign-in domain (refused while active users sign in through it).
    RemoveDomain {
        /// The tenant: its id, name or one of its domains.
        #[arg(long)]
        tenant: String,
        /// The domain.
        #[arg(long)]
        domain: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum RecordAction {
    /// Add a record (matter, case or contract) to the catalogue.
    Add {
        /// The tenant: its id, name or one of its domains.
        #[arg(long)]
        tenant: String,
        /// matter, case or contract.
        #[arg(long)]
        kind: String,
        /// e.g. M-2024-017.
        #[arg(long)]
        reference: String,
        /// What the firm calls it, e.g. "Northwind lease renewal".
        #[arg(long)]
        title: String,
        /// The client's name.
        #[arg(long, default_value = "")]
        client: String,
        /// Contact address or domain; repeatable.
        #[arg(long = "contact")]
        contacts: Vec<String>,
    },
    /// Every record: kind:reference, title, client, status, contacts (tab-separated).
    List {
        /// The tenant: its id, name or one of its domains.
        #[arg(long)]
        tenant: String,
    },
    /// Change a record's title, client or contacts (only what is given); audited.
    Edit {
        /// The tenant: its id, name or one of its domains.
        #[arg(long)]
        tenant: String,
        /// The record as kind:reference, e.g. matter:M-2024-017.
        record: String,
        /// The new title.
        #[arg(long)]
        title: Option<String>,
        /// The new client name.
        #[arg(long)]
        client: Option<String>,
        /// The complete new list of contacts (addresses or domains); repeatable.
        #[arg(long = "contact")]
        contacts: Option<Vec<String>>,
        /// Remove every contact.
        #[arg(long, conflicts_with = "contacts")]
        no_contacts: bool,
    },
    /// Close a record: its filings stay, nobody can file to it until it is reopened.
    Close {
        /// The tenant: its id, name or one of its domains.
        #[arg(long)]
        tenant: String,
        /// The record as kind:reference, e.g. matter:M-2024-017.
        record: String,
    },
    /// Reopen a closed record.
    Reopen {
        /// The tenant: its id, name or one of its domains.
        #[arg(long)]
        tenant: String,
        /// The record as kind:reference, e.g. matter:M-2024-017.
        record: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum GroupAction {
    /// Every group with its members' addresses.
    List {
        /// The tenant: its id, name or one of its domains.
        #[arg(long)]
        tenant: String,
    },
    /// Create a group, with members if given.
    Add {
        /// The tenant: its id, name or one of its domains.
        #[arg(long)]
        tenant: String,
        /// The group's name (unique in the firm).
        name: String,
        /// A member's email address; repeatable.
        #[arg(long = "member")]
        members: Vec<String>,
    },
    /// Rename a group.
    Rename {
        /// The tenant: its id, name or one of its domains.
        #[arg(long)]
        tenant: String,
        /// The group's current name.
        name: String,
        /// Its new name.
        new_name: String,
    },
    /// Add users (by email address) to a group; those already in it are left as they are.
    AddMember {
        /// The tenant: its id, name or one of its domains.
        #[arg(long)]
        tenant: String,
        /// The group's name.
        group: String,
        /// The users' email addresses.
        #[arg(required = true)]
        emails: Vec<String>,
    },
    /// Remove users (by email address) from a group.
    RemoveMember {
        /// The tenant: its id, name or one of its domains.
        #[arg(long)]
        tenant: String,
        /// The group's name.
        group: String,
        /// The users' email addresses.
        #[arg(required = true)]
        emails: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserAction {
    /// Add a user; their address must be able to sign in to the firm (one of its domains,
    /// or mapped to it with `tenant map-address`).
    Add {
        /// The tenant: its id, name or one of its domains.
        #[arg(long)]
        tenant: String,
        /// The user's Google account email.
        #[arg(long)]
        email: String,
        /// admin, filer or viewer.
        #[arg(long, default_value = "filer")]
        role: String,
        /// Display name.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Every user: email, role, status, name (tab-separated).
    List {
        /// The tenant: its id, name or one of its domains.
        #[arg(long)]
        tenant: String,
    },
    /// Set a user's console password (read from standard input, or from the environment
    /// variable DOCKET_NEW_PASSWORD); ends their sessions. Exit 2 when the policy refuses it.
    SetPassword {
        /// The tenant: its id, name or one of its domains.
        #[arg(long)]
        tenant: String,
        /// The user's email address.
        email: String,
    },
    /// Change a user's role; the firm's last active admin stays an admin.
    SetRole {
        /// The tenant: its id, name or one of its domains.
        #[arg(long)]
        tenant: String,
        /// The user's email address.
        email: String,
        /// admin, filer or viewer.
        role: String,
    },
    /// Reactivate a suspended user (e.g. after three failed sign-ins).
    Reactivate {
        /// The tenant: its id, name or one of its domains.
        #[arg(long)]
        tenant: String,
        /// The user's email address.
        email: String,
    },
    /// Issue a one-time set-password link for a user (printed with its expiry).
    ResetLink {
        /// The tenant: its id, name or one of its domains.
        #[arg(long)]
        tenant: String,
        /// The user's email address.
        email: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum RetentionAction {
    /// Make the disposition list of every active tenant, or of one (`docket serve` does it
    /// daily): the closed records whose retention has run out and are not on hold.
    Evaluate {
        /// The tenant: its id, name or one of its domains.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// The retention policies and the disposition lists of a tenant.
    Status {
        /// The tenant: its id, name or one of its domains.
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum SubjectAction {
    /// Write the person's access export (a zip: manifest.json and the messages as .eml).
    Export {
        /// The tenant: its id, name or one of its domains.
        #[arg(long)]
        tenant: String,
        /// The person's email address.
        #[arg(long)]
        email: String,
        /// Where to write the zip.
        #[arg(long)]
        to: PathBuf,
    },
    /// Erase the person's personal data, except filings under a legal hold (see the README).
    Erase {
        /// The tenant: its id, name or one of its domains.
        #[arg(long)]
        tenant: String,
        /// The person's email address.
        #[arg(long)]
        email: String,
        /// The firm's reference for the request (kept in the audit entry).
        #[arg(long, default_value = "")]
        request: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum HoldAction {
    /// The holds in force (with `--all`, the released ones too).
    List {
        /// The tenant: its id, name or one of its domains.
        #[arg(long)]
        tenant: String,
        /// The released holds too.
        #[arg(long)]
        all: bool,
    },
    /// Place a hold on a record (`kind:reference`) or on a person (an email address).
    Place {
        /// The tenant: its id, name or one of its domains.
        #[arg(long)]
        tenant: String,
        /// The record held, as kind:reference (e.g. matter:M-2024-017).
        #[arg(long, required_unless_present = "email", conflicts_with = "email")]
        record: Option<String>,
        /// The person held: their filings, as sender or recipient.
        #[arg(long)]
        email: Option<String>,
        /// Why (the matter or investigation it is for); kept with the hold.
        #[arg(long)]
        reason: String,
    },
    /// Release a hold (by its id, from `docket hold list`).
    Release {
        /// The tenant: its id, name or one of its domains.
        #[arg(long)]
        tenant: String,
        /// The hold's id.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditAction {
    /// Exit 0 only if the whole chain is intact; otherwise name the first bad entry.
    Verify {
        /// The tenant: its id, name or one of its domains.
        #[arg(long)]
        tenant: String,
    },
    /// Show the newest entries.
    List {
        /// The tenant: its id, name or one of its domains.
        #[arg(long)]
        tenant: String,
        /// How many entries, newest first.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

#[derive(Args, Debug)]
pub struct FileArgs {
    /// The tenant: its id, name or one of its domains.
    #[arg(long)]
    pub tenant: String,
    /// Email of the filing user.
    #[arg(long)]
    pub user: String,
    /// `kind:reference`, repeatable (e.g. matter:M-2024-017).
    #[arg(long = "target", required = true)]
    pub targets: Vec<String>,
    /// `all` or comma-separated attachment indices (0-based).
    #[arg(long, default_value = "all")]
    pub attachments: String,
    /// A note kept with the filing.
    #[arg(long)]
    pub note: Option<String>,
    /// The message (.eml); `-` reads standard input.
    pub message: PathBuf,
}

/// Where `user set-password` may take the new password from instead of standard input.
const NEW_PASSWORD_VAR: &str = "DOCKET_NEW_PASSWORD";

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Not a configuration setting: taken out before the configuration reads `DOCKET_*`
    // (which refuses unknown names), and so that no child process inherits it.
    let new_password = std::env::var(NEW_PASSWORD_VAR).ok();
    if new_password.is_some() {
        std::env::remove_var(NEW_PASSWORD_VAR);
    }
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("docket: {e:#}");
            return ExitCode::from(2);
        }
    };
    let mut config = config;
    if matches!(cli.command, Command::Eval { .. }) {
        // A replay files thousands of messages: only warnings and errors go to the log.
        config.log.filter = "warn".into();
    }
    init_tracing(&config);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(cli.command, config, new_password)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("docket: {e:#}");
            // Configuration problems exit 2 wherever they are found, like those in loading.
            if format!("{e:#}").contains("invalid configuration") {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn init_tracing(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.filter));
    // Colour only on a terminal: a file, a pipe or journald gets plain text.
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if config.log.format == "json" {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
}

/// The tenant named by `--tenant` (id, name or domain), opened.
async fn open_tenant(
    catalog: &Catalog,
    tenant: &str,
) -> anyhow::Result<std::sync::Arc<crate::tenancy::Tenant>> {
    catalog.tenant(&catalog.find_tenant(tenant).await?.id).await
}

async fn catalog_for_cli(config: &Config) -> anyhow::Result<Catalog> {
    // Operator commands also work on a `dev` data dir (its generated key).
    let key = app::master_key(config, Mode::Dev, false)
        .or_else(|_| app::master_key(config, Mode::Serve, false))?;
    app::open_catalog(config, key).await
}

async fn run(
    cmd: Command,
    config: Config,
    new_password: Option<String>,
) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Serve => {
            let app = Application::build(config, Mode::Serve).await?;
            tracing::info!(addr = %app.local_addr(), "docket listening");
            app.run_until_stopped().await?;
        }
        Command::Dev {
            action:
                Some(DevAction::Token {
                    email,
                    audience,
                    ttl,
                }),
        } => {
            let issuer = TokenIssuer::load_or_create(
                &config.data_dir.join("dev").join("issuer.pem"),
                DEV_ISSUER,
            )?;
            let aud = audience
                .or_else(|| config.google.client_ids.first().cloned())
                .unwrap_or_else(|| DEV_CLIENT_ID.to_string());
            println!("{}", issuer.user_token(&email, &aud, ttl));
        }
        Command::Dev { action: None } => {
            let app = Application::build(config, Mode::Dev).await?;
            let state = app.state();
            let tenant = dev::seed_demo(&state.catalog).await?;
            let dev_dir = state.config.data_dir.join("dev");
            let eml = dev::sample_email();
            std::fs::write(dev_dir.join("sample.eml"), &eml)?;
            let body = serde_json::json!({
                "raw": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(eml.as_bytes()),
                "targets": [{"kind": "matter", "id": "M-2024-017"}],
                "note": "Filed from the docket dev quick start",
            });
            // Written before canonicalizing: the printed `--data @…` path must be absolute
            // on the first run too (canonicalize fails on a file that does not exist yet).
            let body_path = dev_dir.join("sample-filing.json");
            std::fs::write(&body_path, serde_json::to_vec_pretty(&body)?)?;
            let body_path = body_path.canonicalize().unwrap_or(body_path);
            let token = state.dev.as_ref().expect("dev runtime").issuer.user_token(
                "alice@demo.test",
                &state.config.google.client_ids[0],
                12 * 3600,
            );
            let console_pw = dev::console_password(&state.catalog, &tenant, &dev_dir).await?;
            let second_factor = if dev::admin_enrolled(&state.catalog, &tenant).await? {
                "then the code from your authenticator app"
            } else {
                "you enrol an authenticator app on first sign-in"
            };
            let addr = app.local_addr();
            println!(
                "\ndocket dev is running on http://{addr}\n  \
                 data dir: {data}\n  \
                 demo tenant: {name} ({domains}); users alice@ (admin), bob@ (filer), carol@ (viewer) @demo.test\n  \
                 Gmail add-on simulator: http://{addr}/dev/addon  (the sidebar as each demo user sees it)\n  \
                 admin console: http://{addr}/console  (alice@demo.test / {console_pw}; {second_factor})\n  \
                 dev JWKS: http://{addr}/dev/jwks.json\n\n\
                 File the sample email (a token for alice@demo.test, valid 12 h; `docket dev token --email bob@demo.test` mints others):\n\n\
                 TOKEN='{token}'\n\n\
                 curl -sS -w '\\n' -X POST http://{addr}/v1/filings \\\n  \
                 -H \"Authorization: Bearer $TOKEN\" \\\n  \
                 -H 'Content-Type: application/json' \\\n  \
                 --data @{body}\n\n\
                 Then list what was filed:\n\n\
                 curl -sS -w '\\n' 'http://{addr}/v1/filings?target=matter:M-2024-017' -H \"Authorization: Bearer $TOKEN\"\n",
                data = state.config.data_dir.display(),
                name = tenant.name,
                domains = tenant.domains.join(", "),
                body = body_path.display(),
            );
            app.run_until_stopped().await?;
        }
        Command::Migrate => {
            let catalog = catalog_for_cli(&config).await?;
            let tenants = catalog.list_tenants().await?;
            for t in &tenants {
                catalog.tenant(&t.id).await?;
            }
            println!(
                "catalogue and {} tenant database(s) are up to date",
                tenants.len()
            );
            catalog.close().await;
        }
        Command::Tenant { action } => {
            let catalog = catalog_for_cli(&config).await?;
            match action {
                TenantAction::Create { name, domains } => {
                    let t = catalog.create_tenant(&name, &domains, "operator").await?;
                    println!(
                        "created tenant {} ({}) for {}",
                        t.name,
                        t.id,
                        t.domains.join(", ")
                    );
                }
                TenantAction::Suspend { ref tenant } | TenantAction::Resume { ref tenant } => {
                    let (status, done) = match &action {
                        TenantAction::Suspend { .. } => ("suspended", "suspended"),
                        _ => ("active", "resumed"),
                    };
                    let t = catalog.find_tenant(tenant).await?;
                    catalog.set_status(&t.id, status).await?;
                    println!("{} ({}) {done}", t.name, t.id);
                }
                TenantAction::Terminate {
                    tenant,
                    confirm_name,
                } => {
                    let t = catalog.find_tenant(&tenant).await?;
                    anyhow::ensure!(
                        confirm_name == t.name,
                        "type the tenant's name exactly ({:?}) with --confirm-name",
                        t.name
                    );
                    let open = catalog.tenant(&t.id).await?;
                    let detail =
                        serde_json::json!({ "name": t.name, "by": "docket tenant terminate" });
                    let retention = config.admin.retention_days;
                    let c = crate::http::admin::security::terminate_tenant(
                        &catalog, retention, &open, "operator", detail,
                    )
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                    println!(
                        "{} ({}) terminated at {}; its data is purged after {}",
                        t.name, t.id, c.terminated_at, c.purge_after
                    );
                }
                TenantAction::PurgeDue => {
                    let purged = crate::purge::purge_due(&catalog).await?;
                    for t in &purged {
                        println!(
                            "purged {} ({}): {}",
                            t.name,
                            t.tenant_id,
                            crate::purge::summary(&t.inventory)
                        );
                    }
                    println!("{} tenant(s) purged", purged.len());
                }
                TenantAction::Purged => {
                    for t in crate::purge::tombstones(catalog.pool()).await? {
                        println!(
                            "{}\t{}\tterminated {} by {}\t{}\t{}",
                            t.tenant_id,
                            t.name,
                            t.terminated_at,
                            t.terminated_by,
                            match &t.purged_at {
                                Some(at) => format!("purged {at}"),
                                None => format!("purge under way since {}", t.purge_started_at),
                            },
                            crate::purge::summary(&t.inventory)
                        );
                    }
                }
                TenantAction::List => {
                    for t in catalog.list_tenants().await? {
                        // A closed tenant gets a fifth column: when its data is purged.
                        let purge = match catalog.closure(&t.id).await? {
                            Some(c) => format!("\tpurge after {}", c.purge_after),
                            None => String::new(),
                        };
                        println!(
                            "{}\t{}\t{}\t{}{purge}",
                            t.id,
                            t.name,
                            t.status,
                            t.domains.join(",")
                        );
                    }
                }
                TenantAction::SetDelegation {
                    tenant,
                    key_file,
                    clear,
                } => {
                    let t = catalog.find_tenant(&tenant).await?;
                    let key = match (key_file, clear) {
                        (_, true) => None,
                        (Some(path), false) => {
                            let json = std::fs::read_to_string(&path)
                                .with_context(|| format!("cannot read {}", path.display()))?;
                            let parsed = crate::gmail::parse_delegation_key(&json)
                                .map_err(anyhow::Error::msg)?;
                            println!(
                                "service account {} will read threads as each user",
                                parsed.client_email
                            );
                            Some(json)
                        }
                        (None, false) => anyhow::bail!("give --key-file or --clear"),
                    };
                    catalog.set_delegation_key(&t.id, key.as_deref()).await?;
                    let open = catalog.tenant(&t.id).await?;
                    let detail = serde_json::json!({ "configured": key.is_some() });
                    audit::record(
                        &open.db,
                        &[
                            audit::AuditEvent::new("operator", "tenant.delegation", &t.id)
                                .detail(detail),
                        ],
                    )
                    .await?;
                    println!(
                        "thread filing for {} is {}",
                        t.name,
                        if key.is_some() { "enabled" } else { "disabled" }
                    );
                }
                TenantAction::SetSubjectPattern { tenant, pattern } => {
                    let t = catalog
                        .tenant(&catalog.find_tenant(&tenant).await?.id)
                        .await?;
                    crate::suggest::validate_pattern(&pattern).map_err(anyhow::Error::msg)?;
                    crate::suggest::set_setting(&t.db, "subject_pattern", &pattern, "operator")
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    println!("subject pattern of {} set", t.name);
                }
                TenantAction::SetTimeZone { tenant, time_zone } => {
                    let t = catalog
                        .tenant(&catalog.find_tenant(&tenant).await?.id)
                        .await?;
                    let tz = time_zone.trim();
                    if !crate::time_fmt::valid_time_zone(tz) {
                        anyhow::bail!(
                            "{tz:?} is not a time zone: give an IANA name such as Europe/London"
                        );
                    }
                    let key = crate::http::admin::ctx::TIME_ZONE_SETTING;
                    crate::suggest::set_setting(&t.db, key, tz, "operator")
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    println!("time zone of {} set to {tz}", t.name);
                }
                TenantAction::MapAddress { tenant, email } => {
                    let t = open_tenant(&catalog, &tenant).await?;
                    crate::firm_settings::map_address(&catalog, &t, &email, "operator")
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    println!("{email} now signs in to {}", t.name);
                }
                TenantAction::UnmapAddress { tenant, email } => {
                    let t = open_tenant(&catalog, &tenant).await?;
                    crate::firm_settings::unmap_address(&catalog, &t, &email, "operator")
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    println!("{email} no longer signs in to {}", t.name);
                }
                TenantAction::AddDomain { tenant, domain } => {
                    let t = open_tenant(&catalog, &tenant).await?;
                    crate::firm_settings::add_domain(&catalog, &t, &domain, "operator")
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    println!("{domain} now signs in to {}", t.name);
                }
                TenantAction::RemoveDomain { tenant, domain } => {
                    let t = open_tenant(&catalog, &tenant).await?;
                    crate::firm_settings::remove_domain(&catalog, &t, &domain, "operator")
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    println!("{domain} no longer signs in to {}", t.name);
                }
            }
            catalog.close().await;
        }
        Command::Record { action } => {
            let catalog = catalog_for_cli(&config).await?;
            match action {
                RecordAction::Add {
                    tenant,
                    kind,
                    reference,
                    title,
                    client,
                    contacts,
                } => {
                    let t = catalog
                        .tenant(&catalog.find_tenant(&tenant).await?.id)
                        .await?;
                    let kind: RecordKind = kind.parse().map_err(anyhow::Error::msg)?;
                    let r = directory::add_record(
                        &t.db, kind, &reference, &title, &client, &contacts, "operator",
                    )
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                    println!("added {}:{} {}", r.kind, r.reference, r.title);
                }
                RecordAction::Edit { .. }
                | RecordAction::Close { .. }
                | RecordAction::Reopen { .. } => {
                    directory_cmd::record(&catalog, action).await?;
                }
                RecordAction::List { tenant } => {
                    let t = catalog
                        .tenant(&catalog.find_tenant(&tenant).await?.id)
                        .await?;
                    for r in directory::list_records(&t.db)
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?
                    {
                        println!(
                            "{}:{}\t{}\t{}\t{}\t{}",
                            r.kind,
                            r.reference,
                            r.title,
                            r.client,
                            r.status,
                            r.contacts.join(",")
                        );
                    }
                }
            }
            catalog.close().await;
        }
        Command::User { action } => {
            let catalog = catalog_for_cli(&config).await?;
            match action {
                UserAction::Add {
                    tenant,
                    email,
                    role,
                    name,
                } => {
                    let t = catalog
                        .tenant(&catalog.find_tenant(&tenant).await?.id)
                        .await?;
                    let role: Role = role.parse().map_err(anyhow::Error::msg)?;
                    if directory::valid_email(email.trim()) {
                        catalog
                            .sign_in_obstacle(&t.id, &email)
                            .await?
                            .map_err(anyhow::Error::msg)?;
                    }
                    let u = directory::add_user(&t.db, &email, &name, role, "operator")
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    println!("added {} ({})", u.email, u.role.as_str());
                }
                UserAction::List { tenant } => {
                    let t = catalog
                        .tenant(&catalog.find_tenant(&tenant).await?.id)
                        .await?;
                    for u in directory::list_users(&t.db)
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?
                    {
                        println!(
                            "{}\t{}\t{}\t{}",
                            u.email,
                            u.role.as_str(),
                            u.status,
                            u.display_name
                        );
                    }
                }
                UserAction::SetPassword { tenant, email } => {
                    let (t, u) = cli_user(&catalog, &tenant, &email).await?;
                    let password = match new_password {
                        Some(p) => p,
                        None => {
                            use std::io::Read;
                            let mut p = String::new();
                            std::io::stdin()
                                .read_to_string(&mut p)
                                .context("cannot read the new password from standard input")?;
                            p.strip_suffix('\n')
                                .map(|p| p.strip_suffix('\r').unwrap_or(p))
                                .unwrap_or(&p)
                                .to_string()
                        }
                    };
                    match set_password_as_operator(&t, &u, &password).await {
                        Ok(()) => println!("password of {} set; their sessions ended", u.email),
                        Err(e) if e.status() == axum::http::StatusCode::UNPROCESSABLE_ENTITY => {
                            eprintln!("docket: password refused: {e}");
                            catalog.close().await;
                            return Ok(ExitCode::from(2));
                        }
                        Err(e) => anyhow::bail!("{e}"),
                    }
                }
                UserAction::SetRole {
                    tenant,
                    email,
                    role,
                } => {
                    let (t, u) = cli_user(&catalog, &tenant, &email).await?;
                    directory_cmd::set_role(&t, &u, &role).await?;
                }
                UserAction::Reactivate { tenant, email } => {
                    let (t, u) = cli_user(&catalog, &tenant, &email).await?;
                    crate::accounts::login::reactivate(&t.db, &u.id, "operator")
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    println!("{} is active again", u.email);
                }
                UserAction::ResetLink { tenant, email } => {
                    let (t, u) = cli_user(&catalog, &tenant, &email).await?;
                    let link = crate::accounts::reset::issue_for_user(
                        &t,
                        &u.id,
                        "operator",
                        config.admin.reset_link_minutes,
                        "operator",
                    )
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                    // A full URL when docket knows where it is served; else the path.
                    match config.addon.public_url.as_deref() {
                        Some(base) => println!("{}{}", base.trim_end_matches('/'), link.link),
                        None => println!("{}", link.link),
                    }
                    println!(
                        "one-time set-password link for {}; expires {} (UTC)",
                        link.email, link.expires_at
                    );
                    if config.addon.public_url.is_none() {
                        println!(
                            "(a path: set addon.public_url (DOCKET_ADDON__PUBLIC_URL) to print the full URL)"
                        );
                    }
                }
            }
            catalog.close().await;
        }
        Command::Audit { action } => {
            let catalog = catalog_for_cli(&config).await?;
            let code = match action {
                AuditAction::Verify { tenant } => {
                    let t = catalog
                        .tenant(&catalog.find_tenant(&tenant).await?.id)
                        .await?;
                    let (status, anchor) = audit::anchor::verify(&catalog, &t).await?;
                    match status {
                        ChainStatus::Intact { entries, head } => {
                            let anchored = match anchor {
                                Some(a) => {
                                    format!("holds entry {} anchored on {}", a.seq, a.anchored_at)
                                }
                                None => "not anchored before; anchored now".into(),
                            };
                            println!(
                                "audit chain of {} intact: {entries} entries, head {head}; {anchored}",
                                t.name
                            );
                            ExitCode::SUCCESS
                        }
                        ChainStatus::Broken { seq, reason } => {
                            println!("audit chain of {} BROKEN at entry {seq}: {reason}", t.name);
                            ExitCode::from(1)
                        }
                    }
                }
                AuditAction::List { tenant, limit } => {
                    let t = catalog
                        .tenant(&catalog.find_tenant(&tenant).await?.id)
                        .await?;
                    for e in audit::list(&t.db, limit).await? {
                        println!(
                            "{}\t{}\t{}\t{}\t{}\t{}",
                            e.seq, e.at, e.actor, e.action, e.subject, e.detail
                        );
                    }
                    ExitCode::SUCCESS
                }
            };
            catalog.close().await;
            return Ok(code);
        }
        Command::Retention { action } => {
            let catalog = catalog_for_cli(&config).await?;
            retention_command(&catalog, action).await?;
            catalog.close().await;
        }
        Command::Subject { action } => {
            let catalog = catalog_for_cli(&config).await?;
            let budget = crate::budget::Budget::new(config.limits.max_bytes_in_flight);
            subject_command(&catalog, &budget, action).await?;
            catalog.close().await;
        }
        Command::Group { action } => {
            let catalog = catalog_for_cli(&config).await?;
            directory_cmd::group(&catalog, action).await?;
            catalog.close().await;
        }
        Command::Hold { action } => {
            let catalog = catalog_for_cli(&config).await?;
            hold_command(&catalog, action).await?;
            catalog.close().await;
        }
        Command::Backup { action } => {
            let catalog = catalog_for_cli(&config).await?;
            let code = backup_command(&catalog, action).await;
            catalog.close().await;
            return code;
        }
        Command::Eval {
            action:
                EvalAction::Suggestions {
                    seed,
                    records,
                    messages,
                    dir,
                    firm_domain,
                    fit,
                    show_misses,
                },
        } => {
            let firm = match &dir {
                Some(d) => crate::eval::folder::load(d, firm_domain.as_deref())?,
                None => crate::eval::synth::firm(
                    seed,
                    crate::eval::synth::Shape {
                        records: records as usize,
                        messages: messages as usize,
                    },
                ),
            };
            let what = match &dir {
                Some(d) => format!("{}", d.display()),
                None => format!("synthetic firm, seed {seed}"),
            };
            println!(
                "replaying {} messages, {} records ({what})",
                firm.cases.len(),
                firm.records.len()
            );
            let work = tempfile::tempdir()?;
            let started = std::time::Instant::now();
            let report = crate::eval::replay(&firm, work.path()).await?;
            print!("{}", report.render());
            println!("  replayed in {:.1} s", started.elapsed().as_secs_f64());
            for m in report.misses.iter().take(show_misses) {
                print!("  missed: {m}");
            }
            if fit {
                let (a, b, c) = report.fit();
                println!("  fitted confidence: A = {a:.3}, B = {b:.3}, C = {c:.3}");
            }
        }
        Command::Maintenance {
            action: MaintenanceAction::Sweep { grace_minutes },
        } => {
            let grace = grace_minutes.unwrap_or(config.maintenance.sweep_grace_minutes);
            anyhow::ensure!(
                grace >= crate::config::MIN_SWEEP_GRACE_MINUTES,
                "--grace-minutes must be at least {}",
                crate::config::MIN_SWEEP_GRACE_MINUTES
            );
            let catalog = catalog_for_cli(&config).await?;
            let r = crate::maintenance::sweep(&catalog, Duration::from_secs(grace * 60)).await?;
            println!(
                "swept {} tenant(s): {} temp file(s) and {} unreferenced blob(s) removed",
                r.tenants, r.temp_files, r.orphan_blobs
            );
            catalog.close().await;
            if r.failed > 0 {
                anyhow::bail!("the sweep failed for {} tenant(s); see the log", r.failed);
            }
        }
        Command::File(args) => {
            let catalog = catalog_for_cli(&config).await?;
            let t = catalog
                .tenant(&catalog.find_tenant(&args.tenant).await?.id)
                .await?;
            let user = directory::user_by_email(&t.db, &args.user)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .with_context(|| format!("no user {} in {}", args.user, t.name))?;
            let raw = if args.message.as_os_str() == "-" {
                use std::io::Read;
                let mut v = Vec::new();
                std::io::stdin().read_to_end(&mut v)?;
                v
            } else {
                std::fs::read(&args.message)
                    .with_context(|| format!("cannot read {}", args.message.display()))?
            };
            let targets = args
                .targets
                .iter()
                .map(|s| {
                    TargetRef::parse(s)
                        .with_context(|| format!("target {s:?} must look like matter:M-2024-017"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let attachments = if args.attachments == "all" {
                AttachmentSelection::All
            } else {
                AttachmentSelection::Only(
                    args.attachments
                        .split(',')
                        .map(|s| {
                            s.trim()
                                .parse::<usize>()
                                .context("--attachments must be `all` or indices like 0,2")
                        })
                        .collect::<anyhow::Result<_>>()?,
                )
            };
            let outcome = filing::file_message(
                &t,
                &config.limits,
                &user,
                FilingInput {
                    raw,
                    gmail_message_id: None,
                    gmail_thread_id: None,
                    targets,
                    attachments,
                    note: args.note,
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{}", serde_json::to_string_pretty(&outcome)?);
            catalog.close().await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `docket backup …`: exit 1 when any backup or check failed.
async fn backup_command(catalog: &Catalog, action: BackupAction) -> anyhow::Result<ExitCode> {
    use crate::backup;
    let mut failed = 0;
    match action {
        BackupAction::Create { tenant, all, to } => {
            let ids = match (tenant, all) {
                (Some(t), _) => vec![catalog.find_tenant(&t).await?.id],
                (None, _) => catalog
                    .list_tenants()
                    .await?
                    .into_iter()
                    .filter(|t| t.status == "active")
                    .map(|t| t.id)
                    .collect(),
            };
            crate::tenancy::create_private_dir(&to)?;
            for id in ids {
                match backup::create(catalog, &id, &to).await {
                    Ok(c) => println!(
                        "backed up {id} to {}: {} messages, {} filings, {} audit entries; {} of {} blobs copied, {} bytes, {:.1} s",
                        c.location.display(), c.facts.messages, c.facts.filings,
                        c.facts.audit_entries, c.blobs_copied, c.blobs_total, c.bytes, c.seconds
                    ),
                    Err(e) => {
                        failed += 1;
                        println!("backup of {id} FAILED: {e:#}");
                    }
                }
            }
        }
        BackupAction::Verify { path } => {
            let found = backup::resolve(&path);
            anyhow::ensure!(
                !found.is_empty(),
                "no finished backup in {}",
                path.display()
            );
            for snapshot in found {
                match backup::verify(catalog, &snapshot).await {
                    Ok(v) => println!(
                        "backup {} verified: {} files, {} messages, {} filings, audit chain of {} entries intact, {:.1} s",
                        v.location.display(), v.files, v.facts.messages, v.facts.filings,
                        v.facts.audit_entries, v.seconds
                    ),
                    Err(e) => {
                        failed += 1;
                        println!("backup {} FAILED verification: {e:#}", snapshot.display());
                    }
                }
            }
        }
        BackupAction::Restore {
            path,
            tenant,
            as_name,
        } => {
            let id = catalog.find_tenant(&tenant).await?.id;
            let snapshot = backup::resolve(&path)
                .pop()
                .with_context(|| format!("no finished backup in {}", path.display()))?;
            let r = backup::restore(catalog, &snapshot, &id, as_name.as_deref()).await?;
            println!(
                "restored backup {} into tenant {}: {} messages, {} filings, {} audit entries, {} blobs written, {:.1} s",
                r.backup_id, r.tenant_id, r.facts.messages, r.facts.filings,
                r.facts.audit_entries, r.blobs_written, r.seconds
            );
            if as_name.is_none() {
                println!("the tenant is still suspended: resume it with `docket tenant resume --tenant {id}`");
            }
        }
        BackupAction::Push {
            ref dir,
            ref tenant,
        }
        | BackupAction::Pull {
            to: ref dir,
            ref tenant,
        } => {
            let Some(storage) = catalog.object_storage() else {
                anyhow::bail!("no object store is configured (storage.backend = \"s3\")");
            };
            let only = match tenant {
                Some(t) => Some(catalog.find_tenant(t).await?.id),
                None => None,
            };
            let done = match &action {
                BackupAction::Push { .. } => {
                    backup::remote::push(storage, dir, only.as_deref()).await?
                }
                _ => backup::remote::pull(storage, dir, only.as_deref()).await?,
            };
            println!(
                "{} file(s) copied ({} bytes), {} already there; {} <-> {}",
                done.files,
                done.bytes,
                done.unchanged,
                dir.display(),
                done.remote
            );
        }
        BackupAction::Status => {
            println!("tenant\tname\tstatus\tlast backup\tlast verify\tlatest failed");
            for s in backup::status(catalog).await? {
                let failing = match (s.backup_failing, s.verify_failing) {
                    (true, true) => "backup, verify",
                    (true, false) => "backup",
                    (false, true) => "verify",
                    (false, false) => "-",
                };
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{failing}",
                    s.tenant_id,
                    s.tenant_name,
                    s.tenant_status,
                    s.last_backup.as_deref().unwrap_or("never"),
                    s.last_verify.as_deref().unwrap_or("never"),
                );
            }
        }
    }
    Ok(match failed {
        0 => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    })
}

/// The open tenant named by `tenant` (id, name or domain) and its user `email`.
async fn cli_user(
    catalog: &Catalog,
    tenant: &str,
    email: &str,
) -> anyhow::Result<(std::sync::Arc<crate::tenancy::Tenant>, directory::User)> {
    let t = catalog
        .tenant(&catalog.find_tenant(tenant).await?.id)
        .await?;
    let u = directory::user_by_email(&t.db, email)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .filter(|u| u.id != "system")
        .with_context(|| format!("no user {email} in {}", t.name))?;
    Ok((t, u))
}

/// Sets a password (policy checked; sessions ended) and audits it as the operator.
async fn set_password_as_operator(
    t: &crate::tenancy::Tenant,
    u: &directory::User,
    password: &str,
) -> crate::error::AppResult<()> {
    let _guard = t.write_guard().await;
    let mut tx = t.begin().await?;
    audit::lock_chain(&mut tx).await?;
    crate::accounts::password::set_password(&mut tx, &u.id, password).await?;
    audit::append(
        &mut tx,
        &audit::AuditEvent::new("operator", "password.set", &u.id)
            .detail(serde_json::json!({ "email": u.email, "via": "cli" })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

async fn retention_command(catalog: &Catalog, action: RetentionAction) -> anyhow::Result<()> {
    match action {
        RetentionAction::Evaluate { tenant: None } => {
            let made = crate::retention::evaluate_all(catalog).await;
            for (id, d) in &made {
                print_disposition(id, d);
            }
            println!(
                "{} disposition list(s) waiting for approval in the console",
                made.len()
            );
        }
        RetentionAction::Evaluate { tenant: Some(t) } => {
            let t = catalog.tenant(&catalog.find_tenant(&t).await?.id).await?;
            let now = catalog.clock().now();
            match crate::retention::evaluate(&t.db, now, "operator")
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?
            {
                Some(d) => print_disposition(&t.id, &d),
                None => println!("{}: nothing is due for disposition", t.name),
            }
        }
        RetentionAction::Status { tenant } => {
            let t = catalog
                .tenant(&catalog.find_tenant(&tenant).await?.id)
                .await?;
            let err = |e: crate::error::AppError| anyhow::anyhow!("{e}");
            for p in crate::retention::policies(&t.db).await.map_err(err)? {
                println!(
                    "policy\t{}\t{} years after closure\tset by {} on {}",
                    p.kind, p.years, p.updated_by, p.updated_at
                );
            }
            for d in crate::retention::dispositions(&t.db).await.map_err(err)? {
                print_disposition(&t.id, &d);
            }
        }
    }
    Ok(())
}

fn print_disposition(tenant_id: &str, d: &crate::retention::Disposition) {
    println!(
        "disposition {} of tenant {tenant_id}: {} (listed {})",
        d.id, d.status, d.created_at
    );
    for i in &d.items {
        println!(
            "\t{}\t{} filings\tclosed {}\tdue {}",
            i.record, i.filings, i.closed_at, i.due_at
        );
    }
}

async fn hold_command(catalog: &Catalog, action: HoldAction) -> anyhow::Result<()> {
    use crate::retention::{self, HoldOn};
    let err = |e: crate::error::AppError| anyhow::anyhow!("{e}");
    let tenant_of = |t: String| async move {
        let id = catalog.find_tenant(&t).await?.id;
        catalog.tenant(&id).await
    };
    match action {
        HoldAction::List { tenant, all } => {
            let t = tenant_of(tenant).await?;
            for h in retention::holds(&t.db, all).await.map_err(err)? {
                let on = h.record.or(h.email).unwrap_or_default();
                let released = match (h.released_at, h.released_by) {
                    (Some(at), Some(by)) => format!("\treleased {at} by {by}"),
                    _ => String::new(),
                };
                println!(
                    "{}\t{}\t{on}\t{}\tplaced {} by {}{released}",
                    h.id, h.scope, h.reason, h.placed_at, h.placed_by
                );
            }
        }
        HoldAction::Place {
            tenant,
            record,
            email,
            reason,
        } => {
            let t = tenant_of(tenant).await?;
            let on = match (record, email) {
                (Some(r), _) => {
                    let (kind, reference) = r
                        .split_once(':')
                        .context("give the record as kind:reference, e.g. matter:M-2024-017")?;
                    let kind: crate::directory::RecordKind =
                        kind.parse().map_err(anyhow::Error::msg)?;
                    let rec = crate::directory::find_record(&t.db, kind, reference)
                        .await
                        .map_err(err)?
                        .with_context(|| format!("no record {r}"))?;
                    HoldOn::Record(rec.id)
                }
                (None, Some(e)) => HoldOn::Person(e),
                (None, None) => anyhow::bail!("give --record or --email"),
            };
            let h = retention::place_hold(&t.db, &on, &reason, "operator")
                .await
                .map_err(err)?;
            println!(
                "hold {} placed on {}",
                h.id,
                h.record.or(h.email).unwrap_or_default()
            );
        }
        HoldAction::Release { tenant, id } => {
            let t = tenant_of(tenant).await?;
            let h = retention::release_hold(&t.db, &id, "operator")
                .await
                .map_err(err)?;
            println!(
                "hold {} on {} released",
                h.id,
                h.record.or(h.email).unwrap_or_default()
            );
        }
    }
    Ok(())
}

async fn subject_command(
    catalog: &Catalog,
    budget: &crate::budget::Budget,
    action: SubjectAction,
) -> anyhow::Result<()> {
    let err = |e: crate::error::AppError| anyhow::anyhow!("{e}");
    match action {
        SubjectAction::Export { tenant, email, to } => {
            let t = catalog
                .tenant(&catalog.find_tenant(&tenant).await?.id)
                .await?;
            let zip = crate::gdpr::export(budget, &t, &email, None, "operator")
                .await
                .map_err(err)?;
            std::fs::write(&to, &zip).with_context(|| format!("cannot write {}", to.display()))?;
            println!("wrote {} ({} bytes)", to.display(), zip.len());
        }
        SubjectAction::Erase {
            tenant,
            email,
            request,
        } => {
            let t = catalog
                .tenant(&catalog.find_tenant(&tenant).await?.id)
                .await?;
            let ask = crate::gdpr::ErasureRequest {
                email: &email,
                request: &request,
                actor: "operator",
                caller: "",
                viewer: None,
            };
            let done = crate::gdpr::erase(catalog, &t, &ask).await.map_err(err)?;
            println!("{}", serde_json::to_string(&done)?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    /// Every subcommand and every flag or argument says what it is for in `--help`.
    #[test]
    fn every_subcommand_and_flag_has_a_help_line() {
        use clap::CommandFactory;
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if id != "help" && id != "version" && a.get_help().is_none() {
                    missing.push(format!("{path} <{id}>"));
                }
            }
            for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
                let p = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() {
                    missing.push(p.clone());
                }
                walk(sub, &p, missing);
            }
        }
        let mut cmd = super::Cli::command();
        cmd.build();
        let mut missing = Vec::new();
        walk(&cmd, "docket", &mut missing);
        assert!(
            missing.is_empty(),
            "{} without a help line:\n{}",
            missing.len(),
            missing.join("\n")
        );
    }
}
