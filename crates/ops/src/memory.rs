//! Transparent huge pages, off by default in truc's processes.
//!
//! mimalloc asks the kernel for huge pages on its arenas. With them, a few
//! touched bytes make 2 MiB resident, and a page fault after the allocator
//! has given memory back zeroes 2 MiB on the path of whatever call made it:
//! tail latency under moderate load, and resident sizes well over what the
//! work needs ([ADR 0020](../../../docs/adr/0020-no-transparent-huge-pages.md)).
//! An operator who wants them sets `MIMALLOC_ALLOW_THP=1`; any value of
//! that variable is left for mimalloc to apply as it documents.

/// The variable mimalloc reads at start to allow or forbid huge pages.
pub const ALLOW_THP_VAR: &str = "MIMALLOC_ALLOW_THP";

/// Turns transparent huge pages off for this process (and the processes it
/// starts), unless `allow_thp`, the value of [`ALLOW_THP_VAR`], is set.
/// Returns whether it turned them off.
pub fn small_pages_unless_asked(allow_thp: Option<&std::ffi::OsStr>) -> std::io::Result<bool> {
    if allow_thp.is_some() {
        return Ok(false);
    }
    #[cfg(target_os = "linux")]
    {
        rustix::thread::disable_transparent_huge_pages(true).map_err(std::io::Error::from)?;
        Ok(true)
    }
    #[cfg(not(target_os = "linux"))]
    {
        Ok(false)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn huge_pages_are_turned_off_unless_the_operator_chose() {
        // A chosen value is mimalloc's to apply: nothing changes here.
        let before = rustix::thread::transparent_huge_pages_are_disabled().expect("prctl");
        assert!(!small_pages_unless_asked(Some(std::ffi::OsStr::new("1"))).expect("prctl"));
        assert_eq!(
            rustix::thread::transparent_huge_pages_are_disabled().expect("prctl"),
            before
        );
        // No choice: off, for the whole process.
        assert!(small_pages_unless_asked(None).expect("prctl"));
        assert!(rustix::thread::transparent_huge_pages_are_disabled().expect("prctl"));
    }
}
