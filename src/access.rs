//! Record visibility: teams, firm-wide records and ethical walls. The one place that decides
//! whether a user may see a record (and so its filings):
//!
//! - an `excluded` row in `record_access` for the user, or for any group the user belongs
//!   to, hides the record (an ethical wall beats every grant, firm-wide included);
//! - otherwise the record is visible when it is firm-wide, or when a `member` row names the
//!   user or one of the user's groups.
//!
//! Admins get no bypass: an admin walled off a record sees neither it in the add-on nor its
//! filings (the admin catalogue still shows the record's metadata so it can be managed).
//!
//! Also the reading and writing of a record's team (`record_access` rows).

use std::collections::BTreeSet;

use sqlx::{AnyConnection, AnyPool, Row};

use crate::error::{AppError, AppResult};

/// The user automatic filing (routing rules) acts as; it is not a person and is never
/// walled off (admins choose rule targets).
pub const SYSTEM_USER: &str = "system";

/// An SQL condition, true when the record aliased `record_alias` is visible to the user
/// whose id is bound as `$user_param`. Usable inside any query over `records`.
pub fn visible_sql(record_alias: &str, user_param: usize) -> String {
    let r = record_alias;
    let p = format!("${user_param}");
    let principal = |a: &str| {
        format!(
            "(({a}.principal_kind = 'user' AND {a}.principal_id = {p}) OR \
             ({a}.principal_kind = 'group' AND {a}.principal_id IN \
             (SELECT acc_gm.group_id FROM group_members acc_gm WHERE acc_gm.user_id = {p})))"
        )
    };
    format!(
        "(NOT EXISTS (SELECT 1 FROM record_access acc_x WHERE acc_x.record_id = {r}.id \
         AND acc_x.effect = 'excluded' AND {}) \
         AND ({r}.firm_wide = 1 OR EXISTS (SELECT 1 FROM record_access acc_m \
         WHERE acc_m.record_id = {r}.id AND acc_m.effect = 'member' AND {})))",
        principal("acc_x"),
        principal("acc_m")
    )
}

/// Whether `user_id` may see record `record_id` (false for unknown records).
pub async fn can_see(pool: &AnyPool, user_id: &str, record_id: &str) -> AppResult<bool> {
    Ok(sqlx::query(&format!(
        "SELECT 1 FROM records r WHERE r.id = $1 AND {}",
        visible_sql("r", 2)
    ))
    .bind(record_id)
    .bind(user_id)
    .fetch_optional(pool)
    .await?
    .is_some())
}

/// Whether `user_id` may see the record filing `filing_id` belongs to (false when unknown).
pub async fn can_see_filing(pool: &AnyPool, user_id: &str, filing_id: &str) -> AppResult<bool> {
    Ok(sqlx::query(&format!(
        "SELECT 1 FROM filings f JOIN records r ON r.id = f.record_id WHERE f.id = $1 AND {}",
        visible_sql("r", 2)
    ))
    .bind(filing_id)
    .bind(user_id)
    .fetch_optional(pool)
    .await?
    .is_some())
}

/// `user` or `group`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum PrincipalKind {
    User,
    Group,
}

impl PrincipalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::User => "user",
            PrincipalKind::Group => "group",
        }
    }
    fn parse(s: &str) -> Option<PrincipalKind> {
        match s {
            "user" => Some(PrincipalKind::User),
            "group" => Some(PrincipalKind::Group),
            _ => None,
        }
    }
}

/// A user or group named in a record's team.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    pub kind: PrincipalKind,
    pub id: String,
}

/// A principal as shown: with the user's email or the group's name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct NamedPrincipal {
    pub kind: PrincipalKind,
    pub id: String,
    /// The user's email, or the group's name.
    pub name: String,
}

/// Who may see a record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Team {
    pub firm_wide: bool,
    pub members: Vec<NamedPrincipal>,
    pub excluded: Vec<NamedPrincipal>,
}

impl Team {
    /// The essentials for audit details.
    pub fn audit_json(&self) -> serde_json::Value {
        let names = |l: &[NamedPrincipal]| -> Vec<String> {
            l.iter()
                .map(|p| format!("{}:{}", p.kind.as_str(), p.name))
                .collect()
        };
        serde_json::json!({
            "firm_wide": self.firm_wide,
            "members": names(&self.members),
            "excluded": names(&self.excluded),
        })
    }
}

