//! What the sidecar asks of the kernel about its own memory pages: small pages for its heap,
//! and start-up's pages of the program handed back once it serves.

/// Keeps the heap on 4 KiB pages. mimalloc asks the kernel for transparent huge pages on its
/// arenas (`madvise`), so each 2 MiB region it touches becomes resident whole: an idle sidecar
/// held 12 MiB of huge pages for under 2 MiB of live heap (RSS 28.8 MB, of it 13.3 MB
/// anonymous; with this call 17.6 MB, 2.0 MB anonymous, same build, same config). A sidecar's
/// heap is small and spread over many short-lived buffers, where huge pages buy little TLB reach
/// and cost memory on every node. PR_SET_THP_DISABLE is the documented per-process switch
/// (prctl(2)); it covers kernels whose THP mode is `always`. It runs after the first
/// allocations (reading the command line allocates), so mimalloc is also built with `no_thp`
/// and never asks for huge pages itself: under the usual `madvise` mode, those first
/// allocations had still put two huge pages in its arena (idle anonymous memory 5.3 MB; with
/// `no_thp` 1.8 MB).
pub fn small_pages() {
    // SAFETY: prctl with integer arguments only; no memory is passed to the kernel.
    // Called before the log is set up, so a failure (a kernel without the switch) is silent:
    // it only costs memory.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

/// What [`return_start_up_pages`] did: how many mappings it advised and the process's
/// file-backed resident memory (`RssFile`, kB) before and after.
#[derive(Debug)]
pub struct Returned {
    pub mappings: usize,
    pub file_kb_before: Option<u64>,
    pub file_kb_after: Option<u64>,
}

/// Hands the kernel back the pages of the program (and its libraries) that start-up touched,
/// so that what stays resident is what serving uses.
///
/// Why: the sidecar's code is one 25 MB binary, most of it run once or never (configuration
/// parsing, certificate loading, the CA client, the other commands). Every page fault on it maps
/// the surrounding pages too (the kernel's fault-around, 64 KiB), so start-up alone left
/// 12–15 MB of the binary resident, against about 2 MB of heap. Those pages are clean copies of
/// the file: dropping them from our page tables (`MADV_DONTNEED`) loses nothing, they stay in
/// the page cache (shared with every other sidecar of the node), and a page the proxy needs
/// again comes back on its next touch as a minor fault, without reading the disk.
///
/// Only read-only private file mappings that hold no anonymous page are advised: a page the
/// process wrote (relocated read-only data, a debugger's breakpoint) is its own copy, and
/// `MADV_DONTNEED` would throw it away; such a mapping is left alone whole.
pub fn return_start_up_pages() -> Returned {
    let file_kb_before = rss_file_kb();
    let mut mappings = 0;
    if let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") {
        for (start, len) in clean_file_mappings(&smaps) {
            // SAFETY: the range is a whole mapping of this process that /proc/self/smaps just
            // listed as a private, read-only file mapping without anonymous pages, so every
            // resident page in it is an unmodified copy of the file; MADV_DONTNEED only unmaps
            // them and the next access maps the same bytes again from the page cache. Nothing
            // maps or writes those ranges meanwhile (the program maps no code at run time).
            let r = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
            if r == 0 {
                mappings += 1;
            }
        }
    }
    Returned {
        mappings,
        file_kb_before,
        file_kb_after: rss_file_kb(),
    }
}

