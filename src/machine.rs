//! What the machine has: free space on a filesystem and total memory, as the creation
//! budgets (README, *Configuration*, `GWAR_MAX_TOTAL_SYSTEMS` and `GWAR_MIN_FREE_DISK`)
//! read them.
//!
//! A leaf: imports nothing of the crate. Both answers are cheap system calls (or one small
//! file of `/proc`) and may be asked on every creation and every scrape; neither caches.

use std::path::Path;

/// Bytes a process without privileges may still write on the filesystem holding `path`
/// (`statvfs`: available blocks × fragment size; the root-reserved blocks are left out,
/// as the daemon should not count on them).
pub(crate) fn free_disk_bytes(path: &Path) -> std::io::Result<u64> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    // The field types differ between platforms (u32 on some, u64 on Linux).
    #[allow(clippy::useless_conversion)]
    let (available, fragment) = (u64::from(stat.blocks_available()), stat.fragment_size());
    #[allow(clippy::useless_conversion)]
    let fragment = u64::from(fragment);
    Ok(available.saturating_mul(fragment))
}

/// The machine's memory (`MemTotal` of `/proc/meminfo`), in bytes; `None` where that file
/// is missing or says nothing readable.
pub(crate) fn memory_total_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_total(&text)
}

/// `MemTotal:   24683772 kB` → bytes.
fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let amount: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => amount.checked_mul(1024),
        None => Some(amount),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_reads_kilobytes() {
        let text = "MemTotal:       24683772 kB\nMemFree:  1 kB\n";
        assert_eq!(parse_mem_total(text), Some(24_683_772 * 1024));
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_mem_total("MemTotal: lots kB\n"), None);
        assert!(memory_total_bytes().is_some_and(|bytes| bytes > 0));
    }

    #[test]
    fn free_space_of_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_disk_bytes(dir.path()).unwrap() > 0);
        assert!(free_disk_bytes(&dir.path().join("missing/deeper")).is_err());
    }
}
