//! The suggestion model: each signal gives a record points, with a reason in words; a
//! record's score is the sum over signals (within one signal, its strongest evidence
//! counts), and its confidence comes from its score and its lead over the next record
//! ([`confidence`], calibrated with `docket eval suggestions`). The README's "How
//! suggestions are ranked" lists the signals and their points.

use std::collections::HashMap;

use sqlx::{AnyPool, Row};

use super::{open, placeholders, rec_from, RecordRef};
use crate::error::AppResult;
use crate::mail::ParsedMessage;

/// What found a record, strongest first in [`Signal::source`]'s words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    Thread,
    Rule,
    Reference,
    Words,
    Contact,
    History,
    OwnHistory,
}

impl Signal {
    /// The `source` the JSON API names (`history` for both kinds of history).
    pub fn source(self) -> &'static str {
        match self {
            Signal::Thread => "thread",
            Signal::Rule => "rule",
            Signal::Reference => "subject",
            Signal::Words => "words",
            Signal::Contact => "contact",
            Signal::History | Signal::OwnHistory => "history",
        }
    }
}

/// Points per signal. Thread, rule and reference outweigh everything else together, so
/// replies and referenced mail keep their record first.
pub mod points {
    pub const THREAD: f64 = 12.0;
    pub const RULE: f64 = 10.0;
    pub const REFERENCE: f64 = 11.0;
    pub const CONTACT_ADDRESS: f64 = 3.0;
    pub const CONTACT_DOMAIN: f64 = 1.5;
    /// A participant's domain is named after the record's client.
    pub const CLIENT_DOMAIN: f64 = 1.5;
    /// Most points the record words' weight can give ([`super::word_weight`] of each).
    pub const WORDS_MAX: f64 = 3.0;
    /// Points when the message names every word of the record's title and client (in the
    /// subject; less for attachment names and the body), in proportion.
    pub const WORDS_COVERAGE: f64 = 5.0;
    /// Factor on a record's word points when the message names another client and not
    /// the record's.
    pub const WORDS_OTHER_CLIENT: f64 = 0.5;
    /// Per unit of a word's weight ([`super::word_weight`]).
    pub const WORDS_PER_WEIGHT: f64 = 0.5;
    /// An address's history: BASE + SHARE × the share of its filed mail filed here, + LAST
    /// when its latest filing went here.
    pub const ADDRESS_BASE: f64 = 1.0;
    pub const ADDRESS_SHARE: f64 = 3.0;
    pub const ADDRESS_LAST: f64 = 1.0;
    pub const DOMAIN_BASE: f64 = 0.5;
    pub const DOMAIN_SHARE: f64 = 2.0;
    pub const DOMAIN_LAST: f64 = 0.7;
    /// The user's own latest filings: OWN_SHARE × the share of them filed here.
    pub const OWN_SHARE: f64 = 2.0;
    /// The user filed mail with this sender here before: OWN_SENDER + OWN_SHARE × the
    /// share of the user's filings among the sender's latest messages.
    pub const OWN_SENDER: f64 = 1.0;
    /// Weight of a To/Cc participant's evidence against the sender's.
    pub const PARTICIPANT: f64 = 0.7;
}

/// `confidence = 1 / (1 + e^-(A + B·score + C·lead))`, fitted by logistic regression on
/// `docket eval suggestions --fit` over synthetic firm histories (see the README).
pub mod calibration {
    pub const A: f64 = -1.86;
    pub const B: f64 = 0.164;
    pub const C: f64 = 0.542;
}

/// The probability that a suggestion with this score, leading the next one by `lead`
/// points (its score when it is alone), is the right record.
pub fn confidence(score: f64, lead: f64) -> f64 {
    use calibration::*;
    1.0 / (1.0 + (-(A + B * score + C * lead)).exp())
}

/// The word the card shows for a confidence.
pub fn likelihood(confidence: f64) -> &'static str {
    match confidence {
        c if c >= 0.9 => "likely",
        c if c >= 0.5 => "possible",
        _ => "unsure",
    }
}

/// One record's evidence so far.
#[derive(Debug, Clone)]
pub struct Scored {
    pub target: RecordRef,
    /// When a signal first found it (signals run strongest kind first): breaks ties.
    found: usize,
    /// Per signal: its points (the strongest evidence) and every reason given.
    parts: Vec<(Signal, f64, Vec<String>)>,
}

impl Scored {
    pub fn score(&self) -> f64 {
        self.parts.iter().map(|p| p.1).sum()
    }

    /// The signal that gave the most points.
    pub fn strongest(&self) -> Signal {
        self.parts
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(Signal::History, |p| p.0)
    }

