//! `docket eval suggestions`: replays a firm's mail history in time order through the
//! suggestion model — for each message it asks for suggestions as the filer would
//! (`suggest::context`, what `POST /v1/addon/context` answers), then files the message to
//! its true record (`filing::file_message`) — and reports how often the true record came
//! first, in the top three, or not at all, by category, with the confidence calibration.
//! The history is a seeded synthetic firm ([`synth`]) or a folder of `.eml` files with a
//! truth file ([`folder`]).

pub mod folder;
pub mod synth;

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;

use crate::directory::{self, RecordKind, Role};
use crate::filing::{AttachmentSelection, FilingInput, TargetRef};
use crate::suggest::{self, MessageFacts};

/// A record of the replayed firm.
#[derive(Debug, Clone)]
pub struct RecordSpec {
    pub kind: RecordKind,
    pub reference: String,
    pub title: String,
    pub client: String,
    /// Addresses and domains.
    pub contacts: Vec<String>,
}

/// One message of the history: its bytes, who files it, and where it belongs
/// (`kind:reference`).
#[derive(Debug, Clone)]
pub struct Case {
    pub raw: Vec<u8>,
    pub filer: String,
    pub truth: String,
}

/// A firm's history, in the order it is replayed.
#[derive(Debug, Clone)]
pub struct Firm {
    /// The firm's own mail domain.
    pub domain: String,
    /// Everyone who files (each becomes a filer).
    pub users: Vec<String>,
    pub records: Vec<RecordSpec>,
    pub cases: Vec<Case>,
}

/// Which kind of message a case is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Category {
    FirstWithoutReference,
    FirstWithReference,
    ReplyWithoutReference,
    ReplyWithReference,
}

impl Category {
    pub fn label(self) -> &'static str {
        match self {
            Category::FirstWithoutReference => "first message, no reference",
            Category::FirstWithReference => "first message, reference",
            Category::ReplyWithoutReference => "reply, no reference",
            Category::ReplyWithReference => "reply, reference",
        }
    }
}

/// Each suggestion shown: its score, its lead over the best other, its confidence, and
/// whether it was the true record.
#[derive(Debug, Clone, Copy)]
pub struct Shown {
    pub score: f64,
    pub lead: f64,
    pub confidence: f64,
    pub right: bool,
}

/// Where the true record came for one message (`None`: not suggested).
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub category: Category,
    pub rank: Option<usize>,
    pub suggested: bool,
}

#[derive(Debug, Default)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
    pub shown: Vec<Shown>,
    /// Messages whose true record was not first: what was asked and what came.
    pub misses: Vec<String>,
}

/// Replays `firm` into a fresh SQLite tenant under `dir` (embedded default: SQLite and
/// local files), as [`Report`].
pub async fn replay(firm: &Firm, dir: &std::path::Path) -> anyhow::Result<Report> {
    let mut config = crate::Config {
        data_dir: dir.to_path_buf(),
        ..Default::default()
    };
    config.database = Default::default();
    let (key, _) = crate::storage::crypto::Key::generate();
    let catalog = crate::app::open_catalog(&config, key).await?;
    let info = catalog
        .create_tenant("Replayed firm", std::slice::from_ref(&firm.domain), "eval")
        .await?;
    let tenant = catalog.tenant(&info.id).await?;
    let mut users = BTreeMap::new();
    for email in &firm.users {
        let u = directory::add_user(&tenant.db, email, email, Role::Filer, "eval").await?;
        users.insert(email.clone(), u);
    }
    for r in &firm.records {
        directory::add_record(
            &tenant.db,
            r.kind,
            &r.reference,
            &r.title,
            &r.client,
            &r.contacts,
            "eval",
        )
        .await
        .map_err(|e| anyhow::anyhow!("record {}: {e}", r.reference))?;
    }
    let pattern = suggest::subject_pattern(&tenant.db).await?;
    let mut report = Report::default();
    for (i, case) in firm.cases.iter().enumerate() {
        let user = users
            .get(&case.filer)
            .with_context(|| format!("message {i}: filer {} is not a user", case.filer))?;
        let outcome = ask_and_file(
            &tenant,
            &config,
            user,
            case,
            std::slice::from_ref(&firm.domain),
            &pattern,
            &mut report,
        )
        .await
        .with_context(|| format!("message {i} ({})", case.truth))?;
        report.outcomes.push(outcome);
    }
    catalog.close().await;
    Ok(report)
}

