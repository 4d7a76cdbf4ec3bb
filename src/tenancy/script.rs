//! Writes collected during a piece of a group commit ([`super::group`]) and sent to the
//! database together when the piece is done.
//!
//! Why: each statement sent through sqlx is a round trip to the connection's worker thread,
//! and under load each round trip waits for that thread, then for the task, to be scheduled.
//! Inside the group commit every such wait holds up every filing queued behind the batch.
//! On SQLite the collected statements go as one multi-statement query (sqlx-sqlite binds
//! `$n` by its absolute position across the statements of one query, so each statement's
//! placeholders are renumbered after the ones before); SQLite stops at the first statement
//! that fails, and the piece's savepoint takes back the ones before it. On PostgreSQL, which
//! takes one statement per prepared query, they are sent one after the other.

use sqlx::Executor;

use super::db::{Backend, Tx};

/// One bound value.
#[derive(Debug, Clone)]
pub enum Arg {
    Text(Option<String>),
    Int(i64),
}

impl From<&str> for Arg {
    fn from(s: &str) -> Arg {
        Arg::Text(Some(s.to_string()))
    }
}
impl From<String> for Arg {
    fn from(s: String) -> Arg {
        Arg::Text(Some(s))
    }
}
impl From<&String> for Arg {
    fn from(s: &String) -> Arg {
        Arg::Text(Some(s.clone()))
    }
}
impl From<Option<String>> for Arg {
    fn from(s: Option<String>) -> Arg {
        Arg::Text(s)
    }
}
impl From<Option<&str>> for Arg {
    fn from(s: Option<&str>) -> Arg {
        Arg::Text(s.map(str::to_string))
    }
}
impl From<i64> for Arg {
    fn from(n: i64) -> Arg {
        Arg::Int(n)
    }
}

/// Statements (`$1`… numbered within each) and their values, in order.
#[derive(Debug, Default)]
pub struct Script {
    statements: Vec<(&'static str, Vec<Arg>)>,
}

impl Script {
    /// Adds a statement whose placeholders are `$1`…`$n`, one per value of `args`.
    pub fn push(&mut self, sql: &'static str, args: Vec<Arg>) {
        self.statements.push((sql, args));
    }

    pub fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }

    pub fn clear(&mut self) {
        self.statements.clear();
    }

    /// Sends the statements, then `then` (a statement without values), and empties the
    /// script. The first error stops it; what ran before is not undone here.
    pub async fn run(&mut self, tx: &mut Tx, backend: Backend, then: &str) -> sqlx::Result<()> {
        let statements = std::mem::take(&mut self.statements);
        match backend {
            Backend::Sqlite => {
                let (sql, args) = joined(&statements, then);
                bind(sqlx::query(&sql), &args).execute(&mut **tx).await?;
            }
            Backend::Postgres => {
                for (sql, args) in &statements {
                    bind(sqlx::query(sql), args).execute(&mut **tx).await?;
                }
                if !then.is_empty() {
                    tx.execute(then).await?;
                }
            }
        }
        Ok(())
    }
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

fn bind<'q>(mut q: AnyQuery<'q>, args: &[Arg]) -> AnyQuery<'q> {
    for a in args {
        q = match a {
            Arg::Text(t) => q.bind(t.clone()),
            Arg::Int(n) => q.bind(*n),
        };
    }
    q
}

/// One query of all the statements, each one's `$k` renumbered after the values before it.
fn joined(statements: &[(&'static str, Vec<Arg>)], then: &str) -> (String, Vec<Arg>) {
    let mut sql = String::new();
    let mut args = Vec::new();
    for (one, values) in statements {
        sql.push_str(&renumbered(one, args.len()));
        sql.push_str(";\n");
        args.extend(values.iter().cloned());
    }
    sql.push_str(then);
    (sql, args)
}

/// `sql` with every placeholder `$k` written `$(k + offset)`.
fn renumbered(sql: &str, offset: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut rest = sql;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..=i]);
        rest = &rest[i + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        match rest[..digits].parse::<usize>() {
            Ok(k) => out.push_str(&(k + offset).to_string()),
            Err(_) => out.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Row;

    async fn count(tx: &mut Tx, sql: &str) -> i64 {
        sqlx::query(sql).fetch_one(&mut **tx).await.unwrap().get(0)
    }

    #[test]
    fn placeholders_are_renumbered_after_the_statements_before() {
        assert_eq!(
            renumbered("VALUES ($1, $2, $10)", 3),
            "VALUES ($4, $5, $13)"
        );
        assert_eq!(renumbered("no values", 7), "no values");
        let s = [
            (
                "INSERT INTO a VALUES ($1, $2)",
                vec![Arg::Int(1), Arg::Int(2)],
            ),
            (
                "INSERT INTO b VALUES ($2, $1)",
                vec![Arg::Int(3), Arg::Int(4)],
            ),
        ];
        let (sql, args) = joined(&s, "RELEASE x");
        assert_eq!(
            sql,
            "INSERT INTO a VALUES ($1, $2);\nINSERT INTO b VALUES ($4, $3);\nRELEASE x"
        );
        assert_eq!(args.len(), 4);
    }

    /// The whole script reaches SQLite, values in their places, in one query; a failing
    /// statement stops it with an error.
    #[tokio::test]
    async fn a_script_runs_every_statement_with_its_own_values() {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::tenancy::db::open_sqlite(&dir.path().join("t.db"), 2, 1000)
            .await
            .unwrap();
        pool.execute("CREATE TABLE t (k TEXT PRIMARY KEY, n BIGINT, o TEXT)")
            .await
            .unwrap();
        let mut tx = crate::tenancy::db::begin(&pool).await.unwrap();
        let mut script = Script::default();
        let sql = "INSERT INTO t (k, n, o) VALUES ($1, $2, $3)";
        script.push(sql, vec!["a".into(), 1.into(), Arg::Text(None)]);
        script.push(sql, vec!["b".into(), 2.into(), "x".into()]);
        script.run(&mut tx, Backend::Sqlite, "").await.unwrap();
        assert!(script.is_empty());
        let sum = "SELECT SUM(n) FROM t WHERE (k = 'a' AND o IS NULL) OR (k = 'b' AND o = 'x')";
        assert_eq!(count(&mut tx, sum).await, 3);
        script.push(sql, vec!["c".into(), 3.into(), Arg::Text(None)]);
        script.push(sql, vec!["a".into(), 4.into(), Arg::Text(None)]);
        script.push(sql, vec!["d".into(), 5.into(), Arg::Text(None)]);
        assert!(script.run(&mut tx, Backend::Sqlite, "").await.is_err());
        let after = "SELECT COUNT(*) FROM t WHERE k = 'd'";
        assert_eq!(count(&mut tx, after).await, 0, "stopped at the error");
    }
}