    /// Reasons, the strongest signal's first.
    pub fn reasons(&self) -> Vec<String> {
        let mut parts: Vec<&(Signal, f64, Vec<String>)> = self.parts.iter().collect();
        parts.sort_by(|a, b| b.1.total_cmp(&a.1));
        parts
            .into_iter()
            .flat_map(|p| p.2.iter().cloned())
            .collect()
    }

    /// Each signal's points, for the evaluation tool.
    pub fn points(&self) -> Vec<(Signal, f64)> {
        self.parts.iter().map(|p| (p.0, p.1)).collect()
    }
}

/// Every record any signal found, by `kind:reference`.
#[derive(Default)]
pub struct Board {
    by_target: HashMap<String, Scored>,
}

impl Board {
    pub fn add(&mut self, rec: RecordRef, signal: Signal, points: f64, reason: String) {
        let found = self.by_target.len();
        let s = self
            .by_target
            .entry(rec.target())
            .or_insert_with(|| Scored {
                target: rec,
                found,
                parts: Vec::new(),
            });
        match s.parts.iter_mut().find(|p| p.0 == signal) {
            Some(p) => {
                p.1 = p.1.max(points);
                if !p.2.contains(&reason) {
                    p.2.push(reason);
                }
            }
            None => s.parts.push((signal, points, vec![reason])),
        }
    }

    /// Adds everything `other` found, in the order it found it: merging the boards of
    /// signals that ran at once, strongest kind first, gives what running them one after
    /// another on one board gives.
    pub fn merge(&mut self, other: Board) {
        let mut found: Vec<Scored> = other.by_target.into_values().collect();
        found.sort_by_key(|s| s.found);
        for s in found {
            for (signal, points, reasons) in s.parts {
                for reason in reasons {
                    self.add(s.target.clone(), signal, points, reason);
                }
            }
        }
    }

    /// Best first; on a tie, the one found first (by the stronger kind of signal, or
    /// earlier in the subject).
    pub fn ranked(self) -> Vec<Scored> {
        let mut all: Vec<Scored> = self.by_target.into_values().collect();
        all.sort_by(|a, b| b.score().total_cmp(&a.score()).then(a.found.cmp(&b.found)));
        all
    }
}

/// How a participant takes part in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Sender,
    /// The sender of mail forwarded in the body (a colleague forwarding a client's email).
    Forwarded,
    Participant,
}

impl Role {
    fn weight(self) -> f64 {
        match self {
            Role::Sender | Role::Forwarded => 1.0,
            Role::Participant => points::PARTICIPANT,
        }
    }

    fn word(self) -> &'static str {
        match self {
            Role::Sender => "sender",
            Role::Forwarded => "forwarded sender",
            Role::Participant => "participant",
        }
    }
}

/// A person outside the firm the message involves.
#[derive(Debug, Clone)]
pub struct Party {
    pub address: String,
    pub domain: String,
    pub role: Role,
}

/// The message's outside participants: From, the senders of forwarded mail, To and Cc,
/// less the firm's own domains and the user; each address once, in its strongest role.
pub fn outside_parties(m: &ParsedMessage, own_domains: &[String], user_email: &str) -> Vec<Party> {
    let forwarded = super::terms::forwarded_senders(&m.body_excerpt);
    // `terms::parties` lowercases addresses (Unicode): compare with the same.
    let senders: Vec<String> = m
        .from
        .iter()
        .filter_map(|b| b.address.as_deref())
        .map(|a| a.trim().to_lowercase())
        .collect();
    let user_email = user_email.to_lowercase();
    let mut out: Vec<Party> = Vec::new();
    for (address, domain) in super::terms::parties(m) {
        let own = own_domains.iter().any(|d| d.to_lowercase() == domain);
        if own || address == user_email {
            continue;
        }
        let role = if senders.contains(&address) {
            Role::Sender
        } else if forwarded.contains(&address) {
            Role::Forwarded
        } else {
            Role::Participant
        };
        out.push(Party {
            address,
            domain,
            role,
        });
    }
    out
}

/// Distinct domains of `parties` that say something about a record: not personal mail
/// (gmail.com…), each in its strongest role.
fn org_domains(parties: &[Party]) -> Vec<(String, Role)> {
    let mut out: Vec<(String, Role)> = Vec::new();
    for p in parties {
        if crate::firm_settings::PERSONAL_MAIL.contains(&p.domain.as_str()) {
            continue;
        }
        match out.iter_mut().find(|(d, _)| *d == p.domain) {
            Some(d) if p.role.weight() > d.1.weight() => d.1 = p.role,
            Some(_) => {}
            None => out.push((p.domain.clone(), p.role)),
        }
    }
    out
}

