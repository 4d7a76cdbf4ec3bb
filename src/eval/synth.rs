//! A synthetic law firm's mail history, for `docket eval suggestions`: seeded, so that a
//! seed always gives the same firm. It has the difficulties real firms have: clients with
//! several records, opposing counsel and experts across many records, contacts configured
//! for only some records, new people at known clients, colleagues forwarding client mail,
//! personal mail addresses, subjects that name the record's words or nothing at all.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::{Case, Firm, RecordSpec};
use crate::directory::RecordKind;

/// The firm's size.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub records: usize,
    pub messages: usize,
}

const COMPANIES: &[&str] = &[
    "Northwind",
    "Contoso",
    "Fabrikam",
    "Globex",
    "Initech",
    "Umbrella",
    "Tailspin",
    "Litware",
    "Proseware",
    "Adatum",
    "Wingtip",
    "Lucerne",
    "Fourth Coffee",
    "Blue Yonder",
    "Woodgrove",
    "Alpine Ski",
    "Coho Winery",
    "Humongous",
    "Margie Travel",
    "Trey Research",
    "Vanarsdel",
    "Wide World",
    "Relecloud",
    "Southridge",
    "Bellows",
    "Tidewater",
    "Kestrel",
    "Harbor Point",
];
const TOPICS: &[&str] = &[
    "lease renewal",
    "share purchase",
    "employment dispute",
    "trademark opposition",
    "supply agreement",
    "data protection audit",
    "warehouse lease",
    "shareholder agreement",
    "construction claim",
    "licence agreement",
    "debt recovery",
    "merger clearance",
    "pension scheme",
    "franchise agreement",
    "insurance claim",
    "planning appeal",
    "distribution agreement",
    "loan facility",
    "joint venture",
    "product liability",
    "software licence",
    "office relocation",
    "patent infringement",
    "tax investigation",
];
const ADVERSARIES: &[&str] = &[
    "Ridgeway",
    "Stonebridge",
    "Marlow",
    "Ashford",
    "Pemberton",
    "Whitcombe",
    "Halvorsen",
    "Castellan",
    "Dunmore",
    "Everly",
];
const FIRST: &[&str] = &[
    "anna", "ben", "clara", "david", "emma", "felix", "grace", "hugo", "iris", "jonas", "kate",
    "leo", "mia", "noah", "olga", "paul", "rosa", "sam", "tara", "victor", "wendy", "yusuf",
];
const GENERIC: &[&str] = &[
    "Quick question",
    "Call tomorrow?",
    "Documents",
    "Following up",
    "Meeting next week",
    "Comments",
    "Signed copy",
    "Invoice query",
    "Next steps",
    "Urgent",
    "Update",
    "Re: our conversation",
    "Draft for review",
    "Timing",
];
const COUNSEL: &[&str] = &[
    "Baker & Finch",
    "Holloway Grant",
    "Merriman LLP",
    "Thorne Ward",
    "Kells & Co",
];

struct Client {
    name: String,
    domain: String,
    /// People known from the start, and people who appear later.
    people: Vec<String>,
    personal: bool,
}

struct Rec {
    spec: RecordSpec,
    client: usize,
    topic: String,
    lawyers: Vec<usize>,
    /// Opposing counsel firm, for cases.
    counsel: Option<usize>,
}

fn slug(s: &str) -> String {
    s.to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect()
}

