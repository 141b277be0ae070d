//! Giving back the page mappings of code and read-only data a daemon ran only to start or reload.
//!
//! A file-backed page counts in a process's resident set from the first time the process touches
//! it until the kernel reclaims it, and the kernel maps file pages in 64 KB windows around each
//! fault. Starting a daemon runs a lot of code once — the YAML parser for the whole schema,
//! certificate parsing, netlink, the device set-up — which then stays resident though the loop
//! never runs it again. [`release_clean_file_pages`] unmaps every page of the process's private,
//! read-only file mappings that holds nothing but the file's contents: the pages stay in the page
//! cache (shared, reclaimable) and whatever the daemon runs next simply faults back in.
//! `/proc/self/smaps` is read with the `procfs` crate; `madvise` comes from `nix`.
//! [`release_free_heap`] does the same for the heap: data-path buffers freed after a burst.

use std::ffi::c_void;
use std::io;
use std::ptr::NonNull;

use nix::sys::mman::{MmapAdvise, madvise};
use procfs::process::{MMPermissions, MMapPath, MemoryMap, Process};

/// What [`release_clean_file_pages`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// Mappings whose pages were unmapped.
    pub mappings: usize,
    /// Their resident bytes just before.
    pub bytes: u64,
}

/// Unmaps the resident pages of every private, read-only file mapping of this process that holds
/// no anonymous (copy-on-write) page: the executable's and the libraries' code and read-only
/// data. Mappings that are writable, shared, anonymous, or read-only but relocated at load time
/// (RELRO, which holds copy-on-write pages) are left alone.
pub fn release_clean_file_pages() -> io::Result<Released> {
    let maps = Process::myself().and_then(|p| p.smaps()).map_err(io::Error::other)?;
    let clean: Vec<(u64, u64, u64)> = maps
        .iter()
        .filter(|m| is_clean_file_mapping(m))
        .map(|m| (m.address.0, m.address.1, m.extension.map.get("Rss").copied().unwrap_or(0)))
        .collect();
    // Everything else first: what runs between the madvise calls faults its code back in.
    drop(maps);
    let mut released = Released::default();
    for &(start, end, rss) in &clean {
        let Some(addr) = NonNull::new(start as *mut c_void) else { continue };
        // SAFETY: the range is one whole mapping of this process as the kernel listed it a moment
        // ago: private, not writable, file-backed, with no anonymous page. MADV_DONTNEED on such a
        // mapping only drops page-table entries for pages the file still holds, so a later access
        // faults in the same bytes (what reclaim does under memory pressure); no memory is freed
        // or changed. A mapping that gained copy-on-write pages since would have to be unmapped
        // and replaced at the same address in between, which nothing in this process does (glibc
        // never unloads a library it loaded for name lookups).
        unsafe { madvise(addr, (end - start) as usize, MmapAdvise::MADV_DONTNEED) }.map_err(io::Error::from)?;
        released.mappings += 1;
        released.bytes += rss;
    }
    Ok(released)
}

/// Gives the pages of the heap's free memory back to the kernel (glibc's `malloc_trim`, every
/// arena): freed buffers otherwise stay resident for the allocator to reuse.
pub fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only takes the allocator's own locks and unmaps pages of free chunks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Private, not writable, backed by a file, and every resident page still the file's own.
fn is_clean_file_mapping(map: &MemoryMap) -> bool {
    let stats = &map.extension.map;
    matches!(map.pathname, MMapPath::Path(_))
        && map.perms.contains(MMPermissions::PRIVATE)
        && !map.perms.contains(MMPermissions::WRITE)
        && stats.get("Anonymous") == Some(&0)
        && stats.get("Rss").is_some_and(|&rss| rss > 0)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::num::NonZeroUsize;
    use std::os::fd::AsFd;

    use nix::sys::mman::{MapFlags, ProtFlags, mmap, mprotect, munmap};

    use super::*;

    fn mapping_at(addr: usize) -> MemoryMap {
        let maps = Process::myself().unwrap().smaps().unwrap();
        maps.into_iter().find(|m| m.address.0 as usize == addr).expect("the mapping is listed")
    }

    /// The test binary's own code is resident before and released after; a read-only private
    /// file mapping holding a page this process changed (what a relocated RELRO looks like) keeps
    /// that page: releasing it would bring back the file's bytes.
    #[test]
    fn releases_clean_code_and_keeps_changed_pages() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&[0x11; 8192]).unwrap();
        let len = NonZeroUsize::new(8192).unwrap();
        // SAFETY: a fresh private mapping of a file only this test holds; unmapped below.
        let ptr = unsafe {
            mmap(None, len, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_PRIVATE, file.as_fd(), 0)
        }
        .unwrap();
        // SAFETY: the mapping is 8 KB, readable and writable; the write copies the first page.
        unsafe { ptr.cast::<u8>().write(0x22) };
        // SAFETY: the same mapping, now read-only like RELRO after relocation.
        unsafe { mprotect(ptr, 8192, ProtFlags::PROT_READ) }.unwrap();
        let changed = mapping_at(ptr.as_ptr() as usize);
        assert!(!is_clean_file_mapping(&changed), "a mapping with a copy-on-write page is not clean");

        let released = release_clean_file_pages().unwrap();
        assert!(released.mappings > 0 && released.bytes > 0, "{released:?}");
        // SAFETY: still mapped and readable.
        assert_eq!(unsafe { ptr.cast::<u8>().read() }, 0x22, "the changed page kept its byte");
        // SAFETY: this test's mapping, no longer used.
        unsafe { munmap(ptr, 8192) }.unwrap();

        // Right after, the clean mappings hold a fraction of what they held (what runs since,
        // here and in tests on other threads, faults back in).
        let maps = Process::myself().unwrap().smaps().unwrap();
        let resident: u64 = maps.iter().filter(|m| is_clean_file_mapping(m)).map(|m| m.extension.map["Rss"]).sum();
        assert!(resident < released.bytes / 2, "{resident} bytes resident again after releasing {released:?}");
    }
}
