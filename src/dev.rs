//! `docket dev`: a local identity issuer (its own RSA key and JWKS) that mints ID tokens
//! shaped like Google's, and a seeded demo tenant. Never active in `serve`.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;

use crate::directory::{self, RecordKind, Role};
use crate::storage::sha256_hex;
use crate::tenancy::{Catalog, TenantInfo};

/// `iss` of dev tokens (accepted only by a `dev` instance unless configured otherwise).
pub const DEV_ISSUER: &str = "https://dev.docket.invalid";
/// Default `aud` of dev tokens.
pub const DEV_CLIENT_ID: &str = "docket-dev.apps.googleusercontent.com";
pub const DEMO_DOMAIN: &str = "demo.test";
/// The `email` of the dev add-on's system ID tokens.
pub const DEV_ADDON_SERVICE_ACCOUNT: &str = "service-0@gcp-sa-gsuiteaddons.dev.docket.invalid";

/// An RS256 token issuer with a JWKS, used by `docket dev` and by tests as a stand-in for Google.
pub struct TokenIssuer {
    issuer: String,
    kid: String,
    encoding: EncodingKey,
    n: String,
    e: String,
}

impl TokenIssuer {
    pub fn generate(issuer: &str) -> anyhow::Result<Self> {
        let key = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)?;
        Self::from_key(issuer, &key)
    }

    fn from_key(issuer: &str, key: &RsaPrivateKey) -> anyhow::Result<Self> {
        let n = URL_SAFE_NO_PAD.encode(key.n().to_bytes_be());
        let e = URL_SAFE_NO_PAD.encode(key.e().to_bytes_be());
        Ok(TokenIssuer {
            issuer: issuer.to_string(),
            kid: sha256_hex(n.as_bytes())[..16].to_string(),
            encoding: EncodingKey::from_rsa_der(key.to_pkcs1_der()?.as_bytes()),
            n,
            e,
        })
    }

    /// Loads the key at `path`, creating it (mode 0600) on first use.
    pub fn load_or_create(path: &Path, issuer: &str) -> anyhow::Result<Self> {
        if path.exists() {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let key = RsaPrivateKey::from_pkcs8_pem(&pem)
                .context("dev issuer key is not a PKCS#8 RSA key")?;
            return Self::from_key(issuer, &key);
        }
        let key = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)?;
        write_private(path, key.to_pkcs8_pem(LineEnding::LF)?.as_bytes())?;
        Self::from_key(issuer, &key)
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid, "n": self.n, "e": self.e}]})
    }

    /// Signs arbitrary claims with this issuer's key (RS256, with its `kid`).
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some(self.kid.clone());
        encode(&h, claims, &self.encoding).expect("signing with a valid RSA key")
    }

    /// The claims of a user ID token as Google issues them.
    pub fn user_claims(&self, email: &str, audience: &str, ttl_secs: u64) -> serde_json::Value {
        let now = jsonwebtoken::get_current_timestamp();
        let email = email.trim().to_ascii_lowercase();
        let domain = email
            .rsplit_once('@')
            .map(|(_, d)| d.to_string())
            .unwrap_or_default();
        let mut claims = serde_json::json!({
            "iss": self.issuer, "aud": audience, "azp": audience,
            "sub": format!("dev-{}", &sha256_hex(email.as_bytes())[..20]),
            "email": email, "email_verified": true,
            "iat": now, "exp": now + ttl_secs,
        });
        if domain != "gmail.com" && domain != "googlemail.com" {
            claims["hd"] = domain.into();
        }
        claims
    }

    pub fn user_token(&self, email: &str, audience: &str, ttl_secs: u64) -> String {
        self.sign(&self.user_claims(email, audience, ttl_secs))
    }
}