/// Contacts: a participant's address (or domain) is one of a record's contacts.
pub async fn contacts(
    pool: &AnyPool,
    user: &str,
    parties: &[Party],
    board: &mut Board,
) -> AppResult<()> {
    let addrs: Vec<(String, Role)> = parties
        .iter()
        .map(|p| (p.address.clone(), p.role))
        .collect();
    let domains: Vec<(String, Role)> =
        parties
            .iter()
            .fold(Vec::<(String, Role)>::new(), |mut v, p| {
                if !v.iter().any(|(d, _)| *d == p.domain) {
                    v.push((p.domain.clone(), p.role));
                }
                v
            });
    for (kind, list, pts) in [
        ("address", &addrs, points::CONTACT_ADDRESS),
        ("domain", &domains, points::CONTACT_DOMAIN),
    ] {
        if list.is_empty() {
            continue;
        }
        let sql = format!(
            "SELECT c.value, r.kind, r.reference, r.title FROM record_contacts c JOIN records r ON r.id = c.record_id \
             WHERE c.kind = '{kind}' AND c.value IN ({}) AND {} ORDER BY r.kind, r.reference",
            placeholders(1, list.len()),
            open(list.len() + 1)
        );
        let mut q = sqlx::query(&sql);
        for (v, _) in list {
            q = q.bind(v);
        }
        for r in q.bind(user).fetch_all(pool).await? {
            let value: String = r.get(0);
            let Some((_, role)) = list.iter().find(|(v, _)| *v == value) else {
                continue;
            };
            let rec = rec_from(&r, 1);
            let reason = format!("{} {value} is a contact of {}", role.word(), rec.title);
            board.add(rec, Signal::Contact, pts * role.weight(), reason);
        }
    }
    client_domains(pool, user, parties, board).await
}

/// Second-level labels under a country's top-level domain (`co.uk`, `com.au`).
const SECOND_LEVEL: &[&str] = &[
    "co", "com", "net", "org", "ac", "gov", "edu", "ltd", "plc", "or", "ne", "go",
];

/// Company forms: a client's name without them is what its domain spells (`Alpine Ski Ltd`
/// at `alpineski.com`), and naming a client needs none of them ("Kestrel" names "Kestrel
/// LLP").
const COMPANY_FORMS: &[&str] = &[
    "ltd",
    "limited",
    "inc",
    "llc",
    "llp",
    "plc",
    "gmbh",
    "ag",
    "sa",
    "sas",
    "bv",
    "nv",
    "corp",
    "corporation",
    "co",
    "company",
    "group",
];

/// The name a domain is registered under: its label left of the top-level domain and of a
/// second-level one such as `co.uk`, without hyphens (`mail.north-wind.co.uk` →
/// `northwind`). `None` for a label that is not a host name's (more than 63 characters, or
/// other than letters, digits and hyphens: RFC 1035 §2.3.1, IDNs in their `xn--` form) and
/// under 4 characters, too short to mean a client.
fn domain_name(domain: &str) -> Option<String> {
    let labels: Vec<&str> = domain.split('.').collect();
    let n = labels.len();
    let second_level = n >= 3 && SECOND_LEVEL.contains(&labels[n - 2]) && labels[n - 1].len() == 2;
    let label = labels.get(n.checked_sub(if second_level { 3 } else { 2 })?)?;
    let host_label = label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let name = label.replace('-', "");
    (host_label && name.len() >= 4).then_some(name)
}

/// A client's name as a domain would spell it: its words run together, lowercased, less a
/// company form at the end (`Alpine Ski Ltd` → `alpineski`).
fn client_as_domain(client: &str) -> String {
    let mut words: Vec<String> = client
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    while words.len() > 1
        && words
            .last()
            .is_some_and(|w| COMPANY_FORMS.contains(&w.as_str()))
    {
        words.pop();
    }
    words.concat()
}

