//! Which files are docent-eval databases, decided by reading only: the schema a file holds must be
//! exactly what this binary's migrations make for the file's `user_version` (tables as tables,
//! with the same definitions; the same indexes; no trigger), plus views of this binary's view
//! names, which are never read (readers shadow them with temporary views, writers recreate
//! them). Anything else, a table named `runs` in another program's file or an `answers` that is
//! a view, is refused before a single write, the switch to WAL included.
//!
//! Every connection also runs with `trusted_schema` off, so no function a file's schema names
//! runs unless SQLite deems it harmless.

use super::embedded;
use crate::error::{usage, Error, Result};
use rusqlite::Connection;
use std::collections::BTreeSet;
use std::path::Path;

/// What a file's schema is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Identity {
    /// No schema yet (a new file).
    Empty,
    /// A docent-eval database this binary can read.
    Ours,
}

/// A schema object as compared: type, name, table, and its SQL without comments or runs of
/// white space (so that a comment edited in a migration file does not orphan older databases).
type Object = (String, String, String, Option<String>);

/// The schema a connection is opened on: `main`, or `part` (a shard database attached by
/// `merge`). A fixed name, never user input.
pub(super) type SchemaName = &'static str;

/// Before any read: functions named by a file's views, triggers, indexes and constraints run
/// only when SQLite marks them innocuous (<https://sqlite.org/pragma.html#pragma_trusted_schema>).
pub(super) fn distrust_schema(connection: &Connection) -> rusqlite::Result<()> {
    connection.execute_batch("PRAGMA trusted_schema = OFF;")
}

/// What schema `schema` of `connection` holds: empty, ours at a version this binary reads, or
/// refused (a usage error naming `path` and the first object that is not as expected).
pub(super) fn identify(
    connection: &Connection,
    schema: SchemaName,
    path: &Path,
    flag: &str,
) -> Result<Identity> {
    let shown = path.display();
    let not_sqlite = |e: rusqlite::Error| {
        usage(format!(
            "{flag}{shown}: not a SQLite database ({e}); give a docent-eval results database or a new file name"
        ))
    };
    let version: u32 = connection
        .query_row(&format!("PRAGMA {schema}.user_version"), [], |row| {
            row.get(0)
        })
        .map_err(not_sqlite)?;
    let latest = super::schema_version();
    if version > latest {
        return Err(Error::SchemaTooNew {
            path: path.to_path_buf(),
            found: version,
            supported: latest,
        }
        .into());
    }
    let found = objects(connection, schema).map_err(not_sqlite)?;
    if version == 0 && found.is_empty() {
        return Ok(Identity::Empty);
    }
    let difference = if version == 0 {
        Some("it has no docent-eval schema version".to_string())
    } else {
        let expected = expected_objects(version)?;
        first_difference(&found, &expected)
    };
    match difference {
        None => Ok(Identity::Ours),
        Some(difference) => Err(usage(format!(
            "{flag}{shown}: a SQLite database that docent-eval did not create, or whose schema was changed ({difference}); it is left untouched. Give a docent-eval results database or a new file name"
        ))),
    }
}

/// The objects of `schema`, with views reduced to their name (their SQL is never used).
fn objects(connection: &Connection, schema: SchemaName) -> rusqlite::Result<BTreeSet<Object>> {
    // sqlite_stat tables are what ANALYZE leaves (planner statistics, not code).
    let sql = format!(
        "SELECT type, name, tbl_name, sql FROM {schema}.sqlite_master
         WHERE name NOT IN ('sqlite_stat1', 'sqlite_stat4')"
    );
    let mut statement = connection.prepare(&sql)?;
    let rows = statement.query_map([], |row| {
        let kind: String = row.get(0)?;
        let sql: Option<String> = row.get(3)?;
        let sql = if kind == "view" {
            None
        } else {
            sql.as_deref().map(normalized)
        };
        Ok((kind, row.get(1)?, row.get(2)?, sql))
    })?;
    rows.collect()
}

/// What migrations 1..=`version` make, with this binary's views: built in memory.
fn expected_objects(version: u32) -> Result<BTreeSet<Object>> {
    let connection = Connection::open_in_memory()?;
    for (_, _, sql) in embedded::MIGRATIONS.iter().filter(|m| m.0 <= version) {
        connection.execute_batch(sql)?;
    }
    connection.execute_batch(embedded::VIEWS)?;
    Ok(objects(&connection, "main")?)
}