/// Writes a file readable by the owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        crate::tenancy::create_private_dir(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// The demo tenant "Demo LLP" (`demo.test`) with three users, a few records and the "Filed"
/// labels in Gmail on; idempotent.
pub async fn seed_demo(catalog: &Catalog) -> anyhow::Result<TenantInfo> {
    if let Ok(t) = catalog.find_tenant(DEMO_DOMAIN).await {
        return Ok(t);
    }
    let info = catalog
        .create_tenant("Demo LLP", &[DEMO_DOMAIN.to_string()], "dev")
        .await?;
    let tenant = catalog.tenant(&info.id).await?;
    let db = &tenant.db;
    for (email, name, role) in [
        ("alice@demo.test", "Alice Adams", Role::Admin),
        ("bob@demo.test", "Bob Brown", Role::Filer),
        ("carol@demo.test", "Carol Chen", Role::Viewer),
    ] {
        directory::add_user(db, email, name, role, "dev").await?;
    }
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    for (kind, reference, title, client, contacts) in [
        (
            RecordKind::Matter,
            "M-2024-017",
            "Acme v. Widget",
            "Acme Corp",
            s(&["acme.com"]),
        ),
        (
            RecordKind::Matter,
            "M-2024-018",
            "Initech restructuring",
            "Initech",
            s(&["initech.example"]),
        ),
        (
            RecordKind::Case,
            "C-88",
            "Smith v. Jones",
            "Jane Smith",
            s(&["jane.smith@example.org"]),
        ),
        (
            RecordKind::Contract,
            "K-2025-003",
            "Globex master services agreement",
            "Globex",
            s(&["globex.example"]),
        ),
    ] {
        directory::add_record(db, kind, reference, title, client, &contacts, "dev").await?;
    }
    // The demo firm shows the "Filed" labels in the simulator's fake Gmail.
    crate::firm_settings::set_gmail_label_prefix(&tenant, Some("Filed"), "dev").await?;
    Ok(info)
}

/// A small multipart message with one attachment, for the quick start.
pub fn sample_email() -> String {
    let boundary = "docket-sample-boundary";
    let pdf = base64::engine::general_purpose::STANDARD.encode(
        b"%PDF-1.4\n% docket sample attachment\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n",
    );
    format!(
        "From: Dana Client <dana@acme.com>\r\n\
To: Alice Adams <alice@demo.test>\r\n\
Cc: Bob Brown <bob@demo.test>\r\n\
Subject: Re: Acme v. Widget - draft settlement (M-2024-017)\r\n\
Date: Mon, 16 Nov 2026 09:30:00 +0000\r\n\
Message-ID: <sample-1@acme.com>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\
\r\n\
--{boundary}\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Alice,\r\n\r\nPlease find the draft settlement attached.\r\n\r\nDana\r\n\
--{boundary}\r\n\
Content-Type: application/pdf\r\n\
Content-Disposition: attachment; filename=\"Draft settlement.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
{pdf}\r\n\
--{boundary}--\r\n"
    )
}

/// What `docket dev` runs beside the real server: the issuer, the dev mailbox (a folder of
/// .eml files) and the grants of the fake Gmail API.
pub struct DevRuntime {
    pub issuer: TokenIssuer,
    pub mailbox: std::path::PathBuf,
    /// user OAuth token → what it grants.
    grants: std::sync::Mutex<std::collections::HashMap<String, Grant>>,
    /// The fake mailbox's labels: what `users.labels` and `users.messages.modify` change.
    pub labels: std::sync::Mutex<DevLabels>,
    /// The `Host` values dev answers (lower-case): anything else may be a DNS-rebound name.
    pub hosts: Vec<String>,
}

/// (per-message access token, Gmail hex message id, scopes granted) of a user OAuth token.
type Grant = (String, String, Vec<String>);

/// The hosts a dev instance on `addr` answers to: the listen address, `localhost:<port>`,
/// and the host of `addon.public_url` when one was configured (e.g. a tunnel).
pub fn dev_hosts(addr: std::net::SocketAddr, public_url: Option<&str>) -> Vec<String> {
    let mut hosts = vec![addr.to_string(), format!("localhost:{}", addr.port())];
    if let Some(u) = public_url.and_then(|u| url::Url::parse(u).ok()) {
        if let Some(h) = u.host_str() {
            hosts.push(match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_string(),
            });
        }
    }
    hosts.iter().map(|h| h.to_ascii_lowercase()).collect()
}

/// A dev mailbox message's Gmail ids: `msg-f:<decimal>` and the API's hex form.
pub struct DevIds {
    pub decimal: u64,
    pub hex: String,
}