/// Clients' own domains: a participant writes from a domain named after a record's client
/// (`alpineski.example` for "Alpine Ski"), though nobody set it as a contact. Found through
/// the client's words in `record_terms`: the records whose client has a word that begins
/// the domain's name and one that ends it, then their client spelled as a domain.
async fn client_domains(
    pool: &AnyPool,
    user: &str,
    parties: &[Party],
    board: &mut Board,
) -> AppResult<()> {
    let names: Vec<(String, Role)> = org_domains(parties)
        .into_iter()
        .filter_map(|(d, role)| domain_name(&d).map(|n| (n, role)))
        .take(HISTORY_KEYS)
        .collect();
    let (mut prefixes, mut suffixes) = (Vec::new(), Vec::new());
    for (name, _) in &names {
        let cuts: Vec<usize> = name.char_indices().map(|(i, _)| i).skip(3).collect();
        prefixes.extend(cuts.iter().map(|&i| name[..i].to_string()));
        prefixes.push(name.clone());
        for (i, _) in name.char_indices() {
            let tail = &name[i..];
            if tail.chars().count() < 3 {
                break;
            }
            suffixes.push(tail.to_string());
            // `terms::words` drops a plural `s`: "Humongous" is held as `humongou`.
            if let Some(t) = tail.strip_suffix('s').filter(|t| t.len() >= 4) {
                suffixes.push(t.to_string());
            }
        }
    }
    for v in [&mut prefixes, &mut suffixes] {
        v.sort();
        v.dedup();
    }
    if prefixes.is_empty() || suffixes.is_empty() {
        return Ok(());
    }
    let n = prefixes.len() + suffixes.len();
    // At most 10 names of at most 63 characters: about 1,900 values, far below SQLite's
    // 32,766 and PostgreSQL's 65,535 parameters.
    debug_assert!(n <= HISTORY_KEYS * 3 * 63);
    let sql = format!(
        "SELECT r.client, r.kind, r.reference, r.title FROM records r WHERE r.id IN ( \
         SELECT record_id FROM record_terms WHERE field = 'client' AND term IN ({}) INTERSECT \
         SELECT record_id FROM record_terms WHERE field = 'client' AND term IN ({})) AND {} \
         ORDER BY r.kind, r.reference",
        placeholders(1, prefixes.len()),
        placeholders(prefixes.len() + 1, suffixes.len()),
        open(n + 1)
    );
    let mut q = sqlx::query(&sql);
    for p in prefixes.iter().chain(&suffixes) {
        q = q.bind(p);
    }
    for r in q.bind(user).fetch_all(pool).await? {
        let client: String = r.get(0);
        let spelled = client_as_domain(&client);
        let Some((_, role)) = names.iter().find(|(n, _)| *n == spelled) else {
            continue;
        };
        let rec = rec_from(&r, 1);
        let reason = format!("{} writes from the domain of client {client}", role.word());
        board.add(
            rec,
            Signal::Contact,
            points::CLIENT_DOMAIN * role.weight(),
            reason,
        );
    }
    Ok(())
}

/// How many of an address's (or domain's) latest messages history reads.
const HISTORY_WINDOW: i64 = 200;
/// Most addresses, and most domains, history asks about.
const HISTORY_KEYS: usize = 10;

/// Per (key, record): how many of the key's latest [`HISTORY_WINDOW`] messages (not this
/// one) were filed there, and when last. `column` is `address` or `domain` of
/// `message_parties`. One indexed query per key.
async fn history_rows(
    pool: &AnyPool,
    user: &str,
    column: &str,
    keys: &[String],
    dedup_key: &str,
) -> AppResult<Vec<(String, RecordRef, i64, String)>> {
    let sql = format!(
        "SELECT r.kind, r.reference, r.title, h.n, h.last FROM \
         (SELECT f.record_id, COUNT(*) AS n, MAX(f.filed_at) AS last FROM \
          (SELECT message_id FROM message_parties WHERE {column} = $1 \
           AND message_id NOT IN (SELECT id FROM messages WHERE dedup_key = $2) \
           ORDER BY at DESC LIMIT $3) p \
          CROSS JOIN filings f WHERE f.message_id = p.message_id GROUP BY f.record_id) h \
         JOIN records r ON r.id = h.record_id WHERE {} ORDER BY r.kind, r.reference",
        open(4)
    );
    let mut out = Vec::new();
    for k in keys.iter().take(HISTORY_KEYS) {
        let rows = sqlx::query(&sql)
            .bind(k)
            .bind(dedup_key)
            .bind(HISTORY_WINDOW)
            .bind(user)
            .fetch_all(pool)
            .await?;
        out.extend(
            rows.iter()
                .map(|r| (k.clone(), rec_from(r, 0), r.get(3), r.get(4))),
        );
    }
    Ok(out)
}

