//! Where tables are found and committed: a SQL catalog (SQLite or PostgreSQL, the JDBC
//! catalog's schema; [`sql`]) or an Iceberg REST catalog (Polaris, Lakekeeper, Nessie, Unity,
//! Glue's and S3 Tables' REST endpoints, Apache Iceberg's own server; [`rest`]).
//!
//! Both load and create tables the same way for the engine, and both commit by
//! compare-and-swap: a commit made against metadata that is no longer current is refused
//! ([`Outcome::Conflict`]), nothing of it visible, and the engine reloads and tries again.

mod rest;
mod sql;

pub use rest::{RestAuth, RestSettings};

use crate::commit::Outcome;
use crate::io::storage::{S3Settings, Storage};
use crate::MergeError;
use iceberg::io::FileIO;
use iceberg::spec::{TableMetadata, TableMetadataBuildResult};
use iceberg::table::Table;
use iceberg::{TableCreation, TableIdent};

/// Where the catalog and the warehouse are.
#[derive(Debug, Clone)]
pub struct CatalogConfig {
    /// Catalog name (the `catalog_name` column of a SQL catalog).
    pub name: String,
    /// SQL: `sqlite:///path/catalog.db` or `postgres://user:pass@host/db`. REST: the
    /// catalog's base URL (`https://polaris.internal/api/catalog`), `/v1/...` below it.
    pub uri: String,
    /// SQL: the root location of new tables, `file:///path` or `s3://bucket/prefix`. REST:
    /// the warehouse asked for in `GET /v1/config` (a location or the name the catalog knows
    /// it by); tables are where the catalog puts them.
    pub warehouse: String,
    /// The S3-compatible store of `s3://` tables.
    pub s3: S3Settings,
    /// Set for a REST catalog; `None`: `uri` is a SQL database.
    pub rest: Option<RestSettings>,
}

pub struct Catalog {
    storage: Storage,
    backend: Backend,
}

enum Backend {
    Sql(sql::Sql),
    Rest(Box<rest::Rest>),
}

impl Catalog {
    /// Checks the warehouse's store (nothing is created when it is unusable), then opens the
    /// catalog: a REST catalog is asked for its configuration, and its token fetched, here.
    pub async fn connect(config: &CatalogConfig) -> Result<Catalog, MergeError> {
        let storage = match &config.rest {
            None => Storage::new(&config.warehouse, &config.s3)?,
            Some(_) => Storage::for_rest(&config.warehouse, &config.s3)?,
        };
        storage.check().await?;
        let backend = match &config.rest {
            None => Backend::Sql(
                sql::Sql::connect(&config.name, &config.uri, &config.warehouse, &storage).await?,
            ),
            Some(settings) => Backend::Rest(Box::new(
                rest::Rest::connect(&config.uri, &config.warehouse, settings, &storage).await?,
            )),
        };
        Ok(Catalog { storage, backend })
    }

    /// The warehouse's store (for listing: orphan removal).
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// `sql` or `rest`, for messages.
    pub fn kind(&self) -> &'static str {
        match self.backend {
            Backend::Sql(_) => "sql",
            Backend::Rest(_) => "rest",
        }
    }

    /// Loads a table, or `None` when the catalog has no such table.
    pub async fn load(&self, ident: &TableIdent) -> Result<Option<Table>, MergeError> {
        match &self.backend {
            Backend::Sql(c) => c.load(ident).await,
            Backend::Rest(c) => c.load(ident).await,
        }
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
        match &self.backend {
            Backend::Sql(c) => c.create(ident, creation).await,
            Backend::Rest(c) => c.create(ident, creation).await,
        }
    }

    /// Every table in the catalog (nested namespaces included).
    pub async fn list_tables(&self) -> Result<Vec<TableIdent>, MergeError> {
        match &self.backend {
            Backend::Sql(c) => c.list_tables().await,
            Backend::Rest(c) => c.list_tables().await,
        }
    }

    /// Makes `built` (new metadata made from `table`'s by a `TableMetadataBuilder`) the
    /// table's current metadata, if `table`'s still is. SQL: the metadata file is written and
    /// the catalog row swapped. REST: the builder's changes are sent as the commit's updates,
    /// with requirements that hold only while `table` is current; the catalog writes the
    /// metadata file.
    pub async fn commit(
        &self,
        table: &Table,
        built: TableMetadataBuildResult,
    ) -> Result<Outcome, MergeError> {
        match &self.backend {
            Backend::Sql(c) => c.commit(table, built.metadata).await,
            Backend::Rest(c) => c.commit(table, &built.changes).await,
        }
    }
}

/// A table handle over `metadata` at `location`.
fn table_of(
    ident: TableIdent,
    metadata: TableMetadata,
    location: String,
    file_io: FileIO,
) -> Result<Table, MergeError> {
    Table::builder()
        .metadata(metadata)
        .metadata_location(location)
        .identifier(ident)
        .file_io(file_io)
        .runtime(iceberg::Runtime::try_current().map_err(MergeError::commit_from("runtime"))?)
        .build()
        .map_err(MergeError::commit_from("table handle"))
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
    fn redaction() {
        assert_eq!(
            redact("postgres://me:secret@localhost/db"),
            "postgres://me:***@localhost/db"
        );
        assert_eq!(redact("sqlite:///tmp/c.db"), "sqlite:///tmp/c.db");
    }
}