fn rss_file_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("RssFile:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The mappings in a `/proc/<pid>/smaps` text that may be dropped from the page tables: backed
/// by a file (a path), readable, not writable, private, with resident pages and no anonymous
/// ones. Returns (start address, length) pairs.
fn clean_file_mappings(smaps: &str) -> Vec<(usize, usize)> {
    struct Mapping {
        start: usize,
        len: usize,
        eligible: bool,
        rss_kb: Option<u64>,
        anonymous_kb: Option<u64>,
    }
    let mut out = Vec::new();
    let mut current: Option<Mapping> = None;
    let finish = |m: Option<Mapping>, out: &mut Vec<(usize, usize)>| {
        if let Some(m) = m {
            if m.eligible && m.anonymous_kb == Some(0) && m.rss_kb.is_some_and(|r| r > 0) {
                out.push((m.start, m.len));
            }
        }
    };
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some(key) = first.strip_suffix(':') {
            let value = fields.next().and_then(|v| v.parse::<u64>().ok());
            if let Some(m) = current.as_mut() {
                match key {
                    "Rss" => m.rss_kb = value,
                    "Anonymous" => m.anonymous_kb = value,
                    _ => {}
                }
            }
            continue;
        }
        // A mapping's header: `start-end perms offset dev inode [path]`.
        finish(current.take(), &mut out);
        let range = first.split_once('-').and_then(|(a, b)| {
            Some((
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
            ))
        });
        let perms = fields.next().unwrap_or("");
        let path = fields.nth(3);
        let Some((start, end)) = range.filter(|(a, b)| b > a) else {
            continue;
        };
        let p = perms.as_bytes();
        let eligible = p.len() == 4
            && p[0] == b'r'
            && p[1] == b'-'
            && p[3] == b'p'
            && path.is_some_and(|p| p.starts_with('/'));
        current = Some(Mapping {
            start,
            len: end - start,
            eligible,
            rss_kb: None,
            anonymous_kb: None,
        });
    }
    finish(current.take(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0a0000000-55d0a0400000 r--p 00000000 fd:01 1234 /usr/bin/trustmesh
Size:               4096 kB
Rss:                 812 kB
Anonymous:             0 kB
VmFlags: rd mr mw me sd
55d0a0400000-55d0a1c00000 r-xp 00400000 fd:01 1234 /usr/bin/trustmesh
Size:              24576 kB
Rss:                9012 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me sd
55d0a1c00000-55d0a1e00000 r--p 01c00000 fd:01 1234 /usr/bin/trustmesh
Size:               2048 kB
Rss:                1020 kB
Anonymous:           640 kB
VmFlags: rd mr mw me ac sd
55d0a1e00000-55d0a1e10000 rw-p 01e00000 fd:01 1234 /usr/bin/trustmesh
Size:                 64 kB
Rss:                  64 kB
Anonymous:            40 kB
55d0a2000000-55d0a2400000 rw-p 00000000 00:00 0 [heap]
Rss:                 300 kB
Anonymous:           300 kB
7f0000000000-7f0000010000 r--p 00000000 fd:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                  64 kB
Anonymous:             0 kB
7f0000010000-7f0000020000 r-xp 00010000 fd:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                   0 kB
Anonymous:             0 kB
7f0000030000-7f0000040000 r--s 00000000 fd:01 77 /dev/shm/shared
Rss:                   8 kB
Anonymous:             0 kB
7ffc00000000-7ffc00002000 r-xp 00000000 00:00 0 [vdso]
Rss:                   8 kB
Anonymous:             0 kB
";

    #[test]
    fn only_clean_read_only_private_file_mappings_with_resident_pages_are_chosen() {
        assert_eq!(
            clean_file_mappings(SMAPS),
            vec![
                (0x55d0a0000000, 0x400000),
                (0x55d0a0400000, 0x1800000),
                (0x7f0000000000, 0x10000),
            ]
        );
    }

    #[test]
    fn a_mapping_whose_anonymous_line_is_missing_is_left_alone() {
        let smaps = "1000-2000 r-xp 00000000 fd:01 1 /bin/x\nRss: 4 kB\n";
        assert!(clean_file_mappings(smaps).is_empty());
    }

    #[test]
    fn returning_this_test_programs_pages_leaves_it_running_with_fewer_resident() {
        // The test binary's own code: after the call its pages come back as it runs on.
        let r = return_start_up_pages();
        assert!(r.mappings > 0, "{r:?}");
        let (Some(before), Some(after)) = (r.file_kb_before, r.file_kb_after) else {
            panic!("RssFile unreadable: {r:?}");
        };
        assert!(after < before, "{r:?}");
        // Still running the code it just dropped, with the same results.
        let v: Vec<u64> = (1..=10).map(|i| i * i).collect();
        assert_eq!(v.iter().sum::<u64>(), 385);
    }
}
