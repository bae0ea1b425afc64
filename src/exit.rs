//! prun's exit codes (SPEC 7, docs/cli.md): the one table, shared by the runtime (which
//! decides a run's outcome), the reporter (which can fail writing) and the CLI.
//!
//! Beyond 0, 2, 130 and 143, a run exits with the code of the first instance that
//! failed (128+N for a signal, 124 for a timeout). prun's own failures take codes from
//! `sysexits.h`, below 124 so that none reads as "killed by a signal" or "interrupted".

/// Every non-daemon instance succeeded.
pub const OK: i32 = 0;
/// `validate`: the file has errors.
pub const INVALID: i32 = 1;
/// Usage error, or `run` of an invalid pipeline (nothing was started).
pub const USAGE: i32 = 2;
/// The first failure was a readiness probe that failed or timed out
/// (`EX_UNAVAILABLE`: the service never became available).
pub const READY_FAILED: i32 = 69;
/// prun found a deadlock: instances wait for what nothing can give any more
/// (`EX_SOFTWARE`).
pub const DEADLOCK: i32 = 70;
/// A log (`--log-dir`, the terminal aside), report, journal or JUnit file could not be
/// written (`EX_IOERR`).
pub const WRITE_FAILED: i32 = 74;
/// An instance timed out (as `timeout(1)`).
pub const TIMED_OUT: i32 = 124;
/// Interrupted by SIGINT (`prun stop` too) / SIGTERM.
pub const INTERRUPTED: i32 = 130;
pub const TERMINATED: i32 = 143;

/// The exit code of a run that otherwise ended with `code`, when a write failed: a run
/// that succeeded fails with [`WRITE_FAILED`]; an earlier failure keeps its code.
pub fn with_write_failure(code: i32) -> i32 {
    if code == OK { WRITE_FAILED } else { code }
}
