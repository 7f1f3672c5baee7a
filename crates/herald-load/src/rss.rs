//! What the server under test uses, from `/proc/<pid>`: resident memory (`status`) and CPU
//! time (`stat`).

use crate::error::{Error, ErrorKind, Result};

/// Reads `VmRSS` of process `pid` in bytes (Linux only).
///
/// # Errors
/// [`ErrorKind::Io`] if the file cannot be read (no such process, not Linux) or has no
/// `VmRSS` line (a zombie).
pub(crate) fn read_rss_bytes(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path)
        .map_err(|e| Error::with_source(ErrorKind::Io, format!("cannot read {path}"), e))?;
    parse_vm_rss(&status)
        .ok_or_else(|| Error::new(ErrorKind::Io, format!("no VmRSS line in {path}")))
}

/// Clock ticks per second of `utime`/`stime` in `/proc/<pid>/stat`: the kernel's `USER_HZ`,
/// part of the user ABI and 100 on every architecture this runs on.
const USER_HZ: f64 = 100.0;

/// CPU time (user + system, all threads) process `pid` has used, in seconds, at the
/// resolution of [`USER_HZ`] (Linux only).
///
/// # Errors
/// [`ErrorKind::Io`] if `/proc/<pid>/stat` cannot be read or parsed.
pub(crate) fn read_cpu_seconds(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path)
        .map_err(|e| Error::with_source(ErrorKind::Io, format!("cannot read {path}"), e))?;
    parse_cpu_ticks(&stat)
        .map(|ticks| ticks as f64 / USER_HZ)
        .ok_or_else(|| Error::new(ErrorKind::Io, format!("no utime/stime in {path}")))
}

/// `utime + stime` (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name (field
/// 2) is in parentheses and may hold spaces or parentheses, so fields are counted after the
/// last `)`, where field 3 starts.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Finds `VmRSS:   1234 kB` and returns bytes.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next()? {
        "kB" => Some(value * 1024),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_line_is_read_in_bytes() {
        let status = "Name:\tdaphne\nVmPeak:\t  999 kB\nVmRSS:\t   51200 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(51_200 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    }

    #[test]
    fn cpu_ticks_are_counted_after_the_command_name() {
        // Field 14 (utime) = 7, field 15 (stime) = 5; the name holds a space and a ')'.
        let stat = "42 (herald (x) y) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 3 0 99";
        assert_eq!(parse_cpu_ticks(stat), Some(12));
        assert_eq!(parse_cpu_ticks("42 (x) S 1"), None);
    }

    #[test]
    fn own_process_cpu_time_grows() {
        let before = read_cpu_seconds(std::process::id()).unwrap();
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < std::time::Duration::from_millis(100) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(read_cpu_seconds(std::process::id()).unwrap() > before);
    }

    #[test]
    fn own_process_has_nonzero_rss() {
        assert!(read_rss_bytes(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn missing_process_is_an_io_error() {
        // Above the kernel's pid_max ceiling (2^22), so never a live pid.
        let err = read_rss_bytes(4_194_305).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io);
    }
}
