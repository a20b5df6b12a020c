//! Measuring a contender: a child process's wall time, peak RSS (its `VmHWM`, sampled until
//! it exits) and CPU time beside the whole machine's, commit latencies from the connector's
//! log, and what a table holds.

use anyhow::{bail, Context, Result};
use futures::TryStreamExt;
use iceberg::spec::DataContentType;
use iceberg::TableIdent;
use iceberg_cdc_merge::commit::live_files;
use iceberg_cdc_merge::io::rows::value_at;
use iceberg_cdc_merge::{Catalog, CatalogConfig, CdcTable, TableOptions};
use serde::Serialize;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::stream::Versions as Model;

/// A finished child process.
pub struct Finished {
    pub wall: Duration,
    pub peak_rss: u64,
    /// CPU seconds (user + system) of the child, and of every process on the machine, from its
    /// start to its end or to when `stop` first said so, whichever came first.
    pub cpu: Cpu,
    pub stderr: String,
    pub stdout: String,
}

/// A memory figure of the process's `/proc/PID/status` (`VmHWM`: its high-water resident
/// set; `VmRSS`: the resident set now), in bytes.
pub fn vm_status(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU seconds spent by a contender and, in the same window, by the whole machine (the
/// contender, a broker it reads, the benchmark's own polls, anything else running).
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Cpu {
    pub contender_s: f64,
    pub machine_s: f64,
}

/// `/proc` counts CPU time in USER_HZ ticks, 100 a second on every Linux ABI.
const TICKS_PER_S: f64 = 100.0;

/// User + system CPU seconds of process `pid` (its threads included), from `/proc/PID/stat`.
pub fn process_cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    cpu_of_stat(&stat)
}

/// utime + stime of a `/proc/PID/stat` line: fields 14 and 15, counted after the command
/// name's closing parenthesis (the name itself may hold spaces and parentheses).
fn cpu_of_stat(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_S)
}

/// Busy CPU seconds of the whole machine since boot, all cores, from `/proc/stat`'s first
/// line (everything but idle and iowait).
pub fn machine_cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    busy_of_proc_stat(&stat)
}

fn busy_of_proc_stat(stat: &str) -> Option<f64> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .map(|t| t.parse())
        .collect::<Result<_, _>>()
        .ok()?;
    // user nice system idle iowait irq softirq steal (guest time is already in user)
    let busy: u64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    Some(busy as f64 / TICKS_PER_S)
}