async fn ask_and_file(
    tenant: &Arc<crate::tenancy::Tenant>,
    config: &crate::Config,
    user: &directory::User,
    case: &Case,
    own: &[String],
    pattern: &regex::Regex,
    report: &mut Report,
) -> anyhow::Result<Outcome> {
    let parsed =
        crate::mail::parse(&case.raw, &config.limits).map_err(|e| anyhow::anyhow!("{e}"))?;
    let facts = MessageFacts {
        message: &parsed,
        dedup_key: &parsed.dedup_key,
        gmail_thread_id: None,
        own_domains: own,
        raw: &case.raw,
    };
    let ctx = suggest::context(&tenant.db, user, &facts).await?;
    let rank = ctx
        .suggestions
        .iter()
        .position(|s| s.target.target() == case.truth);
    let scores: Vec<f64> = ctx.suggestions.iter().map(|s| s.score).collect();
    for (i, s) in ctx.suggestions.iter().enumerate() {
        let other = scores
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, v)| *v)
            .fold(0.0, f64::max);
        report.shown.push(Shown {
            score: s.score,
            lead: s.score - other,
            confidence: s.confidence,
            right: s.target.target() == case.truth,
        });
    }
    if rank != Some(0) {
        report
            .misses
            .push(describe_miss(&parsed, case, rank, &ctx.suggestions));
    }
    let reply = !parsed.in_reply_to.is_empty() || !parsed.references.is_empty();
    let referenced = parsed
        .subject
        .as_deref()
        .is_some_and(|s| pattern.is_match(s));
    let category = match (reply, referenced) {
        (false, false) => Category::FirstWithoutReference,
        (false, true) => Category::FirstWithReference,
        (true, false) => Category::ReplyWithoutReference,
        (true, true) => Category::ReplyWithReference,
    };
    let target =
        TargetRef::parse(&case.truth).with_context(|| format!("bad target {}", case.truth))?;
    crate::filing::file_message(
        tenant,
        &config.limits,
        user,
        FilingInput {
            raw: case.raw.clone(),
            gmail_message_id: None,
            gmail_thread_id: None,
            targets: vec![target],
            attachments: AttachmentSelection::All,
            note: None,
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("filing: {e}"))?;
    Ok(Outcome {
        category,
        rank,
        suggested: !ctx.suggestions.is_empty(),
    })
}

