//! A seeded SQL workload against a real PostgreSQL database: the source of the end-to-end
//! tests. There is no model of our own here: the database is the model, and the tests
//! compare every Iceberg table with `SELECT *` of its source table.
//!
//! Three tables of the shapes users have: an integer key with a column of every common type
//! (and a large TOASTed text under `REPLICA IDENTITY DEFAULT`), a two-column key (text +
//! integer) under `REPLICA IDENTITY FULL`, a uuid key in another schema; and a marker table
//! for telling when Debezium has read everything. Inserts, updates (some moving a row to
//! another month, some leaving the TOASTed column alone, some changing the primary key),
//! deletes, deletes followed by a re-insert of the same key, multi-row transactions.

use crate::Lcg;
use anyhow::{Context, Result};
use serde_json::json;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};
use std::collections::BTreeSet;

/// The tables Debezium streams, as `schema.table`.
pub const TABLES: [&str; 4] = [
    "public.accounts",
    "public.order_lines",
    "inventory.devices",
    "public.markers",
];

/// The column every table has to partition by (`month(placed)`), so that an update can move
/// a row to another partition.
pub const PARTITION_COLUMN: &str = "placed";

const SCHEMA: &str = r#"
CREATE SCHEMA inventory;
CREATE TABLE public.accounts (
    id integer PRIMARY KEY,
    name text NOT NULL,
    balance numeric(12,2),
    ratio numeric,
    placed timestamptz NOT NULL,
    seen timestamp,
    birthday date,
    wake time,
    prefs jsonb,
    tags text[],
    photo bytea,
    active boolean,
    score real,
    weight double precision,
    visits integer NOT NULL DEFAULT 0,
    legacy_code text NOT NULL,
    notes text
);
-- out of line and uncompressed above ~2 kB: an update that leaves it alone sends Debezium's
-- placeholder instead of the value
ALTER TABLE public.accounts ALTER COLUMN notes SET STORAGE EXTERNAL;
CREATE TABLE public.order_lines (
    shop text,
    line integer,
    qty integer NOT NULL,
    price numeric(10,3),
    placed timestamptz NOT NULL,
    note text,
    PRIMARY KEY (shop, line)
);
ALTER TABLE public.order_lines REPLICA IDENTITY FULL;
CREATE TABLE inventory.devices (
    id uuid PRIMARY KEY,
    label text,
    reading double precision,
    placed timestamptz,
    meta jsonb,
    seen_at timestamp
);
CREATE TABLE public.markers (id integer PRIMARY KEY, placed timestamptz NOT NULL);
"#;

/// The schema changes of the middle of the run, in the order applied.
pub const SCHEMA_CHANGES: [&str; 4] = [
    "ALTER TABLE public.accounts ADD COLUMN nickname text",
    "ALTER TABLE public.accounts DROP COLUMN legacy_code",
    "ALTER TABLE public.accounts ALTER COLUMN visits TYPE bigint",
    "ALTER TABLE public.accounts ALTER COLUMN name DROP NOT NULL",
];

/// Creates (anew) the database `name` on the server of `admin_uri`; returns its URI.
pub async fn create_database(admin_uri: &str, name: &str) -> Result<String> {
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(admin_uri)
        .await
        .with_context(|| format!("connecting to {admin_uri}"))?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&admin)
        .await?;
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&admin)
        .await?;
    admin.close().await;
    let (base, _) = admin_uri
        .rsplit_once('/')
        .context("the admin URI names no database")?;
    Ok(format!("{base}/{name}"))
}

/// Drops the database `name` (and its replication slots' hold on the WAL with it).
pub async fn drop_database(admin_uri: &str, name: &str) -> Result<()> {
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(admin_uri)
        .await?;
    sqlx::query("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active")
        .bind(name)
        .execute(&admin)
        .await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&admin)
        .await?;
    Ok(())
}

pub struct Workload {
    pool: PgPool,
    rng: Lcg,
    accounts: BTreeSet<i32>,
    next_account: i32,
    lines: BTreeSet<(String, i32)>,
    next_line: i32,
    devices: BTreeSet<String>,
    markers: i32,
    /// [`SCHEMA_CHANGES`] are applied.
    evolved: bool,
    /// Transactions committed.
    pub transactions: u64,
}