/// Firm-wide history: where the firm filed earlier mail from or with these addresses, and
/// from these organisations' domains (each key's share of its filings, and its latest).
pub async fn history(
    pool: &AnyPool,
    user: &str,
    parties: &[Party],
    dedup_key: &str,
    board: &mut Board,
) -> AppResult<()> {
    let addrs: Vec<(String, Role)> = parties
        .iter()
        .map(|p| (p.address.clone(), p.role))
        .collect();
    let domains = org_domains(parties);
    for (list, by_domain) in [(addrs, false), (domains, true)] {
        if list.is_empty() {
            continue;
        }
        let keys: Vec<String> = list.iter().map(|(k, _)| k.clone()).collect();
        let column = if by_domain { "domain" } else { "address" };
        let rows = history_rows(pool, user, column, &keys, dedup_key).await?;
        for (key, role) in &list {
            let mine: Vec<&(String, RecordRef, i64, String)> =
                rows.iter().filter(|r| r.0 == *key).collect();
            let total: i64 = mine.iter().map(|r| r.2).sum();
            let latest = mine.iter().map(|r| r.3.as_str()).max().unwrap_or("");
            for (_, rec, n, last) in mine.iter().map(|r| (&r.0, &r.1, r.2, &r.3)) {
                let share = n as f64 / total as f64;
                let is_last = last.as_str() == latest;
                let (base, per, at_last) = match by_domain {
                    false => (
                        points::ADDRESS_BASE,
                        points::ADDRESS_SHARE,
                        points::ADDRESS_LAST,
                    ),
                    true => (
                        points::DOMAIN_BASE,
                        points::DOMAIN_SHARE,
                        points::DOMAIN_LAST,
                    ),
                };
                let pts =
                    role.weight() * (base + per * share + if is_last { at_last } else { 0.0 });
                let mut reason = filed_here(*role, key, n, total);
                if is_last && total > n {
                    reason.push_str(", the latest too");
                }
                board.add(rec.clone(), Signal::History, pts, reason);
            }
        }
    }
    Ok(())
}

/// "all 3 messages from dana@acme.com were filed here", in words.
fn filed_here(role: Role, key: &str, n: i64, total: i64) -> String {
    let with = match role {
        Role::Participant => "with",
        _ => "from",
    };
    match (n, total) {
        (1, 1) => format!("the one message {with} {key} was filed here"),
        (n, t) if n == t => format!("all {n} messages {with} {key} were filed here"),
        (1, t) => format!("1 of {t} messages {with} {key} was filed here"),
        (n, t) => format!("{n} of {t} messages {with} {key} were filed here"),
    }
}

/// How many of the user's latest filings [`own_history`] looks at.
const OWN_WINDOW: i64 = 200;

/// The user's own work: the records their latest filings went to, and where they filed
/// the sender's latest [`HISTORY_WINDOW`] messages (from or to the sender) before.
pub async fn own_history(
    pool: &AnyPool,
    user: &str,
    sender: Option<&str>,
    dedup_key: &str,
    board: &mut Board,
) -> AppResult<()> {
    let sql = format!(
        "SELECT r.kind, r.reference, r.title, COUNT(*) FROM \
         (SELECT record_id FROM filings WHERE filed_by = $1 ORDER BY filed_at DESC LIMIT $2) f \
         JOIN records r ON r.id = f.record_id WHERE {} GROUP BY r.kind, r.reference, r.title \
         ORDER BY r.kind, r.reference",
        open(3)
    );
    let rows = sqlx::query(&sql)
        .bind(user)
        .bind(OWN_WINDOW)
        .bind(user)
        .fetch_all(pool)
        .await?;
    let total: i64 = rows.iter().map(|r| r.get::<i64, _>(3)).sum();
    for r in &rows {
        let n: i64 = r.get(3);
        let share = n as f64 / total as f64;
        let reason = format!("you filed {n} of your latest {total} filings here");
        board.add(
            rec_from(r, 0),
            Signal::OwnHistory,
            points::OWN_SHARE * share,
            reason,
        );
    }
    let Some(sender) = sender else { return Ok(()) };
    // The sender's latest messages (any role), then which of them this user filed where.
    // CROSS JOIN keeps SQLite from starting at the user's (many) filings instead
    // (SQLite 3.46 chose that plan: 650 ms at 35,000 filings instead of 0.2 ms).
    let rows = sqlx::query(&format!(
        "SELECT r.kind, r.reference, r.title, COUNT(*) AS n FROM \
         (SELECT message_id FROM message_parties WHERE address = $2 \
          AND message_id NOT IN (SELECT id FROM messages WHERE dedup_key = $3) \
          ORDER BY at DESC LIMIT $4) p \
         CROSS JOIN filings f JOIN records r ON r.id = f.record_id \
         WHERE f.message_id = p.message_id AND f.filed_by = $1 AND {} \
         GROUP BY r.kind, r.reference, r.title ORDER BY n DESC, r.kind, r.reference LIMIT 5",
        open(5)
    ))
    .bind(user)
    .bind(sender)
    .bind(dedup_key)
    .bind(HISTORY_WINDOW)
    .bind(user)
    .fetch_all(pool)
    .await?;
    let total: i64 = rows.iter().map(|r| r.get::<i64, _>(3)).sum();
    for r in rows {
        let n: i64 = r.get(3);
        let times = match n {
            1 => "once".to_string(),
            n => format!("{n} times"),
        };
        let reason = format!("you filed mail with this sender here {times}");
        board.add(
            rec_from(&r, 0),
            Signal::OwnHistory,
            points::OWN_SENDER + points::OWN_SHARE * n as f64 / total as f64,
            reason,
        );
    }
    Ok(())
}