fn describe_miss(
    p: &crate::mail::ParsedMessage,
    case: &Case,
    rank: Option<usize>,
    got: &[suggest::Suggestion],
) -> String {
    let addrs = |v: &[crate::mail::Mailbox]| {
        v.iter()
            .filter_map(|b| b.address.clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = format!(
        "{:?} from {} to {} — truth {} ({})\n",
        p.subject.as_deref().unwrap_or(""),
        addrs(&p.from),
        addrs(&p.to),
        case.truth,
        rank.map_or("not suggested".to_string(), |r| format!("ranked {}", r + 1))
    );
    for s in got.iter().take(3) {
        out.push_str(&format!(
            "      {} {:.2} ({:.2}): {}\n",
            s.target.target(),
            s.score,
            s.confidence,
            s.reasons.join("; ")
        ));
    }
    out
}

/// Top-1, top-3 and "no suggestion" rates over `outcomes`, in percent, and their count.
pub fn rates(outcomes: &[&Outcome]) -> (f64, f64, f64, usize) {
    let n = outcomes.len().max(1) as f64;
    let pct = |k: usize| 100.0 * k as f64 / n;
    let top1 = outcomes.iter().filter(|o| o.rank == Some(0)).count();
    let top3 = outcomes
        .iter()
        .filter(|o| o.rank.is_some_and(|r| r < 3))
        .count();
    let none = outcomes.iter().filter(|o| !o.suggested).count();
    (pct(top1), pct(top3), pct(none), outcomes.len())
}

impl Report {
    /// The report as text: rates overall and by category, then calibration by confidence.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let line = |label: &str, os: &[&Outcome]| {
            let (t1, t3, none, n) = rates(os);
            format!("  {label:<30} {n:>6}  top-1 {t1:5.1}%  top-3 {t3:5.1}%  none {none:5.1}%\n")
        };
        let all: Vec<&Outcome> = self.outcomes.iter().collect();
        out.push_str(&line("all mail", &all));
        for c in [
            Category::FirstWithoutReference,
            Category::FirstWithReference,
            Category::ReplyWithoutReference,
            Category::ReplyWithReference,
        ] {
            let os: Vec<&Outcome> = self.outcomes.iter().filter(|o| o.category == c).collect();
            out.push_str(&line(c.label(), &os));
        }
        out.push_str("  calibration (every suggestion shown):\n");
        for (lo, hi) in [(0.0, 0.5), (0.5, 0.7), (0.7, 0.9), (0.9, 1.01)] {
            let bin: Vec<&Shown> = self
                .shown
                .iter()
                .filter(|s| s.confidence >= lo && s.confidence < hi)
                .collect();
            let right = bin.iter().filter(|s| s.right).count();
            let mean = bin.iter().map(|s| s.confidence).sum::<f64>() / bin.len().max(1) as f64;
            out.push_str(&format!(
                "    confidence {lo:.1}–{:.1}: {:>6} shown, mean confidence {mean:.3}, right {:5.1}%\n",
                hi.min(1.0),
                bin.len(),
                100.0 * right as f64 / bin.len().max(1) as f64
            ));
        }
        let likely: Vec<&Shown> = self.shown.iter().filter(|s| s.confidence >= 0.9).collect();
        let right = likely.iter().filter(|s| s.right).count();
        out.push_str(&format!(
            "  shown as \"likely\" (confidence ≥ 0.9): {} of {} right ({:.1}%)\n",
            right,
            likely.len(),
            100.0 * right as f64 / likely.len().max(1) as f64
        ));
        out
    }

    /// Fits `confidence = σ(A + B·score + C·lead)` to the suggestions shown by logistic
    /// regression (Newton's method), as (A, B, C).
    pub fn fit(&self) -> (f64, f64, f64) {
        fit_logistic(&self.shown)
    }
}

/// Logistic regression of `right` on (1, score, lead) by Newton–Raphson with a small ridge
/// term (so separable data still converges).
pub fn fit_logistic(samples: &[Shown]) -> (f64, f64, f64) {
    let mut w = [0.0f64; 3];
    for _ in 0..50 {
        let mut g = [0.0f64; 3];
        let mut h = [[0.0f64; 3]; 3];
        for s in samples {
            let x = [1.0, s.score, s.lead];
            let z: f64 = (0..3).map(|i| w[i] * x[i]).sum();
            let p = 1.0 / (1.0 + (-z).exp());
            let y = if s.right { 1.0 } else { 0.0 };
            for i in 0..3 {
                g[i] += (p - y) * x[i];
                for j in 0..3 {
                    h[i][j] += p * (1.0 - p) * x[i] * x[j];
                }
            }
        }
        for i in 0..3 {
            g[i] += 1e-3 * w[i];
            h[i][i] += 1e-3;
        }
        let step = solve3(h, g);
        for i in 0..3 {
            w[i] -= step[i];
        }
    }
    (w[0], w[1], w[2])
}