/// A record's team, read inside a transaction or on a connection.
pub async fn team_of(conn: &mut AnyConnection, record_id: &str) -> AppResult<Team> {
    let firm_wide: i64 = sqlx::query("SELECT firm_wide FROM records WHERE id = $1")
        .bind(record_id)
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| r.get(0))
        .unwrap_or(1);
    let rows = sqlx::query(
        "SELECT a.principal_kind, a.principal_id, a.effect, COALESCE(u.email, g.name, a.principal_id) \
         FROM record_access a \
         LEFT JOIN users u ON a.principal_kind = 'user' AND u.id = a.principal_id \
         LEFT JOIN groups g ON a.principal_kind = 'group' AND g.id = a.principal_id \
         WHERE a.record_id = $1 ORDER BY a.principal_kind DESC, 4",
    )
    .bind(record_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut team = Team {
        firm_wide: firm_wide != 0,
        members: Vec::new(),
        excluded: Vec::new(),
    };
    for r in rows {
        let kind: String = r.get(0);
        let Some(kind) = PrincipalKind::parse(&kind) else {
            continue;
        };
        let p = NamedPrincipal {
            kind,
            id: r.get(1),
            name: r.get(3),
        };
        if r.get::<String, _>(2) == "excluded" {
            team.excluded.push(p);
        } else {
            team.members.push(p);
        }
    }
    Ok(team)
}

/// Checks a team change: no principal both member and excluded, every id known.
pub async fn validate_team(
    conn: &mut AnyConnection,
    members: &[Principal],
    excluded: &[Principal],
) -> AppResult<()> {
    let m: BTreeSet<&Principal> = members.iter().collect();
    if let Some(both) = excluded.iter().find(|p| m.contains(p)) {
        return Err(AppError::unprocessable(
            "member-and-excluded",
            format!(
                "{} {} cannot be both a member and excluded",
                both.kind.as_str(),
                both.id
            ),
        ));
    }
    for p in members.iter().chain(excluded) {
        let sql = match p.kind {
            PrincipalKind::User => "SELECT 1 FROM users WHERE id = $1 AND id <> 'system'",
            PrincipalKind::Group => "SELECT 1 FROM groups WHERE id = $1",
        };
        if sqlx::query(sql)
            .bind(&p.id)
            .fetch_optional(&mut *conn)
            .await?
            .is_none()
        {
            return Err(AppError::unprocessable(
                match p.kind {
                    PrincipalKind::User => "unknown-user",
                    PrincipalKind::Group => "unknown-group",
                },
                format!("there is no {} with id {:?}", p.kind.as_str(), p.id),
            ));
        }
    }
    Ok(())
}

/// Replaces a record's team rows and firm-wide flag (inside the caller's transaction; the
/// caller validates with [`validate_team`] and audits).
pub async fn write_team(
    conn: &mut AnyConnection,
    record_id: &str,
    firm_wide: bool,
    members: &[Principal],
    excluded: &[Principal],
) -> AppResult<()> {
    sqlx::query("UPDATE records SET firm_wide = $1 WHERE id = $2")
        .bind(firm_wide as i64)
        .bind(record_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM record_access WHERE record_id = $1")
        .bind(record_id)
        .execute(&mut *conn)
        .await?;
    let members: BTreeSet<&Principal> = members.iter().collect();
    let excluded: BTreeSet<&Principal> = excluded.iter().collect();
    for (effect, list) in [("member", &members), ("excluded", &excluded)] {
        for p in list.iter() {
            sqlx::query(
                "INSERT INTO record_access (record_id, principal_kind, principal_id, effect) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(record_id)
            .bind(p.kind.as_str())
            .bind(&p.id)
            .bind(effect)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_sql_uses_the_alias_and_parameter() {
        let s = visible_sql("rec", 7);
        assert!(s.contains("rec.id") && s.contains("rec.firm_wide = 1"));
        assert!(s.contains("$7") && !s.contains("$1"));
    }
}
