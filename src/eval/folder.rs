//! A real firm's history for `docket eval suggestions --dir DIR`: `DIR/records.csv`
//! (`kind,reference,title,client,contacts` with contacts separated by spaces),
//! `DIR/truth.csv` (`file,target,filer`: a `.eml` file under DIR, its true record as
//! `kind:reference`, and who files it), and the `.eml` files. Messages are replayed in
//! the order of their Date header (then file name).

use std::path::Path;

use anyhow::{bail, Context};

use super::{Case, Firm, RecordSpec};
use crate::directory::RecordKind;

pub fn load(dir: &Path, firm_domain: Option<&str>) -> anyhow::Result<Firm> {
    let mut records = Vec::new();
    let path = dir.join("records.csv");
    let mut rd =
        csv::Reader::from_path(&path).with_context(|| format!("cannot read {}", path.display()))?;
    for (i, row) in rd.records().enumerate() {
        let row = row.with_context(|| format!("{} row {}", path.display(), i + 2))?;
        let field = |k: usize| row.get(k).unwrap_or("").trim().to_string();
        let kind = field(0)
            .parse::<RecordKind>()
            .map_err(anyhow::Error::msg)
            .with_context(|| {
                format!(
                    "{} row {}: kind must be matter, case or contract",
                    path.display(),
                    i + 2
                )
            })?;
        records.push(RecordSpec {
            kind,
            reference: field(1),
            title: field(2),
            client: field(3),
            contacts: field(4).split_whitespace().map(str::to_string).collect(),
        });
    }
    let path = dir.join("truth.csv");
    let mut rd =
        csv::Reader::from_path(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut cases: Vec<(Option<time::OffsetDateTime>, String, Case)> = Vec::new();
    let mut users: Vec<String> = Vec::new();
    for (i, row) in rd.records().enumerate() {
        let row = row.with_context(|| format!("{} row {}", path.display(), i + 2))?;
        let (file, truth, filer) = (
            row.get(0).unwrap_or("").trim().to_string(),
            row.get(1).unwrap_or("").trim().to_string(),
            row.get(2).unwrap_or("").trim().to_lowercase(),
        );
        if file.is_empty() || truth.is_empty() || filer.is_empty() {
            bail!(
                "{} row {}: file, target and filer are all needed",
                path.display(),
                i + 2
            );
        }
        let raw = std::fs::read(dir.join(&file)).with_context(|| format!("cannot read {file}"))?;
        let date = date_of(&raw);
        if !users.contains(&filer) {
            users.push(filer.clone());
        }
        cases.push((date, file, Case { raw, filer, truth }));
    }
    cases.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    let domain = match firm_domain {
        Some(d) => d.to_lowercase(),
        None => users
            .first()
            .and_then(|u| u.rsplit_once('@'))
            .map(|(_, d)| d.to_string())
            .context("truth.csv names no filer")?,
    };
    Ok(Firm {
        domain,
        users,
        records,
        cases: cases.into_iter().map(|c| c.2).collect(),
    })
}

/// The message's Date header, if it has a readable one.
fn date_of(raw: &[u8]) -> Option<time::OffsetDateTime> {
    let msg = mail_parser::MessageParser::default().parse_headers(raw)?;
    let d = msg.date()?;
    time::OffsetDateTime::from_unix_timestamp(d.to_timestamp()).ok()
}
