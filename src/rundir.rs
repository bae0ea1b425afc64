//! The run directory: one private directory per run, for the control socket and
//! `${run.dir}` (stages' scratch space). The one place that creates it.
//!
//! It is made under `$XDG_RUNTIME_DIR` (else the temp dir) with a name nobody can
//! predict, with `mkdir` (which never follows or reuses an existing path), mode 0700,
//! and then checked: owned by this user, a real directory, no access for anyone else.
//! prun removes it at the end of a run; when prun is SIGKILLed, its guardian does.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Create a private (0700) run directory and check it.
pub fn create() -> io::Result<PathBuf> {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let pid = std::process::id();
    let mut last_err = None;
    for attempt in 0..100u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = base.join(format!(
            "prun-{pid}-{:x}",
            nanos ^ attempt.wrapping_mul(0x9e37_79b9)
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {
                // The umask may have narrowed the mode; it cannot have widened it, but
                // make it exact so the check holds.
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
                check(&dir)?;
                return Ok(dir);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("cannot create a run directory")))
}

/// The directory is private: a directory (not a link), owned by this user, mode 0700.
pub fn check(dir: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(dir)?;
    let uid = nix::unistd::geteuid().as_raw();
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "run directory {} must be a directory of this user that nobody else can access (mode 0700)",
                dir.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_run_directory_is_private_and_unique() {
        let a = create().unwrap();
        let b = create().unwrap();
        assert_ne!(a, b);
        let meta = std::fs::metadata(&a).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        check(&a).unwrap();
        std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(check(&a).is_err());
        std::fs::remove_dir(&a).unwrap();
        std::fs::remove_dir(&b).unwrap();
    }
}
