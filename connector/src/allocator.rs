//! The process's allocator: mimalloc rather than glibc's malloc. The batches, the key index
//! and the transform workers allocate from several threads, and glibc's per-thread arenas
//! held ~120 MB more resident (BENCHMARKS.md, the memory soak).

use std::ffi::{c_int, c_long};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long mimalloc keeps freed memory before giving it back to the system, in
/// milliseconds, when the connector runs the SmartModule's `.wasm` itself (and
/// `MIMALLOC_PURGE_DELAY` does not say otherwise). mimalloc's own default, 1000 ms, is about
/// one commit interval: on 5M events over 1M keys, the `.wasm` path peaked at 425 MB with
/// it, 375 MB with 10 ms, for ~8% of its speed (BENCHMARKS.md has the table; 0 cost a
/// quarter). The native engine peaks lower and lost ~10% at 10 or 30 ms: it keeps the
/// default.
pub const WASM_PURGE_DELAY_MS: c_long = 10;

/// The environment variable mimalloc reads its purge delay from at start.
const PURGE_DELAY_ENV: &str = "MIMALLOC_PURGE_DELAY";

/// `mi_option_purge_delay` in the mimalloc v3 header `libmimalloc-sys` builds
/// (`mimalloc.h`, `mi_option_e`); the crate does not name it.
const MI_OPTION_PURGE_DELAY: c_int = 15;

extern "C" {
    fn mi_option_get(option: c_int) -> c_long;
    fn mi_option_set(option: c_int, value: c_long);
}

/// Sets the purge delay to [`WASM_PURGE_DELAY_MS`] when the connector runs the `.wasm`
/// (`runs_wasm`) and the environment chose none, and returns the one in effect. mimalloc
/// reads the option each time it considers purging: setting it once the config is read
/// is early enough.
pub fn configure(runs_wasm: bool) -> c_long {
    if runs_wasm && std::env::var_os(PURGE_DELAY_ENV).is_none() {
        // SAFETY: mimalloc's option calls take any option number and value; they only
        // store and read an integer
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, WASM_PURGE_DELAY_MS) }
    }
    purge_delay_ms()
}

/// The purge delay mimalloc works with now.
fn purge_delay_ms() -> c_long {
    // SAFETY: as in `configure`
    unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option number is the purge delay's: before `configure` sets it, it reads what
    /// mimalloc took from the environment at start (its default, 1000 ms, without), a
    /// value no neighbouring option has; then ours, unless the environment set one.
    #[test]
    fn configure_sets_mimallocs_purge_delay_for_the_wasm_unless_the_environment_did() {
        let from_env = std::env::var(PURGE_DELAY_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<c_long>().ok());
        let at_start = from_env.unwrap_or(1000);
        assert_eq!(purge_delay_ms(), at_start);
        assert_eq!(configure(false), at_start, "the native engine keeps it");
        let in_effect = configure(true);
        assert_eq!(in_effect, from_env.unwrap_or(WASM_PURGE_DELAY_MS));
        assert_eq!(purge_delay_ms(), in_effect);
    }
}