/// Where a word was found, and how much that place counts.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Place {
    Subject,
    Attachment,
    Body,
}

impl Place {
    fn weight(self) -> f64 {
        match self {
            Place::Subject => 1.0,
            Place::Attachment => 0.7,
            Place::Body => 0.35,
        }
    }

    fn word(self) -> &'static str {
        match self {
            Place::Subject => "subject",
            Place::Attachment => "attachment name",
            Place::Body => "message",
        }
    }
}

/// The message's words with where each was found first (subject, then attachment names,
/// then the body).
fn message_words(m: &ParsedMessage) -> Vec<(String, Place)> {
    let mut out: Vec<(String, Place)> = Vec::new();
    let names: Vec<&str> = m
        .attachments
        .iter()
        .map(|a| a.display_name.as_str())
        .collect();
    let sources = [
        (m.subject.clone().unwrap_or_default(), Place::Subject, 20),
        (names.join(" "), Place::Attachment, 20),
        (m.body_excerpt.clone(), Place::Body, 80),
    ];
    for (text, place, max) in sources {
        for w in super::terms::words(&text, max) {
            if !out.iter().any(|(x, _)| *x == w) {
                out.push((w, place));
            }
        }
    }
    out
}

/// Records `user` may not see (teams, walls). Only a record that is not firm-wide or has
/// an access rule can be hidden, so the visibility check runs on those alone.
fn hidden_sql(user_param: usize) -> String {
    format!(
        "SELECT r.id FROM records r WHERE (r.firm_wide = 0 OR r.id IN (SELECT record_id FROM record_access)) \
         AND NOT {}",
        crate::access::visible_sql("r", user_param)
    )
}

/// Word rarity among the records `user` may see (open or closed): for each word, in how
/// many of them it is — exact up to [`MAX_DF`], and above it only "more" — and how many
/// records the user may see. Counted among all records, then the hidden ones subtracted:
/// each count reads a bounded number of index entries (a word in thousands of records
/// costs no more than a rare one), and a record the user may not see never changes a
/// score.
async fn rarity(
    pool: &AnyPool,
    user: &str,
    terms: &[&str],
) -> AppResult<(HashMap<String, i64>, i64)> {
    let row = sqlx::query(&format!(
        "SELECT (SELECT COUNT(*) FROM records), (SELECT COUNT(*) FROM ({}) h)",
        hidden_sql(1)
    ))
    .bind(user)
    .fetch_one(pool)
    .await?;
    let (all, hidden): (i64, i64) = (row.get(0), row.get(1));
    // With up to `hidden` of them subtracted, a capped count still reads "more than MAX_DF".
    let cap = MAX_DF + 1 + hidden;
    let parts: Vec<String> = (1..=terms.len())
        .map(|i| {
            format!(
                "SELECT ${i} AS term, (SELECT COUNT(*) FROM (SELECT DISTINCT record_id FROM record_terms \
                 WHERE term = ${i} LIMIT {cap}) capped) AS n"
            )
        })
        .collect();
    let sql = parts.join(" UNION ALL ");
    let mut q = sqlx::query_as::<_, (String, i64)>(&sql);
    for t in terms {
        q = q.bind(*t);
    }
    let mut df: HashMap<String, i64> = q.fetch_all(pool).await?.into_iter().collect();
    if hidden > 0 {
        let sql = format!(
            "SELECT t.term, COUNT(DISTINCT t.record_id) FROM record_terms t WHERE t.term IN ({}) \
             AND t.record_id IN ({}) GROUP BY t.term",
            placeholders(2, terms.len()),
            hidden_sql(1)
        );
        let mut q = sqlx::query_as::<_, (String, i64)>(&sql).bind(user);
        for t in terms {
            q = q.bind(*t);
        }
        for (term, n) in q.fetch_all(pool).await? {
            if let Some(d) = df.get_mut(&term) {
                *d -= n;
            }
        }
    }
    Ok((df, all - hidden))
}

