//! Which Iceberg table a change lands in: an explicit map (`schema.table` ->
//! `namespace.table`) first, else the namespace and name templates (`{db}`, `{schema}`,
//! `{table}`, `{server}`).

use crate::config::TablesSection;
use anyhow::{anyhow, bail, Result};
use debezium_cdc::record::SourceTable;
use iceberg::TableIdent;

pub fn route(tables: &TablesSection, source: &SourceTable) -> Result<TableIdent> {
    let table = source
        .table
        .as_deref()
        .ok_or_else(|| anyhow!("the change names no source table"))?;
    if let Some(target) = tables.map.get(&source.qualified()) {
        let parts: Vec<&str> = target.split('.').collect();
        if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) {
            bail!("tables.map: `{target}` is not namespace.table");
        }
        return TableIdent::from_strs(parts).map_err(|e| anyhow!("tables.map `{target}`: {e}"));
    }
    let fill = |template: &str| {
        template
            .replace("{db}", source.db.as_deref().unwrap_or("default"))
            .replace("{schema}", source.schema.as_deref().unwrap_or("default"))
            .replace("{server}", source.name.as_deref().unwrap_or("default"))
            .replace("{table}", table)
    };
    let namespace = fill(&tables.namespace);
    let name = fill(&tables.name);
    if namespace.is_empty() || name.is_empty() {
        bail!(
            "tables: the templates give an empty namespace or name for `{}`",
            source.qualified()
        );
    }
    TableIdent::from_strs(namespace.split('.').chain([name.as_str()]))
        .map_err(|e| anyhow!("table name for `{}`: {e}", source.qualified()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(schema: &str, table: &str) -> SourceTable {
        SourceTable {
            db: Some("shop".into()),
            schema: Some(schema.into()),
            table: Some(table.into()),
            ..SourceTable::default()
        }
    }

    #[test]
    fn templates_and_map() {
        let mut t = TablesSection::default();
        assert_eq!(
            route(&t, &src("public", "orders")).unwrap().to_string(),
            "public.orders"
        );
        t.namespace = "lake.{db}".into();
        t.name = "{schema}_{table}".into();
        assert_eq!(
            route(&t, &src("public", "orders")).unwrap().to_string(),
            "lake.shop.public_orders"
        );
        t.map
            .insert("public.orders".into(), "sales.orders_v2".into());
        assert_eq!(
            route(&t, &src("public", "orders")).unwrap().to_string(),
            "sales.orders_v2"
        );
        assert!(route(&t, &SourceTable::default()).is_err());
        t.map.insert("public.bad".into(), "nodot".into());
        assert!(route(&t, &src("public", "bad")).is_err());
    }
}