impl Workload {
    /// The tables of [`TABLES`] in the (new) database at `uri`.
    pub async fn create(uri: &str, seed: u64) -> Result<Workload> {
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect(uri)
            .await
            .with_context(|| format!("connecting to {uri}"))?;
        sqlx::raw_sql(SCHEMA).execute(&pool).await?;
        Ok(Workload {
            pool,
            rng: Lcg(seed),
            accounts: BTreeSet::new(),
            next_account: 1,
            lines: BTreeSet::new(),
            next_line: 1,
            devices: BTreeSet::new(),
            markers: 0,
            evolved: false,
            transactions: 0,
        })
    }

    /// `n` rows in each table, in one transaction each (the rows Debezium's snapshot reads).
    pub async fn seed_rows(&mut self, n: usize) -> Result<()> {
        for _ in 0..n {
            let mut tx = self.pool.begin().await?;
            self.insert_account(&mut tx).await?;
            self.insert_line(&mut tx).await?;
            self.insert_device(&mut tx).await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// `n` transactions of random changes: mostly one to three statements, now and then a
    /// large one, with deletes followed by a re-insert of the same key.
    pub async fn run(&mut self, n: usize) -> Result<()> {
        for _ in 0..n {
            let statements = if self.rng.one_in(25) {
                15 + self.rng.below(20)
            } else {
                1 + self.rng.below(3)
            };
            let mut tx = self.pool.begin().await?;
            for _ in 0..statements {
                self.change(&mut tx).await?;
            }
            tx.commit().await?;
            self.transactions += 1;
        }
        Ok(())
    }

    /// Applies [`SCHEMA_CHANGES`]; later changes use the new columns.
    pub async fn change_schema(&mut self) -> Result<()> {
        for ddl in SCHEMA_CHANGES {
            sqlx::query(ddl).execute(&self.pool).await.context(ddl)?;
        }
        self.evolved = true;
        Ok(())
    }

    /// `TRUNCATE public.order_lines`, then `n` new lines.
    pub async fn truncate_lines(&mut self, n: usize) -> Result<()> {
        sqlx::query("TRUNCATE public.order_lines")
            .execute(&self.pool)
            .await?;
        self.lines.clear();
        let mut tx = self.pool.begin().await?;
        for _ in 0..n {
            self.insert_line(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Inserts the next marker row and returns its id: once it is in Kafka, so is
    /// everything committed before it.
    pub async fn marker(&mut self) -> Result<i32> {
        self.markers += 1;
        sqlx::query("INSERT INTO public.markers VALUES ($1, now())")
            .bind(self.markers)
            .execute(&self.pool)
            .await?;
        Ok(self.markers)
    }

    pub async fn close(self) {
        self.pool.close().await;
    }

    async fn change(&mut self, tx: &mut Transaction<'_, Postgres>) -> Result<()> {
        match self.rng.below(20) {
            0..=2 => self.insert_account(tx).await,
            3..=6 => self.update_account(tx).await,
            7 => self.delete_account(tx, true).await,
            8 => self.delete_account(tx, false).await,
            9 | 10 => self.insert_line(tx).await,
            11 | 12 => self.update_line(tx).await,
            13 => self.delete_line(tx).await,
            14 | 15 => self.insert_device(tx).await,
            16 | 17 => self.update_device(tx).await,
            18 => self.delete_device(tx).await,
            _ if self.rng.one_in(2) => self.rekey_line(tx).await,
            _ => self.rekey_device(tx).await,
        }
    }

    // --- public.accounts

    async fn insert_account(&mut self, tx: &mut Transaction<'_, Postgres>) -> Result<()> {
        let id = self.next_account;
        self.next_account += 1;
        self.put_account(tx, id).await
    }

    async fn put_account(&mut self, tx: &mut Transaction<'_, Postgres>, id: i32) -> Result<()> {
        let r = &mut self.rng;
        let name =
            (!(self.evolved && r.one_in(5))).then(|| format!("account {id} «{}»", r.below(1000)));
        let notes = if r.one_in(4) {
            Some(format!("short note {}", r.below(100)))
        } else {
            Some(long_text(r))
        };
        let sql = if self.evolved {
            "INSERT INTO public.accounts (id, name, balance, ratio, placed, seen, birthday, wake, \
             prefs, tags, photo, active, score, weight, visits, notes, nickname) VALUES \
             ($1, $2, $3::numeric, $4::numeric, $5::timestamptz, $6::timestamp, $7::date, \
             $8::time, $9::jsonb, $10, $11, $12, $13, $14, $15, $16, $17)"
        } else {
            "INSERT INTO public.accounts (id, name, balance, ratio, placed, seen, birthday, wake, \
             prefs, tags, photo, active, score, weight, visits, notes, legacy_code) VALUES \
             ($1, $2, $3::numeric, $4::numeric, $5::timestamptz, $6::timestamp, $7::date, \
             $8::time, $9::jsonb, $10, $11, $12, $13, $14, $15::integer, $16, $17)"
        };
        let visits: i64 = if self.evolved {
            3_000_000_000 + r.below(1000) as i64
        } else {
            r.below(1000) as i64
        };
        let last = if self.evolved {
            r.one_in(2).then(|| format!("nick{}", r.below(50)))
        } else {
            Some(format!("L-{}", r.below(10_000)))
        };
        sqlx::query(sql)
            .bind(id)
            .bind(name)
            .bind(money(r))
            .bind(ratio(r))
            .bind(instant(r))
            .bind(wall_clock(r))
            .bind(date(r))
            .bind(time_of_day(r))
            .bind(document(r))
            .bind(tags(r))
            .bind(bytes(r))
            .bind((!r.one_in(7)).then(|| r.one_in(2)))
            .bind((r.below(2_000_000) as f32 - 1e6) / 64.0)
            .bind((r.below(u32::MAX as u64) as f64 - 2e9) / 7.0)
            .bind(visits)
            .bind(notes)
            .bind(last)
            .execute(&mut **tx)
            .await
            .context("insert into accounts")?;
        self.accounts.insert(id);
        Ok(())
    }

    async fn update_account(&mut self, tx: &mut Transaction<'_, Postgres>) -> Result<()> {
        let Some(id) = pick(&mut self.rng, &self.accounts) else {
            return self.insert_account(tx).await;
        };
        let r = &mut self.rng;
        let query = match r.below(4) {
            // the TOASTed notes untouched: Debezium sends its placeholder for them
            0 | 1 => sqlx::query(
                "UPDATE public.accounts SET balance = $2::numeric, active = NOT coalesce(active, false), \
                 visits = visits + 1 WHERE id = $1",
            )
            .bind(id)
            .bind(money(r)),
            // to another month's partition
            2 => sqlx::query("UPDATE public.accounts SET placed = $2::timestamptz, wake = $3::time WHERE id = $1")
                .bind(id)
                .bind(instant(r))
                .bind(time_of_day(r)),
            _ if self.evolved => sqlx::query(
                "UPDATE public.accounts SET nickname = $2, name = $3, notes = $4, prefs = $5::jsonb WHERE id = $1",
            )
            .bind(id)
            .bind(format!("nick{}", r.below(50)))
            .bind(r.one_in(3).then(|| format!("renamed {}", r.below(100))))
            .bind(long_text(r))
            .bind(document(r)),
            _ => sqlx::query(
                "UPDATE public.accounts SET notes = $2, tags = $3, ratio = $4::numeric, photo = $5 WHERE id = $1",
            )
            .bind(id)
            .bind(long_text(r))
            .bind(tags(r))
            .bind(ratio(r))
            .bind(bytes(r)),
        };
        query.execute(&mut **tx).await.context("update accounts")?;
        Ok(())
    }

    /// A delete, and with `reinsert` the same key inserted again at once.
    async fn delete_account(
        &mut self,
        tx: &mut Transaction<'_, Postgres>,
        reinsert: bool,
    ) -> Result<()> {
        let Some(id) = pick(&mut self.rng, &self.accounts) else {
            return Ok(());
        };
        sqlx::query("DELETE FROM public.accounts WHERE id = $1")
            .bind(id)
            .execute(&mut **tx)
            .await?;
        self.accounts.remove(&id);
        if reinsert {
            self.put_account(tx, id).await?;
        }
        Ok(())
    }

    // --- public.order_lines: (shop, line), REPLICA IDENTITY FULL

    async fn insert_line(&mut self, tx: &mut Transaction<'_, Postgres>) -> Result<()> {
        let r = &mut self.rng;
        let shop = format!(
            "shop-{}",
            ["north", "süd", "east", "west, 2"][r.below(4) as usize]
        );
        let line = self.next_line;
        self.next_line += 1;
        sqlx::query(
            "INSERT INTO public.order_lines VALUES ($1, $2, $3, $4::numeric, $5::timestamptz, $6)",
        )
        .bind(&shop)
        .bind(line)
        .bind(1 + r.below(50) as i32)
        .bind(format!("{}.{:03}", r.below(100_000), r.below(1000)))
        .bind(instant(r))
        .bind((!r.one_in(3)).then(|| format!("note {}", r.below(1000))))
        .execute(&mut **tx)
        .await
        .context("insert into order_lines")?;
        self.lines.insert((shop, line));
        Ok(())
    }

    async fn update_line(&mut self, tx: &mut Transaction<'_, Postgres>) -> Result<()> {
        let Some((shop, line)) = pick(&mut self.rng, &self.lines) else {
            return self.insert_line(tx).await;
        };
        let r = &mut self.rng;
        sqlx::query(
            "UPDATE public.order_lines SET qty = qty + 1, price = $3::numeric, placed = $4::timestamptz \
             WHERE shop = $1 AND line = $2",
        )
        .bind(&shop)
        .bind(line)
        .bind(format!("{}.{:03}", r.below(100_000), r.below(1000)))
        .bind(instant(r))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// A change of the primary key: Debezium sends a delete of the old key and a create of
    /// the new one. (Not on `accounts`: under REPLICA IDENTITY DEFAULT the create carries
    /// Debezium's placeholder for the TOASTed `notes`, a value no sink can know.)
    async fn rekey_line(&mut self, tx: &mut Transaction<'_, Postgres>) -> Result<()> {
        let Some((shop, line)) = pick(&mut self.rng, &self.lines) else {
            return Ok(());
        };
        let new = self.next_line;
        self.next_line += 1;
        sqlx::query("UPDATE public.order_lines SET line = $3 WHERE shop = $1 AND line = $2")
            .bind(&shop)
            .bind(line)
            .bind(new)
            .execute(&mut **tx)
            .await?;
        self.lines.remove(&(shop.clone(), line));
        self.lines.insert((shop, new));
        Ok(())
    }

    async fn delete_line(&mut self, tx: &mut Transaction<'_, Postgres>) -> Result<()> {
        let Some((shop, line)) = pick(&mut self.rng, &self.lines) else {
            return Ok(());
        };
        sqlx::query("DELETE FROM public.order_lines WHERE shop = $1 AND line = $2")
            .bind(&shop)
            .bind(line)
            .execute(&mut **tx)
            .await?;
        self.lines.remove(&(shop, line));
        Ok(())
    }

    // --- inventory.devices: a uuid key

    async fn insert_device(&mut self, tx: &mut Transaction<'_, Postgres>) -> Result<()> {
        let r = &mut self.rng;
        let id = uuid_text(r);
        sqlx::query(
            "INSERT INTO inventory.devices VALUES ($1::uuid, $2, $3, $4::timestamptz, $5::jsonb, $6::timestamp)",
        )
        .bind(&id)
        .bind(format!("device {}", r.below(10_000)))
        .bind(r.below(1_000_000) as f64 / 3.0)
        .bind((!r.one_in(5)).then(|| instant(r)))
        .bind(document(r))
        .bind(wall_clock(r))
        .execute(&mut **tx)
        .await
        .context("insert into devices")?;
        self.devices.insert(id);
        Ok(())
    }

    async fn update_device(&mut self, tx: &mut Transaction<'_, Postgres>) -> Result<()> {
        let Some(id) = pick(&mut self.rng, &self.devices) else {
            return self.insert_device(tx).await;
        };
        let r = &mut self.rng;
        sqlx::query(
            "UPDATE inventory.devices SET reading = $2, meta = $3::jsonb, placed = $4::timestamptz WHERE id = $1::uuid",
        )
        .bind(&id)
        .bind(-(r.below(1_000_000) as f64) / 7.0)
        .bind(document(r))
        .bind(instant(r))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    async fn rekey_device(&mut self, tx: &mut Transaction<'_, Postgres>) -> Result<()> {
        let Some(id) = pick(&mut self.rng, &self.devices) else {
            return Ok(());
        };
        let new = uuid_text(&mut self.rng);
        sqlx::query("UPDATE inventory.devices SET id = $2::uuid WHERE id = $1::uuid")
            .bind(&id)
            .bind(&new)
            .execute(&mut **tx)
            .await?;
        self.devices.remove(&id);
        self.devices.insert(new);
        Ok(())
    }

    async fn delete_device(&mut self, tx: &mut Transaction<'_, Postgres>) -> Result<()> {
        let Some(id) = pick(&mut self.rng, &self.devices) else {
            return Ok(());
        };
        sqlx::query("DELETE FROM inventory.devices WHERE id = $1::uuid")
            .bind(&id)
            .execute(&mut **tx)
            .await?;
        self.devices.remove(&id);
        Ok(())
    }
}

fn pick<T: Clone + Ord>(r: &mut Lcg, set: &BTreeSet<T>) -> Option<T> {
    if set.is_empty() {
        return None;
    }
    set.iter().nth(r.below(set.len() as u64) as usize).cloned()
}

fn uuid_text(r: &mut Lcg) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:06x}{:06x}",
        r.below(1 << 32),
        r.below(1 << 16),
        r.below(1 << 12),
        r.below(1 << 12),
        r.below(1 << 24),
        r.below(1 << 24)
    )
}

fn money(r: &mut Lcg) -> Option<String> {
    if r.one_in(10) {
        return None;
    }
    let sign = if r.one_in(4) { "-" } else { "" };
    Some(format!(
        "{sign}{}.{:02}",
        r.below(1_000_000_000),
        r.below(100)
    ))
}

/// Unconstrained `numeric`: any scale, trailing zeros kept, beyond 38 digits.
fn ratio(r: &mut Lcg) -> Option<String> {
    Some(match r.below(6) {
        0 => return None,
        1 => format!("{}.{:03}0", r.below(100), r.below(1000)),
        2 => format!(
            "-{}{:018}.{:09}",
            r.below(1000),
            r.below(u64::MAX / 2),
            r.below(1_000_000_000)
        ),
        3 => format!("{}", r.below(1_000_000)),
        4 => format!("0.{:012}", r.below(1_000_000)),
        _ => format!("{}.5", r.below(10)),
    })
}

/// A `timestamptz` in 2026, a month in twelve, written with a zone offset.
fn instant(r: &mut Lcg) -> String {
    let zone = ["+00", "+05:30", "-08"][r.below(3) as usize];
    format!(
        "2026-{:02}-{:02} {:02}:{:02}:{:02}.{:06}{zone}",
        1 + r.below(12),
        1 + r.below(28),
        r.below(24),
        r.below(60),
        r.below(60),
        r.below(1_000_000)
    )
}

/// `value`, but null once in eight times.
fn mostly(r: &mut Lcg, value: impl FnOnce(&mut Lcg) -> String) -> Option<String> {
    (!r.one_in(8)).then(|| value(r))
}

fn wall_clock(r: &mut Lcg) -> Option<String> {
    mostly(r, |r| {
        format!(
            "{}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}",
            1970 + r.below(60),
            1 + r.below(12),
            1 + r.below(28),
            r.below(24),
            r.below(60),
            r.below(60),
            r.below(1_000_000)
        )
    })
}

fn date(r: &mut Lcg) -> Option<String> {
    mostly(r, |r| {
        format!(
            "{}-{:02}-{:02}",
            1940 + r.below(80),
            1 + r.below(12),
            1 + r.below(28)
        )
    })
}

fn time_of_day(r: &mut Lcg) -> Option<String> {
    mostly(r, |r| {
        format!(
            "{:02}:{:02}:{:02}.{:06}",
            r.below(24),
            r.below(60),
            r.below(60),
            r.below(1_000_000)
        )
    })
}

fn document(r: &mut Lcg) -> Option<String> {
    if r.one_in(8) {
        return None;
    }
    let n = r.below(1000);
    Some(
        json!({
            "n": n,
            "half": n as f64 / 2.0,
            "tags": ["a", format!("b{}", r.below(10))],
            "nested": {"ok": r.one_in(2), "none": null},
            "text": "quote \" backslash \\ and ünïcode"
        })
        .to_string(),
    )
}

fn tags(r: &mut Lcg) -> Option<Vec<String>> {
    match r.below(5) {
        0 => None,
        1 => Some(Vec::new()),
        _ => Some(
            (0..1 + r.below(4))
                .map(|i| {
                    ["plain", "with, comma", "with \"quotes\"", "ümlaut"]
                        [((i + r.below(4)) % 4) as usize]
                        .to_owned()
                })
                .collect(),
        ),
    }
}

fn bytes(r: &mut Lcg) -> Option<Vec<u8>> {
    (!r.one_in(6)).then(|| (0..r.below(40)).map(|_| r.below(256) as u8).collect())
}

/// 3 to 9 kB of letters: stored out of line (TOAST).
fn long_text(r: &mut Lcg) -> String {
    let n = 3000 + r.below(6000) as usize;
    (0..n).map(|_| (b'a' + r.below(26) as u8) as char).collect()
}