/// How telling a word is: rarer among records is stronger (`ln(1 + records / df)`).
fn word_weight(seen_records: i64, df: i64) -> f64 {
    (1.0 + seen_records as f64 / df.max(1) as f64).ln()
}

/// A word found in more records (the user may see) than this says nothing (subject, attachment names);
/// body words are held to a tighter bound, since bodies say many things.
const MAX_DF: i64 = 200;
const MAX_DF_BODY: i64 = 25;

/// Record words: the record's title and client named in the subject, attachment names or
/// body ("Northwind - lease renewal" → "Northwind lease").
pub async fn words(
    pool: &AnyPool,
    user: &str,
    m: &ParsedMessage,
    board: &mut Board,
) -> AppResult<()> {
    let found = message_words(m);
    if found.is_empty() {
        return Ok(());
    }
    let terms: Vec<&str> = found.iter().map(|(w, _)| w.as_str()).collect();
    let (df, seen_records) = rarity(pool, user, &terms).await?;
    let usable: Vec<&(String, Place)> = found
        .iter()
        .filter(|(w, p)| {
            let n = df.get(w).copied().unwrap_or(0);
            n > 0
                && n <= if *p == Place::Body {
                    MAX_DF_BODY
                } else {
                    MAX_DF
                }
        })
        .collect();
    if usable.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "SELECT t.term, t.field, r.kind, r.reference, r.title, \
         (SELECT COUNT(DISTINCT a.term) FROM record_terms a WHERE a.record_id = r.id), r.client \
         FROM record_terms t JOIN records r ON r.id = t.record_id WHERE t.term IN ({}) AND {} \
         ORDER BY r.kind, r.reference, t.term, t.field DESC",
        placeholders(1, usable.len()),
        open(usable.len() + 1)
    );
    let mut q = sqlx::query(&sql);
    for (w, _) in &usable {
        q = q.bind(w);
    }
    let rows = q.bind(user).fetch_all(pool).await?;
    score_words(&rows, &usable, &df, seen_records, board);
    Ok(())
}

/// A record's word evidence.
struct WordEvidence {
    rec: RecordRef,
    /// The words' weight ([`word_weight`] by place and field), summed.
    weight: f64,
    /// How much of the record's name the words cover, by place.
    coverage: f64,
    /// The words found, with where.
    found: Vec<(String, Place)>,
    /// How many words the record's client has, and how many of them the message names.
    client_words: i64,
    client_named: i64,
}

impl WordEvidence {
    /// The message names this record's client: every word of it.
    fn names_client(&self) -> bool {
        self.client_words > 0 && self.client_named == self.client_words
    }
}