/// Stable 63-bit ids derived from a key (file name, or thread root Message-ID).
pub fn dev_ids(key: &str) -> DevIds {
    let h = sha2::Sha256::digest(key.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    let decimal = u64::from_be_bytes(b) & 0x7fff_ffff_ffff_ffff;
    DevIds {
        decimal,
        hex: format!("{decimal:x}"),
    }
}

use sha2::Digest;

/// A dev message's thread: keyed by its root (first References entry, else In-Reply-To,
/// else its own Message-ID), so replies share their original's thread.
pub fn dev_thread(raw: &[u8], name: &str) -> DevIds {
    let headers = mail_parser::MessageParser::default().parse_headers(raw);
    let root = headers
        .as_ref()
        .and_then(|m| {
            let refs = m
                .references()
                .as_text_list()
                .and_then(|l| l.first().map(|s| s.to_string()));
            refs.or_else(|| m.references().as_text().map(str::to_string))
                .or_else(|| m.in_reply_to().as_text().map(str::to_string))
                .or_else(|| m.message_id().map(str::to_string))
        })
        .unwrap_or_else(|| name.to_string());
    dev_ids(&root)
}

impl DevRuntime {
    pub fn new(issuer: TokenIssuer, mailbox: std::path::PathBuf, hosts: Vec<String>) -> Self {
        DevRuntime {
            issuer,
            mailbox,
            grants: Default::default(),
            labels: Default::default(),
            hosts,
        }
    }

    /// The .eml files of the mailbox, by name.
    pub fn messages(&self) -> anyhow::Result<Vec<String>> {
        let mut names: Vec<String> = std::fs::read_dir(&self.mailbox)?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.ends_with(".eml"))
            .collect();
        names.sort();
        Ok(names)
    }

    /// The mailbox file whose Gmail id is `hex`.
    pub fn find(&self, hex: &str) -> anyhow::Result<Option<(String, Vec<u8>)>> {
        for name in self.messages()? {
            if dev_ids(&name).hex == hex {
                let raw = std::fs::read(self.mailbox.join(&name))?;
                return Ok(Some((name, raw)));
            }
        }
        Ok(None)
    }

    /// Grants a user OAuth token (with `scopes`) and a per-message token for one message,
    /// as Gmail would when the message is opened. Returns (user OAuth token, message access
    /// token).
    pub fn grant(&self, hex: &str, scopes: Vec<String>) -> (String, String) {
        let oauth = format!("dev-oauth-{}", hex::encode(rand::random::<[u8; 12]>()));
        let access = format!("dev-msg-{}", hex::encode(rand::random::<[u8; 12]>()));
        self.grants
            .lock()
            .expect("grants")
            .insert(oauth.clone(), (access.clone(), hex.to_string(), scopes));
        (oauth, access)
    }

    /// Checks a fake Gmail API call: Err(status) as Gmail would answer.
    pub fn check(&self, oauth: Option<&str>, access: Option<&str>, hex: &str) -> Result<(), u16> {
        let grants = self.grants.lock().expect("grants");
        let Some((granted_access, granted_hex, _)) = oauth.and_then(|o| grants.get(o)) else {
            return Err(401);
        };
        if access != Some(granted_access.as_str()) || granted_hex != hex {
            return Err(403);
        }
        Ok(())
    }
}

impl DevRuntime {
    /// Checks a label call of the fake Gmail API: 401 for an unknown token, 403 for one
    /// without `gmail.modify` (Google's "insufficient authentication scopes").
    pub fn check_modify(&self, oauth: Option<&str>) -> Result<(), u16> {
        let grants = self.grants.lock().expect("grants");
        let Some((_, _, scopes)) = oauth.and_then(|o| grants.get(o)) else {
            return Err(401);
        };
        match scopes.iter().any(|s| s == crate::gmail::SCOPE_GMAIL_MODIFY) {
            true => Ok(()),
            false => Err(403),
        }
    }
}

/// The fake mailbox's user labels and which messages carry them.
#[derive(Debug, Default)]
pub struct DevLabels {
    /// (id, name), in creation order.
    pub labels: Vec<(String, String)>,
    /// Gmail hex message id → label ids.
    pub on: std::collections::HashMap<String, Vec<String>>,
}