/// Solves the 3×3 system `a·x = b` (Cramer's rule).
fn solve3(a: [[f64; 3]; 3], b: [f64; 3]) -> [f64; 3] {
    let det = |m: [[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let d = det(a);
    if d.abs() < 1e-12 {
        return [0.0; 3];
    }
    let mut x = [0.0; 3];
    for (k, xk) in x.iter_mut().enumerate() {
        let mut m = a;
        for i in 0..3 {
            m[i][k] = b[i];
        }
        *xk = det(m) / d;
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small synthetic firm replayed end to end: every reply and every referenced
    /// message has its record first, most first messages do, and the numbers add up.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_synthetic_firm_replays_with_replies_and_references_first() {
        let firm = synth::firm(
            7,
            synth::Shape {
                records: 12,
                messages: 150,
            },
        );
        assert_eq!(firm.cases.len(), 150);
        assert_eq!(
            synth::firm(
                7,
                synth::Shape {
                    records: 12,
                    messages: 150
                }
            )
            .cases[42]
                .raw,
            firm.cases[42].raw
        );
        let dir = tempfile::tempdir().unwrap();
        let report = replay(&firm, dir.path()).await.unwrap();
        assert_eq!(report.outcomes.len(), 150);
        for c in [
            Category::ReplyWithoutReference,
            Category::ReplyWithReference,
            Category::FirstWithReference,
        ] {
            let os: Vec<&Outcome> = report.outcomes.iter().filter(|o| o.category == c).collect();
            assert!(!os.is_empty(), "{c:?}");
            assert_eq!(rates(&os).0, 100.0, "{c:?}: {}", report.render());
        }
        let all: Vec<&Outcome> = report.outcomes.iter().collect();
        assert!(rates(&all).0 > 70.0, "{}", report.render());
        assert!(report.render().contains("shown as \"likely\""));
    }

    /// A real history: records.csv, truth.csv and .eml files, replayed in Date order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_folder_of_eml_files_with_a_truth_file_replays() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("records.csv"),
            "kind,reference,title,client,contacts\nmatter,M-1,Northwind lease,Northwind,northwind.example\ncase,C-2,Contoso v. Fabrikam,Contoso,\n",
        )
        .unwrap();
        let eml = |from: &str, subject: &str, id: &str, date: &str, reply: &str| {
            format!("From: {from}\r\nTo: ann@firm.example\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\nDate: {date}\r\n{reply}\r\nHi\r\n")
        };
        std::fs::write(
            d.join("b.eml"),
            eml(
                "x@northwind.example",
                "Re: lease",
                "b@x",
                "Tue, 2 Jan 2024 10:00:00 +0000",
                "In-Reply-To: <a@x>",
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("a.eml"),
            eml(
                "x@northwind.example",
                "lease",
                "a@x",
                "Mon, 1 Jan 2024 10:00:00 +0000",
                "X-A: 1",
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("c.eml"),
            eml(
                "y@contoso.example",
                "Contoso v. Fabrikam",
                "c@x",
                "Wed, 3 Jan 2024 10:00:00 +0000",
                "X-A: 1",
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("truth.csv"),
            "file,target,filer\nb.eml,matter:M-1,Ann@firm.example\na.eml,matter:M-1,ann@firm.example\nc.eml,case:C-2,ann@firm.example\n",
        )
        .unwrap();
        let firm = folder::load(d, None).unwrap();
        assert_eq!(firm.domain, "firm.example");
        assert_eq!(firm.users, ["ann@firm.example"]);
        // In Date order: a (the first message), then its reply b.
        assert!(String::from_utf8_lossy(&firm.cases[0].raw).contains("<a@x>"));
        let work = tempfile::tempdir().unwrap();
        let report = replay(&firm, work.path()).await.unwrap();
        let ranks: Vec<Option<usize>> = report.outcomes.iter().map(|o| o.rank).collect();
        assert_eq!(ranks, [Some(0), Some(0), Some(0)], "{}", report.render());
        assert_eq!(report.outcomes[1].category, Category::ReplyWithoutReference);
        // A truth file naming a file that is not there says which.
        std::fs::write(
            d.join("truth.csv"),
            "file,target,filer\nmissing.eml,matter:M-1,ann@firm.example\n",
        )
        .unwrap();
        assert!(format!("{:#}", folder::load(d, None).unwrap_err()).contains("missing.eml"));
    }

    #[test]
    fn the_fit_recovers_a_known_logistic_curve() {
        // Scores 0..10; right exactly as often as σ(-3 + 0.6·score) says.
        let mut samples = Vec::new();
        for score10 in 0..=100 {
            let score = score10 as f64 / 10.0;
            let p = 1.0 / (1.0 + (-(-3.0 + 0.6 * score)).exp());
            let right = (p * 100.0).round() as usize;
            for k in 0..100 {
                samples.push(Shown {
                    score,
                    lead: 0.0,
                    confidence: 0.0,
                    right: k < right,
                });
            }
        }
        let (a, b, _) = fit_logistic(&samples);
        assert!((a + 3.0).abs() < 0.1 && (b - 0.6).abs() < 0.02, "{a} {b}");
    }
}
