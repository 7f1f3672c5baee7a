//! Resident memory of the server under test, from `/proc/<pid>/status`.

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
