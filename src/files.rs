//! Small files written whole or not at all: a reader (this process after a
//! crash, or an operator) finds the old content or the new, never a torn
//! mix. Written beside the target, synced, renamed over it, and the
//! directory entry synced.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` whole or not at all; on failure the old file
/// is untouched and nothing is left beside it.
pub fn write_whole(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temp = temp_beside(path)?;
    let written = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        match path.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(dir) => std::fs::File::open(dir)?.sync_all(),
            None => Ok(()),
        }
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

/// `dir/.NAME.tmp` for `dir/NAME`: hidden, and in the same directory (a
/// rename is atomic within one file system only).
fn temp_beside(path: &Path) -> std::io::Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{}: not a file name", path.display()),
        )
    })?;
    let mut temp = std::ffi::OsString::from(".");
    temp.push(name);
    temp.push(".tmp");
    Ok(path.with_file_name(temp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_replaced_whole_and_nothing_is_left_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("members.json");
        write_whole(&path, b"one").unwrap();
        write_whole(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("members.json")]);
        // A target that cannot be written: the old content stays.
        let missing = dir.path().join("no-such-dir").join("x");
        assert!(write_whole(&missing, b"three").is_err());
        assert!(write_whole(dir.path(), b"three").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
    }
}
