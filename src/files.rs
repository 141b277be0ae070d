//! Reading inputs with errors that name the file, and writing outputs that never clobber.
//!
//! Secrets are written atomically with mode 0600: a temporary file in the same directory is
//! created exclusively, filled, fsynced, then hard-linked to its final name (which fails if the
//! name exists, so a race cannot overwrite a key either) and unlinked.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rand_core::{OsRng, RngCore};

/// File mode for private keys and certificates (as `nebula-cert` writes them).
pub const SECRET_MODE: u32 = 0o600;

/// Reads `path`, naming it and what it is (`"CA certificate"`) on error.
pub fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("reading {what} {}", path.display()))
}

/// Fails, naming the file, if any of `outputs` already exists. Call before doing any work so a
/// refused command leaves nothing half-written.
pub fn ensure_absent(outputs: &[(&Path, &str)]) -> Result<()> {
    for (path, what) in outputs {
        if path.symlink_metadata().is_ok() {
            bail!("refusing to overwrite existing {what}: {}", path.display());
        }
    }
    Ok(())
}

/// Writes a new file atomically with `mode`; refuses to replace an existing one.
pub fn write_new(path: &Path, contents: &[u8], mode: u32, what: &str) -> Result<()> {
    ensure_absent(&[(path, what)])?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().with_context(|| format!("{what} path {} has no file name", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp-{:016x}", name.to_string_lossy(), OsRng.next_u64()));
    let result = (|| -> Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("creating {what} in {}", dir.display()))?;
        f.write_all(contents)?;
        f.sync_all()?;
        fs::hard_link(&tmp, path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                anyhow::anyhow!("refusing to overwrite existing {what}: {}", path.display())
            } else {
                anyhow::Error::new(e).context(format!("writing {what} {}", path.display()))
            }
        })?;
        Ok(())
    })();
    let _ = fs::remove_file(&tmp);
    result?;
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Replaces `path` atomically: the new contents go to a fresh file in the same directory
/// (0600, fsynced, via [`write_new`]), which is then renamed over the old one, so a reader sees
/// the old or the new file and never half of one.
pub fn replace(path: &Path, contents: &[u8], what: &str) -> Result<()> {
    let name = path.file_name().with_context(|| format!("{what} path {} has no file name", path.display()))?;
    let tmp = path.with_file_name(format!(".{}.renew-{:016x}", name.to_string_lossy(), OsRng.next_u64()));
    write_new(&tmp, contents, SECRET_MODE, what)?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        anyhow::Error::new(e).context(format!("replacing {what} {}", path.display()))
    })?;
    if let Some(dir) =
        path.parent().and_then(|d| File::open(if d.as_os_str().is_empty() { Path::new(".") } else { d }).ok())
    {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_0600_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("host.key");
        write_new(&p, b"secret", SECRET_MODE, "host key").unwrap();
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        let err = write_new(&p, b"other", SECRET_MODE, "host key").unwrap_err();
        assert_eq!(err.to_string(), format!("refusing to overwrite existing host key: {}", p.display()));
        assert_eq!(fs::read(&p).unwrap(), b"secret");
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn read_error_names_the_file() {
        let err = read(Path::new("/nonexistent/ca.crt"), "CA certificate").unwrap_err();
        assert!(format!("{err:#}").starts_with("reading CA certificate /nonexistent/ca.crt: "));
    }
}
