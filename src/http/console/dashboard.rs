//! The console's home page: a dashboard of the firm — counts, what waits for an admin, the
//! audit chain, the last backup, and a chart of filings per week drawn server-side as SVG
//! (no script).

use askama::Template;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use sqlx::{AnyPool, Row};
use time::{Duration, OffsetDateTime};

use super::{render, Chrome, ConsoleCtx};
use crate::error::{AppError, AppResult};
use crate::http::AppState;

/// Weeks the chart shows, the current one last.
pub const CHART_WEEKS: usize = 12;

/// One number on the dashboard, with where to see more.
pub struct Count {
    pub label: &'static str,
    pub value: i64,
    pub detail: String,
    pub href: &'static str,
}

#[derive(Template)]
#[template(path = "console/home.html")]
struct Home {
    chrome: Chrome,
    counts: Vec<Count>,
    pending_resets: i64,
    chain: crate::http::admin::browse::ChainReport,
    last_backup: Option<String>,
    backup_failing: bool,
    /// The filings-per-week chart, as an SVG element (built from numbers and dates only).
    chart: String,
    /// The chart's numbers as text, for screen readers and copying.
    weeks: Vec<(String, i64)>,
}

async fn count(pool: &AnyPool, sql: &str) -> AppResult<i64> {
    Ok(sqlx::query(sql).fetch_one(pool).await?.get(0))
}

pub async fn home(State(state): State<AppState>, ctx: ConsoleCtx) -> AppResult<Response> {
    let db = &ctx.tenant.db;
    let week_ago = crate::time_fmt::format_utc(OffsetDateTime::now_utc() - Duration::days(7));
    let recent: i64 = sqlx::query("SELECT COUNT(*) FROM filings WHERE filed_at >= $1")
        .bind(&week_ago)
        .fetch_one(db)
        .await?
        .get(0);
    let users = count(
        db,
        "SELECT COUNT(*) FROM users WHERE id <> 'system' AND status = 'active'",
    );
    let open = count(db, "SELECT COUNT(*) FROM records WHERE status = 'open'");
    let closed = count(db, "SELECT COUNT(*) FROM records WHERE status <> 'open'");
    let counts = vec![
        Count {
            label: "Active users",
            value: users.await?,
            detail: String::new(),
            href: "/console/users",
        },
        Count {
            label: "Open records",
            value: open.await?,
            detail: format!("{} closed", closed.await?),
            href: "/console/records",
        },
        Count {
            label: "Filings",
            value: count(db, "SELECT COUNT(*) FROM filings").await?,
            detail: format!("{recent} in the last 7 days"),
            href: "/console/filings",
        },
    ];
    let pending_resets = count(
        db,
        "SELECT COUNT(*) FROM reset_requests WHERE status = 'open'",
    )
    .await?;
    let chain = crate::http::admin::browse::chain_report(&state.catalog, &ctx.tenant).await?;
    let backups = crate::backup::status(&state.catalog)
        .await
        .map_err(AppError::internal)?;
    let mine = backups.into_iter().find(|b| b.tenant_id == ctx.tenant.id);
    let weeks = filings_per_week(db, OffsetDateTime::now_utc()).await?;
    Ok(render(&Home {
        chrome: Chrome::new(&ctx, "home"),
        counts,
        pending_resets,
        chain,
        last_backup: mine
            .as_ref()
            .and_then(|b| b.last_backup.as_deref())
            .map(|at| crate::time_fmt::human_in(at, &ctx.tz)),
        backup_failing: mine.is_some_and(|b| b.backup_failing),
        chart: bar_chart(&weeks),
        weeks,
    })
    .into_response())
}

/// Filings per week (Monday to Sunday, UTC) for the last [`CHART_WEEKS`] weeks up to `now`,
/// oldest first, each labelled with its Monday (`16 Nov`).
pub async fn filings_per_week(
    pool: &AnyPool,
    now: OffsetDateTime,
) -> AppResult<Vec<(String, i64)>> {
    let today = now.date();
    let monday = today - Duration::days(i64::from(today.weekday().number_days_from_monday()));
    let first = monday - Duration::weeks(CHART_WEEKS as i64 - 1);
    let since = format!("{first}T00:00:00.000Z");
    let rows = sqlx::query(
        "SELECT SUBSTR(filed_at, 1, 10) AS day, COUNT(*) FROM filings WHERE filed_at >= $1 GROUP BY SUBSTR(filed_at, 1, 10)",
    )
    .bind(&since)
    .fetch_all(pool)
    .await?;
    let mut weeks: Vec<(String, i64)> = (0..CHART_WEEKS)
        .map(|i| (short_date(first + Duration::weeks(i as i64)), 0))
        .collect();
    for r in rows {
        let (day, n): (String, i64) = (r.get(0), r.get(1));
        let Ok(d) = time::Date::parse(
            &day,
            time::macros::format_description!("[year]-[month]-[day]"),
        ) else {
            continue;
        };
        let i = ((d - first).whole_days() / 7) as usize;
        if let Some(w) = weeks.get_mut(i) {
            w.1 += n;
        }
    }
    Ok(weeks)
}

fn short_date(d: time::Date) -> String {
    format!("{} {}", d.day(), &format!("{:?}", d.month())[..3])
}

/// A bar chart of `weeks` as an inline SVG: one bar per week with its count above and its
/// Monday below. Only numbers and dates go in, so nothing needs escaping.
pub fn bar_chart(weeks: &[(String, i64)]) -> String {
    const W: i64 = 56;
    const H: i64 = 120;
    let max = weeks.iter().map(|w| w.1).max().unwrap_or(0).max(1);
    let width = W * weeks.len() as i64;
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {width} 170\" width=\"100%\" role=\"img\" \
         aria-label=\"Filings per week, last {} weeks\" xmlns=\"http://www.w3.org/2000/svg\">",
        weeks.len()
    );
    for (i, (label, n)) in weeks.iter().enumerate() {
        let h = n * H / max;
        let x = i as i64 * W + 8;
        let y = 20 + H - h;
        svg += &format!(
            "<rect x=\"{x}\" y=\"{y}\" width=\"{}\" height=\"{h}\" fill=\"#0b57d0\" rx=\"3\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"middle\" fill=\"#1f2328\">{n}</text>\
             <text x=\"{}\" y=\"162\" font-size=\"11\" text-anchor=\"middle\" fill=\"#59636e\">{label}</text>",
            W - 16,
            x + (W - 16) / 2,
            y - 4,
            x + (W - 16) / 2,
        );
    }
    svg + "</svg>"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_has_one_bar_per_week_scaled_to_the_busiest() {
        let weeks = vec![
            ("2 Nov".to_string(), 0),
            ("9 Nov".into(), 5),
            ("16 Nov".into(), 10),
        ];
        let svg = bar_chart(&weeks);
        assert_eq!(svg.matches("<rect").count(), 3);
        assert!(
            svg.contains("height=\"120\""),
            "the busiest week is full height: {svg}"
        );
        assert!(
            svg.contains("height=\"60\""),
            "half as busy, half as high: {svg}"
        );
        assert!(svg.contains(">16 Nov</text>") && svg.contains(">10</text>"));
        assert!(!bar_chart(&[("1 Jan".into(), 0)]).contains("NaN"));
    }
}
