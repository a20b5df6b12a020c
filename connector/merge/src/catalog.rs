//! The SQL catalog (SQLite or PostgreSQL), in the `iceberg_tables` schema that the
//! `iceberg-catalog-sql` crate, PyIceberg, Spark's and Trino's JDBC catalogs share.
//!
//! Creating and loading tables goes through `iceberg-catalog-sql`; committing goes through
//! our own compare-and-swap on `metadata_location`, because the crate offers no public way to
//! commit the snapshots we build.

use crate::io::storage::{S3Settings, Storage};
use crate::MergeError;
use iceberg::table::Table;
use iceberg::{Catalog as _, CatalogBuilder as _, TableCreation, TableIdent};
use iceberg_catalog_sql::{SqlCatalog, SqlCatalogBuilder};
use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;
use std::collections::HashMap;

/// Where the catalog and the warehouse are.
#[derive(Debug, Clone)]
pub struct CatalogConfig {
    /// Catalog name (the `catalog_name` column).
    pub name: String,
    /// `sqlite:///path/catalog.db` or `postgres://user:pass@host/db`.
    pub uri: String,
    /// Root location of new tables: `file:///path` or `s3://bucket/prefix`.
    pub warehouse: String,
    /// The S3-compatible store of an `s3://` warehouse.
    pub s3: S3Settings,
}

pub struct Catalog {
    name: String,
    storage: Storage,
    sql: SqlCatalog,
    pool: AnyPool,
    postgres: bool,
}

impl Catalog {
    /// Checks the warehouse's store (nothing is created when it is unusable), then opens the
    /// catalog.
    pub async fn connect(config: &CatalogConfig) -> Result<Catalog, MergeError> {
        let storage = Storage::new(&config.warehouse, &config.s3)?;
        storage.check().await?;
        sqlx::any::install_default_drivers();
        let postgres = config.uri.starts_with("postgres");
        let uri = if config.uri.starts_with("sqlite:") && !config.uri.contains("mode=") {
            let sep = if config.uri.contains('?') { '&' } else { '?' };
            format!("{}{sep}mode=rwc", config.uri)
        } else {
            config.uri.clone()
        };
        let mut props = storage.props().clone();
        props.extend([
            ("uri".to_owned(), uri.clone()),
            ("warehouse".to_owned(), config.warehouse.clone()),
            (
                "sql_bind_style".to_owned(),
                if postgres { "DollarNumeric" } else { "QMark" }.to_owned(),
            ),
        ]);
        let sql = SqlCatalogBuilder::default()
            .with_storage_factory(storage.factory())
            .load(&config.name, props)
            .await
            .map_err(MergeError::catalog_from(format!(
                "opening catalog {}",
                redact(&config.uri)
            )))?;
        let pool = AnyPoolOptions::new()
            .max_connections(2)
            .connect(&uri)
            .await
            .map_err(MergeError::catalog_from(format!(
                "connecting to {}",
                redact(&config.uri)
            )))?;
        Ok(Catalog {
            name: config.name.clone(),
            storage,
            sql,
            pool,
            postgres,
        })
    }

    /// The warehouse's store (for listing: orphan removal).
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Loads a table, or `None` when the catalog has no such table.
    pub async fn load(&self, ident: &TableIdent) -> Result<Option<Table>, MergeError> {
        if !self.sql.table_exists(ident).await.map_err(catalog_err)? {
            return Ok(None);
        }
        self.sql
            .load_table(ident)
            .await
            .map(Some)
            .map_err(catalog_err)
    }

    /// A table that must exist (it is being written to).
    pub async fn load_existing(&self, ident: &TableIdent) -> Result<Table, MergeError> {
        self.load(ident)
            .await?
            .ok_or_else(|| MergeError::catalog(format!("{ident} disappeared")))
    }

    /// Creates a table (and its namespace when missing).
    pub async fn create(
        &self,
        ident: &TableIdent,
        creation: TableCreation,
    ) -> Result<Table, MergeError> {
        let ns = ident.namespace();
        if !self.sql.namespace_exists(ns).await.map_err(catalog_err)? {
            self.sql
                .create_namespace(ns, HashMap::new())
                .await
                .map_err(catalog_err)?;
        }
        self.sql
            .create_table(ns, creation)
            .await
            .map_err(catalog_err)
    }

    /// Every table in the catalog (nested namespaces included).
    pub async fn list_tables(&self) -> Result<Vec<TableIdent>, MergeError> {
        let mut out = Vec::new();
        let mut pending = self.sql.list_namespaces(None).await.map_err(catalog_err)?;
        while let Some(ns) = pending.pop() {
            out.extend(self.sql.list_tables(&ns).await.map_err(catalog_err)?);
            pending.extend(
                self.sql
                    .list_namespaces(Some(&ns))
                    .await
                    .map_err(catalog_err)?,
            );
        }
        Ok(out)
    }

    /// Points the table at `new` if it still points at `expected`. `false`: someone else
    /// committed first.
    pub async fn swap(
        &self,
        ident: &TableIdent,
        expected: &str,
        new: &str,
    ) -> Result<bool, MergeError> {
        let sql =
            "UPDATE iceberg_tables SET metadata_location = ?, previous_metadata_location = ? \
                   WHERE catalog_name = ? AND table_namespace = ? AND table_name = ? \
                   AND metadata_location = ?";
        let sql = if self.postgres {
            dollar_placeholders(sql)
        } else {
            sql.to_owned()
        };
        let result = sqlx::query(&sql)
            .bind(new)
            .bind(expected)
            .bind(&self.name)
            .bind(ident.namespace().join("."))
            .bind(ident.name())
            .bind(expected)
            .execute(&self.pool)
            .await
            .map_err(MergeError::catalog_from(format!("committing {ident}")))?;
        Ok(result.rows_affected() == 1)
    }
}

fn catalog_err(e: iceberg::Error) -> MergeError {
    MergeError::catalog_from("the SQL catalog")(e)
}

/// `?` placeholders to PostgreSQL's `$1, $2, …`.
fn dollar_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// A connection string without its password, for messages.
pub fn redact(uri: &str) -> String {
    match (uri.find("://"), uri.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &uri[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &uri[..scheme + 3], &uri[at..]),
                None => uri.to_owned(),
            }
        }
        _ => uri.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_redaction() {
        assert_eq!(dollar_placeholders("a = ? AND b = ?"), "a = $1 AND b = $2");
        assert_eq!(
            redact("postgres://me:secret@localhost/db"),
            "postgres://me:***@localhost/db"
        );
        assert_eq!(redact("sqlite:///tmp/c.db"), "sqlite:///tmp/c.db");
    }
}