/// The first object one set has and the other lacks, in words.
fn first_difference(found: &BTreeSet<Object>, expected: &BTreeSet<Object>) -> Option<String> {
    let views: BTreeSet<&str> = expected
        .iter()
        .filter(|o| o.0 == "view")
        .map(|o| o.1.as_str())
        .collect();
    // A view of this binary's may be missing or older: it is recreated or shadowed, never read.
    let is_our_view = |o: &Object| o.0 == "view" && o.1 == o.2 && views.contains(o.1.as_str());
    if let Some(extra) = found
        .iter()
        .find(|o| !expected.contains(*o) && !is_our_view(o))
    {
        let is_expected_name = expected.iter().any(|e| e.0 == extra.0 && e.1 == extra.1);
        return Some(if is_expected_name {
            format!("{} `{}` is not as docent-eval makes it", extra.0, extra.1)
        } else {
            format!("{} `{}` is not one docent-eval makes", extra.0, extra.1)
        });
    }
    expected
        .iter()
        .find(|o| o.0 != "view" && !found.contains(*o))
        .map(|missing| format!("{} `{}` is missing", missing.0, missing.1))
}

/// `sql` without comments, with every run of white space as one space: string literals and
/// quoted names are kept as they are.
fn normalized(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    let mut space = false;
    while let Some(c) = chars.next() {
        match c {
            '-' if chars.peek() == Some(&'-') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
                space = true;
                continue;
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
                space = true;
                continue;
            }
            c if c.is_whitespace() => {
                space = true;
                continue;
            }
            _ => {}
        }
        if space && !out.is_empty() {
            out.push(' ');
        }
        space = false;
        out.push(c);
        let close = match c {
            '\'' | '"' | '`' => c,
            '[' => ']',
            _ => continue,
        };
        for c in chars.by_ref() {
            out.push(c);
            if c == close {
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalized_sql_drops_comments_and_spacing_but_keeps_quoted_text() {
        assert_eq!(
            normalized(
                "CREATE TABLE t (\n  a TEXT, -- a note\n  b /* x */ INT CHECK (b <> '--  x')\n)"
            ),
            "CREATE TABLE t ( a TEXT, b INT CHECK (b <> '--  x') )"
        );
        assert_eq!(normalized("a \"x  -- y\"  b"), "a \"x  -- y\" b");
    }

    #[test]
    fn every_version_of_this_binary_is_recognised_and_changes_are_named() {
        for version in 1..=super::super::schema_version() {
            let connection = Connection::open_in_memory().unwrap();
            for (_, _, sql) in embedded::MIGRATIONS.iter().filter(|m| m.0 <= version) {
                connection.execute_batch(sql).unwrap();
            }
            connection
                .pragma_update(None, "user_version", version)
                .unwrap();
            let path = Path::new("r.db");
            assert_eq!(
                identify(&connection, "main", path, "").unwrap(),
                Identity::Ours,
                "version {version} without views"
            );
        }
        let connection = Connection::open_in_memory().unwrap();
        assert_eq!(
            identify(&connection, "main", Path::new("new.db"), "").unwrap(),
            Identity::Empty
        );
        for (change, named) in [
            (
                "DROP TABLE answers; CREATE VIEW answers AS SELECT 1",
                "view `answers` is not one",
            ),
            (
                "CREATE TRIGGER t AFTER INSERT ON runs BEGIN SELECT 1; END",
                "trigger `t`",
            ),
            ("CREATE INDEX e ON runs(abs(id))", "index `e`"),
            (
                "CREATE VIEW run_summary2 AS SELECT 1",
                "view `run_summary2`",
            ),
            (
                "ALTER TABLE answers DROP COLUMN parallel_slot",
                "table `answers` is not as",
            ),
            (
                "DROP INDEX questions_by_ordinal",
                "index `questions_by_ordinal` is missing",
            ),
        ] {
            let connection = Connection::open_in_memory().unwrap();
            for (_, _, sql) in embedded::MIGRATIONS {
                connection.execute_batch(sql).unwrap();
            }
            connection.execute_batch(embedded::VIEWS).unwrap();
            connection
                .pragma_update(None, "user_version", super::super::schema_version())
                .unwrap();
            // A view of this binary's, defined differently, is still ours: it is never read.
            connection
                .execute_batch("DROP VIEW errors; CREATE VIEW errors AS SELECT 2")
                .unwrap();
            assert_eq!(
                identify(&connection, "main", Path::new("r.db"), "").unwrap(),
                Identity::Ours
            );
            connection.execute_batch(change).unwrap();
            let error = identify(&connection, "main", Path::new("r.db"), "--db ").unwrap_err();
            let message = error.to_string();
            assert!(message.contains(named), "{change}: {message}");
            assert!(
                message.starts_with("--db r.db: a SQLite database that docent-eval did not create"),
                "{message}"
            );
        }
    }
}