/// Runs `cmd` to its end (or until `stop` says so, then SIGTERM), sampling its peak RSS.
pub fn run(mut cmd: Command, mut stop: impl FnMut() -> bool) -> Result<Finished> {
    let started = Instant::now();
    let machine_at_start = machine_cpu_s();
    let mut child: Child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting a contender")?;
    let pid = child.id();
    // drain the pipes on threads so a chatty child never blocks
    let mut out = child.stdout.take().context("stdout")?;
    let mut err = child.stderr.take().context("stderr")?;
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let mut peak = 0;
    let mut stopping = false;
    let mut cpu = Cpu::default();
    let status = loop {
        if let Some(hwm) = vm_status(pid, "VmHWM") {
            peak = peak.max(hwm);
        }
        // the CPU figures stop where the timed window does: at the exit or at `stop`
        if !stopping {
            if let Some(s) = process_cpu_s(pid) {
                cpu.contender_s = s;
            }
            if let (Some(start), Some(now)) = (machine_at_start, machine_cpu_s()) {
                cpu.machine_s = now - start;
            }
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if !stopping && stop() {
            stopping = true;
            Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()?;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let wall = started.elapsed();
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    if !status.success() {
        bail!("contender exited with {status}: {}", tail(&stderr));
    }
    Ok(Finished {
        wall,
        peak_rss: peak,
        cpu,
        stderr,
        stdout,
    })
}

pub fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// `p` (0..=100) percentile of `values` (nearest rank).
pub fn percentile(values: &[u64], p: f64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v.get(rank.min(v.len()) - 1).copied()
}

/// `name=<n>` values of the connector's `committed` debug lines.
pub fn commit_field(log: &str, name: &str) -> Vec<u64> {
    let tag = format!(" {name}=");
    log.lines()
        .filter(|l| l.contains("committed"))
        .filter_map(|l| {
            let rest = &l[l.find(&tag)? + tag.len()..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// What a result table looks like.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableFacts {
    pub rows: usize,
    pub data_files: usize,
    pub delete_files: usize,
    pub snapshots: usize,
    /// Whether every key's row is its newest version and no deleted key has a row.
    pub equals_model: bool,
    pub mismatch: Option<String>,
}

/// The table's rows (id and name), checked against the model with the `iceberg` crate's
/// own scan (position deletes applied).
pub async fn table_facts(
    config: &CatalogConfig,
    table: &str,
    model: Option<&Model>,
) -> Result<TableFacts> {
    let catalog = Catalog::connect(config).await?;
    let ident = TableIdent::from_strs(table.split('.'))?;
    let t = catalog.load_existing(&ident).await?;
    let live = live_files(&t).await?;
    let data_files = live
        .iter()
        .filter(|f| f.file.content_type() == DataContentType::Data)
        .count();
    let mut facts = TableFacts {
        data_files,
        delete_files: live.len() - data_files,
        snapshots: t.metadata().snapshots().count(),
        ..TableFacts::default()
    };
    let batches: Vec<_> = t
        .scan()
        .select(["id", "name"])
        .build()?
        .to_arrow()
        .await?
        .try_collect()
        .await?;
    let mut seen: Vec<Option<u32>> = vec![None; model.map_or(0, |m| m.versions.len())];
    let mut problem = None;
    for b in &batches {
        facts.rows += b.num_rows();
        if model.is_none() {
            continue;
        }
        for i in 0..b.num_rows() {
            let id = value_at(b.column(0).as_ref(), i)?
                .as_u64()
                .unwrap_or(u64::MAX) as usize;
            let name = value_at(b.column(1).as_ref(), i)?;
            let version = name
                .as_str()
                .and_then(|n| n.rsplit_once("-v"))
                .and_then(|(_, v)| v.parse::<u32>().ok());
            match seen.get_mut(id) {
                Some(slot @ None) => *slot = version,
                Some(Some(_)) => {
                    problem.get_or_insert(format!("key {id} has two rows"));
                }
                None => {
                    problem.get_or_insert(format!("key {id} is outside the key space"));
                }
            }
        }
    }
    if let Some(m) = model {
        if problem.is_none() {
            if let Some(id) = (0..m.versions.len()).find(|&i| m.versions[i] != seen[i]) {
                problem = Some(format!(
                    "key {id}: table has version {:?}, the stream left {:?}",
                    seen[id], m.versions[id]
                ));
            }
        }
        facts.equals_model = problem.is_none();
        facts.mismatch = problem;
    }
    Ok(facts)
}

/// Time to reopen the table as the connector does at start: load it and rebuild the key
/// index from its files. Returns (seconds, keys, index bytes per key).
pub async fn reopen(config: &CatalogConfig, table: &str) -> Result<(f64, usize, f64)> {
    let catalog = Catalog::connect(config).await?;
    let ident = TableIdent::from_strs(table.split('.'))?;
    let started = Instant::now();
    let t = CdcTable::open(&catalog, &ident, TableOptions::default())
        .await?
        .context("the table exists")?;
    let secs = started.elapsed().as_secs_f64();
    let keys = t.index().len();
    Ok((
        secs,
        keys,
        t.index().heap_bytes() as f64 / keys.max(1) as f64,
    ))
}

/// Bytes of every file under a folder.
pub fn bytes_under(dir: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => pending.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_log_fields() {
        let v = [5, 1, 4, 2, 3, 10, 9, 8, 7, 6];
        assert_eq!(percentile(&v, 50.0), Some(5));
        assert_eq!(percentile(&v, 99.0), Some(10));
        assert_eq!(percentile(&[], 50.0), None);
        let log = "x DEBUG committed table=a records=3 commit_ms=41 age_ms=1002 applied=..\n\
                   x DEBUG chunk read last=3\n\
                   x DEBUG committed table=b records=1 commit_ms=7 age_ms=998";
        assert_eq!(commit_field(log, "commit_ms"), [41, 7]);
        assert_eq!(commit_field(log, "age_ms"), [1002, 998]);
    }

    #[test]
    fn cpu_of_proc_files() {
        // a command name with a space and a parenthesis; utime 250, stime 50 ticks
        let stat = "4242 (cdc (sink) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 7 0";
        assert_eq!(cpu_of_stat(stat), Some(3.0));
        assert_eq!(cpu_of_stat("4242 (short) S 1"), None);
        // user nice system idle iowait irq softirq steal guest guest_nice
        let proc_stat =
            "cpu  1000 20 300 90000 500 10 20 50 0 0\ncpu0 500 10 150 45000 250 5 10 25 0 0\n";
        assert_eq!(busy_of_proc_stat(proc_stat), Some(14.0));
        assert_eq!(busy_of_proc_stat("intr 1 2 3\n"), None);
    }
}
