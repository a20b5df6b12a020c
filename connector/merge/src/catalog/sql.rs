//! The SQL catalog (SQLite or PostgreSQL), in the `iceberg_tables` schema that the
//! `iceberg-catalog-sql` crate, PyIceberg, Spark's and Trino's JDBC catalogs share.
//!
//! Creating and loading tables goes through `iceberg-catalog-sql`; committing goes through
//! our own compare-and-swap on `metadata_location`, because the crate offers no public way to
//! commit the snapshots we build: the new metadata file is written, then the row is pointed
//! at it if it still points at the one the commit started from.

use super::redact;
use crate::commit::Outcome;
use crate::io::storage::Storage;
use crate::MergeError;
use iceberg::spec::TableMetadata;
use iceberg::table::Table;
use iceberg::{Catalog as _, CatalogBuilder as _, MetadataLocation, TableCreation, TableIdent};
use iceberg_catalog_sql::{SqlCatalog, SqlCatalogBuilder};
use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;
use std::collections::HashMap;
use std::str::FromStr;

pub(super) struct Sql {
    name: String,
    sql: SqlCatalog,
    pool: AnyPool,
    postgres: bool,
}

impl Sql {
    pub(super) async fn connect(
        name: &str,
        uri: &str,
        warehouse: &str,
        storage: &Storage,
    ) -> Result<Sql, MergeError> {
        sqlx::any::install_default_drivers();
        let postgres = uri.starts_with("postgres");
        let uri = if uri.starts_with("sqlite:") && !uri.contains("mode=") {
            let sep = if uri.contains('?') { '&' } else { '?' };
            format!("{uri}{sep}mode=rwc")
        } else {
            uri.to_owned()
        };
        let mut props = storage.props().clone();
        props.extend([
            ("uri".to_owned(), uri.clone()),
            ("warehouse".to_owned(), warehouse.to_owned()),
            (
                "sql_bind_style".to_owned(),
                if postgres { "DollarNumeric" } else { "QMark" }.to_owned(),
            ),
        ]);
        let sql = SqlCatalogBuilder::default()
            .with_storage_factory(storage.factory())
            .load(name, props)
            .await
            .map_err(MergeError::catalog_from(format!(
                "opening catalog {}",
                redact(&uri)
            )))?;
        let pool = AnyPoolOptions::new()
            .max_connections(2)
            .connect(&uri)
            .await
            .map_err(MergeError::catalog_from(format!(
                "connecting to {}",
                redact(&uri)
            )))?;
        Ok(Sql {
            name: name.to_owned(),
            sql,
            pool,
            postgres,
        })
    }

    pub(super) async fn load(&self, ident: &TableIdent) -> Result<Option<Table>, MergeError> {
        if !self.sql.table_exists(ident).await.map_err(catalog_err)? {
            return Ok(None);
        }
        self.sql
            .load_table(ident)
            .await
            .map(Some)
            .map_err(catalog_err)
    }

    pub(super) async fn create(
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

    pub(super) async fn list_tables(&self) -> Result<Vec<TableIdent>, MergeError> {
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

    /// Writes `new_metadata` as the table's next metadata file and swaps the row's pointer
    /// from `table`'s metadata file to it.
    pub(super) async fn commit(
        &self,
        table: &Table,
        new_metadata: TableMetadata,
    ) -> Result<Outcome, MergeError> {
        let file_io = table.file_io();
        let base_location = table
            .metadata_location()
            .ok_or_else(|| MergeError::commit("the table has no metadata location"))?;
        let new_location = MetadataLocation::from_str(base_location)
            .map_err(MergeError::commit_from("metadata location"))?
            .with_next_version()
            .with_new_metadata(&new_metadata);
        new_metadata
            .write_to(file_io, &new_location)
            .await
            .map_err(MergeError::commit_from("writing table metadata"))?;
        let new_location = new_location.to_string();
        if !self
            .swap(table.identifier(), base_location, &new_location)
            .await?
        {
            let _ = file_io.delete(&new_location).await;
            return Ok(Outcome::Conflict);
        }
        super::table_of(
            table.identifier().clone(),
            new_metadata,
            new_location,
            file_io.clone(),
        )
        .map(|t| Outcome::Committed(Box::new(t)))
    }

    /// Points the table at `new` if it still points at `expected`. `false`: someone else
    /// committed first.
    async fn swap(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders() {
        assert_eq!(dollar_placeholders("a = ? AND b = ?"), "a = $1 AND b = $2");
    }
}