fn clients(rng: &mut StdRng, n: usize) -> Vec<Client> {
    let mut names: Vec<&str> = COMPANIES.to_vec();
    names.shuffle(rng);
    (0..n)
        .map(|i| {
            // About one client in six is a private person writing from personal mail.
            let personal = i % 6 == 5;
            let (name, domain) = match personal {
                true => {
                    let first = FIRST[rng.gen_range(0..FIRST.len())];
                    let last = ADVERSARIES[rng.gen_range(0..ADVERSARIES.len())];
                    (
                        format!("{} {last}", capitalise(first)),
                        "gmail.com".to_string(),
                    )
                }
                false => {
                    let name = names[i % names.len()].to_string();
                    let domain = format!("{}.example", slug(&name));
                    (name, domain)
                }
            };
            let count = if personal { 1 } else { rng.gen_range(2..6) };
            let people = (0..count)
                .map(|k| match personal {
                    true => format!("{}.{}{}@gmail.com", slug(&name), k, rng.gen_range(10..99)),
                    false => format!("{}@{domain}", FIRST[(i * 7 + k * 3) % FIRST.len()]),
                })
                .collect();
            Client {
                name,
                domain,
                people,
                personal,
            }
        })
        .collect()
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

fn records(rng: &mut StdRng, shape: Shape, clients: &[Client], lawyers: usize) -> Vec<Rec> {
    let mut out: Vec<Rec> = Vec::new();
    for i in 0..shape.records {
        // Several records per client: the first clients get most of them.
        let client = if i < clients.len() {
            i
        } else {
            (rng.gen_range(0..clients.len()) * rng.gen_range(0..clients.len())) / clients.len()
        };
        let c = &clients[client];
        let topic = TOPICS[rng.gen_range(0..TOPICS.len())].to_string();
        let (kind, prefix) = match i % 5 {
            0 | 1 => (RecordKind::Matter, "M"),
            2 | 3 => (RecordKind::Case, "C"),
            _ => (RecordKind::Contract, "K"),
        };
        let title = match (kind, rng.gen_range(0..3)) {
            (RecordKind::Case, 0) => {
                format!(
                    "{} v. {}",
                    c.name,
                    ADVERSARIES[rng.gen_range(0..ADVERSARIES.len())]
                )
            }
            (_, 0) => capitalise(&topic),
            _ => format!("{} {topic}", c.name),
        };
        // Contacts: the client's domain for about half, one person for a fifth, none else.
        let contacts = match (rng.gen_range(0..10), c.personal) {
            (0..=4, false) => vec![c.domain.clone()],
            (5..=6, _) => vec![c.people[0].clone()],
            _ => Vec::new(),
        };
        let n_lawyers = rng.gen_range(1..=3);
        let mut who: Vec<usize> = (0..lawyers).collect();
        who.shuffle(rng);
        who.truncate(n_lawyers);
        let counsel = (kind == RecordKind::Case).then(|| rng.gen_range(0..COUNSEL.len()));
        out.push(Rec {
            spec: RecordSpec {
                kind,
                reference: format!("{prefix}-{}-{:03}", 2023 + (i % 3), i + 1),
                title,
                client: c.name.clone(),
                contacts,
            },
            client,
            topic,
            lawyers: who,
            counsel,
        });
    }
    out
}

/// One message before it is written out.
struct Draft {
    at: i64,
    from: String,
    to: Vec<String>,
    cc: Vec<String>,
    subject: String,
    body: String,
    attachment: Option<String>,
    message_id: String,
    in_reply_to: Option<String>,
    references: Vec<String>,
    filer: String,
    truth: usize,
}

fn write(d: &Draft, records: &[Rec]) -> Case {
    let date = time::OffsetDateTime::from_unix_timestamp(d.at)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .format(&time::format_description::well_known::Rfc2822)
        .unwrap_or_default();
    let mut h = format!(
        "From: {}\r\nTo: {}\r\nSubject: {}\r\nDate: {date}\r\nMessage-ID: <{}>\r\nMIME-Version: 1.0\r\n",
        d.from,
        d.to.join(", "),
        d.subject,
        d.message_id
    );
    if !d.cc.is_empty() {
        h.push_str(&format!("Cc: {}\r\n", d.cc.join(", ")));
    }
    if let Some(r) = &d.in_reply_to {
        h.push_str(&format!("In-Reply-To: <{r}>\r\n"));
    }
    if !d.references.is_empty() {
        let refs: Vec<String> = d.references.iter().map(|r| format!("<{r}>")).collect();
        h.push_str(&format!("References: {}\r\n", refs.join(" ")));
    }
    let raw = match &d.attachment {
        None => format!("{h}Content-Type: text/plain; charset=utf-8\r\n\r\n{}\r\n", d.body),
        Some(name) => format!(
            "{h}Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{}\r\n\
             --b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n",
            d.body
        ),
    };
    let r = &records[d.truth].spec;
    Case {
        raw: raw.into_bytes(),
        filer: d.filer.clone(),
        truth: format!("{}:{}", r.kind.as_str(), r.reference),
    }
}

/// A seeded firm: `shape.records` records, about `shape.messages` messages in conversations
/// of one to five, in time order.
pub fn firm(seed: u64, shape: Shape) -> Firm {
    let mut rng = StdRng::seed_from_u64(seed);
    let domain = "firm.example".to_string();
    let lawyers: Vec<String> = (0..8)
        .map(|i| format!("{}@{domain}", FIRST[(i * 5 + 1) % FIRST.len()]))
        .collect();
    let n_clients = (shape.records * 2 / 5).clamp(3, 40);
    let clients = clients(&mut rng, n_clients);
    let records = records(&mut rng, shape, &clients, lawyers.len());
    let mut drafts: Vec<Draft> = Vec::new();
    let span = 2 * 365 * 86_400i64;
    let start = 1_672_531_200i64; // 2023-01-01
    let mut k = 0usize;
    while drafts.len() < shape.messages {
        // Busier records get more conversations.
        let truth =
            (rng.gen_range(0..records.len()) + rng.gen_range(0..records.len()) / 3) % records.len();
        let at = start + rng.gen_range(0..span);
        let n = rng.gen_range(1..=5).min(shape.messages - drafts.len());
        conversation(
            &mut rng,
            &mut drafts,
            Conv { k, truth, at, n },
            &records,
            &clients,
            &lawyers,
        );
        k += 1;
    }
    drafts.sort_by_key(|d| d.at);
    Firm {
        domain,
        users: lawyers,
        records: records.iter().map(|r| r.spec.clone()).collect(),
        cases: drafts.iter().map(|d| write(d, &records)).collect(),
    }
}

struct Conv {
    k: usize,
    truth: usize,
    at: i64,
    n: usize,
}

/// Who is on the other side of a conversation about `rec`: a client person (sometimes one
/// the firm has not seen yet), opposing counsel on cases, or an outside expert.
fn counterpart(rng: &mut StdRng, rec: &Rec, clients: &[Client]) -> String {
    let c = &clients[rec.client];
    match (rec.counsel, rng.gen_range(0..10)) {
        (Some(f), 0..=3) => {
            let firm = slug(COUNSEL[f]);
            format!(
                "{}@{firm}.example",
                FIRST[rng.gen_range(0..4) + f * 3 % FIRST.len()]
            )
        }
        (_, 9) => format!(
            "{}.expert{}@gmail.com",
            FIRST[rng.gen_range(0..FIRST.len())],
            rng.gen_range(1..4)
        ),
        _ if !c.personal && rng.gen_range(0..8) == 0 => {
            format!(
                "{}.new{}@{}",
                FIRST[rng.gen_range(0..FIRST.len())],
                rng.gen_range(0..50),
                c.domain
            )
        }
        _ => c.people[rng.gen_range(0..c.people.len())].clone(),
    }
}

fn first_subject(rng: &mut StdRng, rec: &Rec, clients: &[Client]) -> String {
    let c = &clients[rec.client];
    match rng.gen_range(0..20) {
        0..=3 => format!("{} – {}", rec.spec.reference, capitalise(&rec.topic)),
        4..=8 => format!("{} - {}", c.name, rec.topic),
        9..=11 => capitalise(&rec.topic),
        _ => GENERIC[rng.gen_range(0..GENERIC.len())].to_string(),
    }
}

fn body(rng: &mut StdRng, rec: &Rec, clients: &[Client]) -> String {
    let c = &clients[rec.client];
    match rng.gen_range(0..10) {
        0..=2 => format!(
            "Hello,\n\nPlease see below regarding the {} for {}.\n\nBest regards",
            rec.topic, c.name
        ),
        3..=4 => format!(
            "Hi,\n\nAs discussed, here are my comments on the {}.\n\nThanks",
            rec.topic
        ),
        _ => "Hello,\n\nCould you give me a call when you have a moment?\n\nBest".to_string(),
    }
}

fn conversation(
    rng: &mut StdRng,
    out: &mut Vec<Draft>,
    conv: Conv,
    records: &[Rec],
    clients: &[Client],
    lawyers: &[String],
) {
    let rec = &records[conv.truth];
    let lawyer = lawyers[rec.lawyers[rng.gen_range(0..rec.lawyers.len())]].clone();
    let other = counterpart(rng, rec, clients);
    let subject = first_subject(rng, rec, clients);
    let mut ids: Vec<String> = Vec::new();
    let forwarded = rng.gen_range(0..10) == 0;
    for i in 0..conv.n {
        let id = format!(
            "m{}.{i}.{}@synth.example",
            conv.k,
            rng.gen_range(0..1_000_000u32)
        );
        let inbound = (i % 2 == 0) != (rng.gen_range(0..4) == 0);
        let (from, to) = match inbound {
            true => (other.clone(), vec![lawyer.clone()]),
            false => (lawyer.clone(), vec![other.clone()]),
        };
        let mut body = body(rng, rec, clients);
        let mut subject_i = match i {
            0 => subject.clone(),
            _ => format!("Re: {subject}"),
        };
        let mut from_i = from;
        let mut to_i = to;
        if i == 0 && forwarded {
            // A colleague forwards a client's email to the responsible lawyer.
            let colleague = lawyers[rng.gen_range(0..lawyers.len())].clone();
            body = format!(
                "FYI, see below.\n\n---------- Forwarded message ---------\nFrom: {} <{other}>\nDate: Mon\nSubject: {subject}\n\n{body}",
                capitalise(other.split('@').next().unwrap_or(""))
            );
            subject_i = format!("Fwd: {subject}");
            from_i = colleague;
            to_i = vec![lawyer.clone()];
        }
        let cc = match rng.gen_range(0..6) {
            0 => vec![lawyers[rng.gen_range(0..lawyers.len())].clone()],
            _ => Vec::new(),
        };
        let attachment = (rng.gen_range(0..5) == 0).then(|| {
            let c = &clients[rec.client];
            match rng.gen_range(0..2) {
                0 => format!(
                    "{}_{}_v{}.pdf",
                    c.name.replace(' ', "_"),
                    rec.topic.replace(' ', "_"),
                    i + 1
                ),
                _ => format!("scan_{}.pdf", rng.gen_range(100..999)),
            }
        });
        out.push(Draft {
            at: conv.at + (i as i64) * rng.gen_range(600..172_800),
            from: from_i,
            to: to_i,
            cc,
            subject: subject_i,
            body,
            attachment,
            message_id: id.clone(),
            in_reply_to: ids.last().cloned(),
            references: ids.clone(),
            filer: lawyer.clone(),
            truth: conv.truth,
        });
        ids.push(id);
    }
}