fn score_words(
    rows: &[sqlx::any::AnyRow],
    usable: &[&(String, Place)],
    df: &HashMap<String, i64>,
    seen_records: i64,
    board: &mut Board,
) {
    let mut per: HashMap<String, WordEvidence> = HashMap::new();
    for r in rows {
        let term: String = r.get(0);
        let field: String = r.get(1);
        let rec = rec_from(r, 2);
        let n_terms = r.get::<i64, _>(5).max(1) as f64;
        let Some((_, place)) = usable.iter().find(|(w, _)| *w == term) else {
            continue;
        };
        let field_w = if field == "title" { 1.0 } else { 0.8 };
        let w = word_weight(seen_records, df[&term]) * place.weight() * field_w;
        let e = per.entry(rec.target()).or_insert_with(|| WordEvidence {
            rec,
            weight: 0.0,
            coverage: 0.0,
            found: Vec::new(),
            // The client's words as `record_terms` holds them, less company forms.
            client_words: super::terms::words(&r.get::<String, _>(6), 10)
                .iter()
                .filter(|w| !COMPANY_FORMS.contains(&w.as_str()))
                .count() as i64,
            client_named: 0,
        });
        // Named in the subject or an attachment's name: a body (signatures, quoted mail)
        // mentions many names in passing.
        if field == "client" && *place != Place::Body && !COMPANY_FORMS.contains(&term.as_str()) {
            e.client_named += 1;
        }
        // A word in both title and client counts once, as a title word (the rows come
        // title first: the query's ORDER BY).
        if !e.found.iter().any(|(t, _)| *t == term) {
            e.weight += w;
            e.coverage += place.weight() / n_terms;
            e.found.push((term, *place));
        }
    }
    // When the message names a client, a record of another client is less likely whatever
    // topic words it shares ("Kestrel - office relocation" is not about Relecloud's).
    let client_named = per.values().any(WordEvidence::names_client);
    // In a fixed order, so that ties break the same way every time.
    let mut per: Vec<(String, WordEvidence)> = per.into_iter().collect();
    per.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, e) in per {
        let mut pts = (e.weight * points::WORDS_PER_WEIGHT).min(points::WORDS_MAX)
            + points::WORDS_COVERAGE * e.coverage.min(1.0);
        if client_named && e.client_words > 0 && !e.names_client() {
            pts *= points::WORDS_OTHER_CLIENT;
        }
        for place in [Place::Subject, Place::Attachment, Place::Body] {
            // In the order the message has them.
            let mut here: Vec<(usize, &String)> = e
                .found
                .iter()
                .filter(|(_, p)| *p == place)
                .map(|(t, _)| (usable.iter().position(|(w, _)| w == t).unwrap_or(0), t))
                .collect();
            here.sort();
            let ws: Vec<String> = here.iter().map(|(_, t)| format!("“{t}”")).collect();
            if !ws.is_empty() {
                let reason = format!("{} mentions {}", place.word(), ws.join(", "));
                board.add(e.rec.clone(), Signal::Words, pts, reason);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str) -> RecordRef {
        RecordRef {
            kind: "matter".into(),
            id: id.into(),
            title: id.into(),
        }
    }

    /// Boards of signals run at once, merged in order, rank as one board filled in turn:
    /// same scores, same reasons, same tie-breaks.
    #[test]
    fn merged_boards_rank_as_one_board_filled_in_turn() {
        let adds: [&[(&str, Signal, f64, &str)]; 3] = [
            &[
                ("M-2", Signal::Words, 2.0, "w1"),
                ("M-1", Signal::Words, 2.0, "w2"),
            ],
            &[
                ("M-3", Signal::Contact, 1.5, "c1"),
                ("M-1", Signal::Contact, 1.0, "c2"),
                ("M-1", Signal::Contact, 3.0, "c3"),
            ],
            &[
                ("M-3", Signal::History, 2.0, "h1"),
                ("M-2", Signal::History, 1.5, "h2"),
            ],
        ];
        let mut one = Board::default();
        let mut merged = Board::default();
        for signal_adds in adds {
            let mut own = Board::default();
            for (id, signal, pts, why) in signal_adds {
                one.add(rec(id), *signal, *pts, why.to_string());
                own.add(rec(id), *signal, *pts, why.to_string());
            }
            merged.merge(own);
        }
        let view = |b: Board| -> Vec<(String, f64, Vec<String>)> {
            b.ranked()
                .into_iter()
                .map(|s| (s.target.target(), s.score(), s.reasons()))
                .collect()
        };
        let (one, merged) = (view(one), view(merged));
        assert_eq!(one, merged);
        // M-1 leads with 5; M-2 and M-3 tie at 3.5, and M-2 was found first.
        assert_eq!(
            one.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
            ["matter:M-1", "matter:M-2", "matter:M-3"]
        );
    }

    #[test]
    fn a_domain_is_named_after_the_label_left_of_its_suffix() {
        let name = |d: &str| domain_name(d);
        assert_eq!(name("northwind.example").as_deref(), Some("northwind"));
        assert_eq!(name("mail.northwind.com").as_deref(), Some("northwind"));
        assert_eq!(name("mail.northwind.co.uk").as_deref(), Some("northwind"));
        assert_eq!(name("north-wind.co.uk").as_deref(), Some("northwind"));
        // A three-letter name under a country's domain is no second level.
        assert_eq!(name("mail.acme.de").as_deref(), Some("acme"));
        // Too short to mean a client.
        assert_eq!(domain_name("abc.com"), None);
        assert_eq!(domain_name("ibm.de"), None);
        assert_eq!(domain_name("localhost"), None);
        // Not a host name's label: too long, or other characters (hostile mail).
        assert_eq!(domain_name(&format!("{}.com", "a".repeat(64))), None);
        assert_eq!(
            name(&format!("{}.com", "a".repeat(63))).as_deref(),
            Some("a".repeat(63).as_str())
        );
        assert_eq!(domain_name("münchen.de"), None);
        assert_eq!(domain_name("a_b_c_d.com"), None);
    }

    #[test]
    fn a_client_is_spelled_as_a_domain_without_its_company_form() {
        assert_eq!(client_as_domain("Alpine Ski Ltd"), "alpineski");
        assert_eq!(client_as_domain("Smith & Jones LLP"), "smithjones");
        assert_eq!(
            client_as_domain("Humongous Insurance"),
            "humongousinsurance"
        );
        assert_eq!(client_as_domain("Müller GmbH"), "müller");
        assert_eq!(client_as_domain("Group"), "group");
    }
}