impl DevLabels {
    /// The names of the labels message `hex` carries.
    pub fn names_on(&self, hex: &str) -> Vec<String> {
        let ids = self.on.get(hex).map(Vec::as_slice).unwrap_or(&[]);
        ids.iter()
            .filter_map(|id| self.labels.iter().find(|(i, _)| i == id))
            .map(|(_, n)| n.clone())
            .collect()
    }
}

/// The dev mailbox's sample messages (written on first start).
pub fn sample_mailbox() -> Vec<(&'static str, String)> {
    let reply = "From: Dana Client <dana@acme.com>\r\n\
To: Alice Adams <alice@demo.test>\r\n\
Subject: Re: Acme v. Widget - draft settlement\r\n\
Date: Tue, 17 Nov 2026 08:15:00 +0000\r\n\
Message-ID: <sample-2@acme.com>\r\n\
In-Reply-To: <sample-1@acme.com>\r\n\
References: <sample-1@acme.com>\r\n\
\r\n\
One more point on clause 4.\r\n"
        .to_string();
    let court = "From: Jane Smith <jane.smith@example.org>\r\n\
To: Bob Brown <bob@demo.test>\r\n\
Subject: Hearing date for C-88\r\n\
Date: Wed, 18 Nov 2026 14:00:00 +0000\r\n\
Message-ID: <hearing-88@example.org>\r\n\
\r\n\
The hearing has been moved to 3 December.\r\n"
        .to_string();
    let globex = "From: Legal <legal@globex.example>\r\n\
To: Alice Adams <alice@demo.test>\r\n\
Subject: Renewal terms\r\n\
Date: Thu, 19 Nov 2026 10:00:00 +0000\r\n\
Message-ID: <renewal@globex.example>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"g\"\r\n\
\r\n\
--g\r\n\
Content-Type: text/plain\r\n\
\r\n\
Our markup is attached.\r\n\
--g\r\n\
Content-Type: application/vnd.openxmlformats-officedocument.wordprocessingml.document\r\n\
Content-Disposition: attachment; filename=\"MSA markup.docx\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
UEsDBBQAAAAIAGRvY2tldA==\r\n\
--g\r\n\
Content-Type: text/csv\r\n\
Content-Disposition: attachment; filename=\"pricing.csv\"\r\n\
\r\n\
item,price\r\nsupport,100\r\n\
--g--\r\n"
        .to_string();
    vec![
        ("sample.eml", sample_email()),
        ("reply.eml", reply),
        ("hearing.eml", court),
        ("globex.eml", globex),
    ]
}

/// The demo admin's console password: generated on first start, set for alice@demo.test
/// and kept in `data/dev/console-password` (0600) so later starts print the same one.
/// Whether the demo admin (alice@demo.test) has enrolled an authenticator app, i.e. signs
/// in to the console with a code rather than being asked to enrol.
pub async fn admin_enrolled(catalog: &Catalog, tenant: &TenantInfo) -> anyhow::Result<bool> {
    let t = catalog.tenant(&tenant.id).await?;
    let Some(alice) = crate::directory::user_by_email(&t.db, "alice@demo.test").await? else {
        return Ok(false);
    };
    Ok(crate::accounts::totp::is_enrolled(&t.db, &alice.id).await?)
}

pub async fn console_password(
    catalog: &Catalog,
    tenant: &TenantInfo,
    dev_dir: &Path,
) -> anyhow::Result<String> {
    let file = dev_dir.join("console-password");
    if let Ok(pw) = std::fs::read_to_string(&file) {
        return Ok(pw.trim().to_string());
    }
    let pw = format!("demo-{}", &crate::accounts::random_secret()[..20]);
    let t = catalog.tenant(&tenant.id).await?;
    let alice = crate::directory::user_by_email(&t.db, "alice@demo.test")
        .await?
        .ok_or_else(|| anyhow::anyhow!("the demo admin is missing"))?;
    let mut conn = t.db.acquire().await?;
    crate::accounts::password::set_password(&mut conn, &alice.id, &pw)
        .await
        .map_err(|e| anyhow::anyhow!("setting the demo console password: {e}"))?;
    write_private(&file, pw.as_bytes())?;
    Ok(pw)
}
