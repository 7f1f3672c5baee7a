//! Raising the open-file limit: every socket is a file descriptor.

use crate::error::{Error, ErrorKind, Result};

/// Raises this process's `RLIMIT_NOFILE` soft limit to at least `wanted` (capped by the hard
/// limit, which only root may raise) and returns the soft limit now in force.
///
/// # Errors
/// [`ErrorKind::Io`] if the limit cannot be read or set.
pub fn raise_nofile_limit(wanted: u64) -> Result<u64> {
    let (soft, hard) = rlimit::Resource::NOFILE
        .get()
        .map_err(|e| Error::with_source(ErrorKind::Io, "cannot read RLIMIT_NOFILE", e))?;
    if soft >= wanted {
        return Ok(soft);
    }
    // Try to raise the hard limit too (works as root); fall back to the current hard limit.
    if wanted > hard && rlimit::Resource::NOFILE.set(wanted, wanted).is_ok() {
        return Ok(wanted);
    }
    let target = wanted.min(hard);
    rlimit::Resource::NOFILE
        .set(target, hard)
        .map_err(|e| Error::with_source(ErrorKind::Io, "cannot raise RLIMIT_NOFILE", e))?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_to_the_current_soft_limit_is_a_no_op() {
        let (soft, _) = rlimit::Resource::NOFILE.get().unwrap();
        assert_eq!(raise_nofile_limit(soft).unwrap(), soft);
    }
}
