//! What the disk can do to a node: a byte flipped anywhere in a file, a file
//! cut short, a file system that fills up (a small tmpfs of the test's own,
//! so the disk really says ENOSPC).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A small, seeded random source (xorshift64*), so a failing run can be
/// repeated with FAULT_SEED.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// Every file a node persisted under its data directory (not the ones a
/// rejoin set aside, not the test's log).
pub fn persisted_files(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with("damaged-") {
                continue;
            }
            if path.is_dir() {
                walk(&path, out);
            } else if path.metadata().is_ok_and(|m| m.len() > 0) {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort();
    out
}

/// Flips one bit of one byte of `path`: anywhere, or (`tail`) within its
/// last 64 KiB, where the newest writes are. Returns the offset.
pub fn flip_byte(path: &Path, rng: &mut Rng, tail: bool) -> u64 {
    let mut bytes = std::fs::read(path).expect("read the file to damage");
    let len = bytes.len() as u64;
    let from = if tail {
        len.saturating_sub(64 << 10)
    } else {
        0
    };
    let at = from + rng.below(len - from);
    bytes[at as usize] ^= 1 << rng.below(8);
    std::fs::write(path, &bytes).expect("write the damaged file");
    at
}

/// Cuts `path` short at a random length; returns it.
pub fn truncate(path: &Path, rng: &mut Rng) -> u64 {
    let len = std::fs::metadata(path).expect("file").len();
    let at = rng.below(len);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open the file to truncate");
    file.set_len(at).expect("truncate");
    at
}

/// A tmpfs of `size_mb` MiB mounted on `dir` for the test's life.
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    pub fn mount(dir: &Path, size_mb: u32) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mount a tmpfs on {} (needs root)",
            dir.display()
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }

    /// Fills the file system: a file written until the disk says it is
    /// full. Returns its path, to free the space again.
    pub fn fill(&self) -> PathBuf {
        let path = self.dir.join("filler");
        let mut file = std::fs::File::create(&path).expect("filler");
        let chunk = vec![0x5au8; 1 << 20];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling {}: {e}", self.dir.display()),
            }
        }
        // The last partial megabyte too.
        for _ in 0..1024 {
            if file.write(&chunk[..1024]).is_err() {
                break;
            }
        }
        path
    }

    pub fn free_bytes(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.dir)
            .output()
            .expect("df");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}
