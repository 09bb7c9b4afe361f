//! The data directory's permissions. It holds message text (the store's journal and tables),
//! the audit log and the control socket, so only the node's own user may read it: the
//! directory and every directory below it 0700, every file 0600. The binary also sets a
//! umask of 077, so that what the store creates later is private too.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Permission bits for the group and others.
const OPEN_BITS: u32 = 0o077;

/// Entries below the data directory examined at most: a store holds hundreds of files, not
/// millions, and a start must not walk a tree mounted there by mistake for ever.
const MAX_ENTRIES: usize = 1_000_000;

/// What [`secure`] changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tightened {
    /// Entries whose group or other permissions were removed.
    pub entries: u64,
    /// The first few of them, for the log.
    pub examples: Vec<PathBuf>,
    /// Entries too open that the node may not change (another user's, e.g. a backup written
    /// by root): left as they are, for the log.
    pub not_ours: u64,
}

/// Creates `dir` (mode 0700) if it is missing, and removes the group and other permission
/// bits of `dir` and of everything below it (symbolic links are not followed). Returns what
/// was too open: the caller warns, as ssh does for a private key readable by others.
pub fn secure(dir: &Path) -> io::Result<Tightened> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mut tightened = Tightened::default();
    let mut stack = vec![dir.to_path_buf()];
    let mut seen = 0;
    while let Some(path) = stack.pop() {
        seen += 1;
        if seen > MAX_ENTRIES {
            break;
        }
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode();
        if mode & OPEN_BITS != 0 {
            match std::fs::set_permissions(
                &path,
                std::fs::Permissions::from_mode(mode & !OPEN_BITS),
            ) {
                Ok(()) => {
                    tightened.entries += 1;
                    if tightened.examples.len() < 3 {
                        tightened.examples.push(path.clone());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => tightened.not_ours += 1,
                Err(e) => return Err(e),
            }
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(tightened)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_private_and_tightens_what_is_open() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        assert_eq!(secure(&dir).unwrap(), Tightened::default());
        assert_eq!(mode(&dir), 0o700);
        let store = dir.join("store");
        std::fs::create_dir(&store).unwrap();
        std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o755)).unwrap();
        let journal = store.join("0.jnl");
        std::fs::write(&journal, b"text").unwrap();
        std::fs::set_permissions(&journal, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.join("link")).unwrap();
        let t = secure(&dir).unwrap();
        assert_eq!(t.entries, 2);
        assert_eq!(mode(&store), 0o700);
        assert_eq!(mode(&journal), 0o600);
        // A link's target is not ours to change.
        assert_ne!(mode(Path::new("/etc/hostname")) & OPEN_BITS, 0);
        assert_eq!(secure(&dir).unwrap().entries, 0);
    }
}
