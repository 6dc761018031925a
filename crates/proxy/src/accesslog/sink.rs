//! Writing batches of access-log records so that a failing output (a full disk, a closed pipe)
//! loses whole records, each one counted, and never leaves half a JSON line behind.
//!
//! Why: a full disk made `write_all` stop in the middle of a batch; the lines after that point
//! vanished without being counted, and the record it was writing stayed cut in half, which
//! breaks every log shipper that parses the file line by line.
//!
//! A write that fails part-way through a record is taken back where the output allows it (a
//! regular file is truncated to the end of the last whole record); where it does not, the rest
//! of that record is kept and written first the next time, so the line is completed as soon as
//! the output accepts bytes again.

use std::io::Write;

/// Where batches go.
pub trait Sink: Write {
    /// Removes the last `n` bytes written; false where the output cannot (a pipe, a terminal).
    fn discard_tail(&mut self, _n: u64) -> bool {
        false
    }
}

/// File descriptor 1 written directly. Not `std::io::Stdout`: its line buffer would hide how
/// many bytes really reached the file when a write fails part-way, and could hold half a record
/// of its own.
pub struct RawStdout(std::mem::ManuallyDrop<std::fs::File>);

impl RawStdout {
    pub fn new() -> RawStdout {
        use std::os::fd::FromRawFd;
        // SAFETY: fd 1 stays open for the process's life; ManuallyDrop never closes it.
        RawStdout(std::mem::ManuallyDrop::new(unsafe {
            std::fs::File::from_raw_fd(1)
        }))
    }
}

impl Write for RawStdout {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Sink for RawStdout {
    /// stdout redirected to a regular file: truncate it back by `n` bytes (and move the write
    /// offset there, for a file not opened in append mode).
    fn discard_tail(&mut self, n: u64) -> bool {
        let fd = 1;
        // SAFETY: fstat/lseek/ftruncate on our own stdout descriptor with a local struct.
        unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::fstat(fd, &mut st) != 0 || (st.st_mode & libc::S_IFMT) != libc::S_IFREG {
                return false;
            }
            let end = libc::lseek(fd, 0, libc::SEEK_CUR);
            let Ok(n) = libc::off_t::try_from(n) else {
                return false;
            };
            if end < n {
                return false;
            }
            libc::ftruncate(fd, end - n) == 0 && libc::lseek(fd, end - n, libc::SEEK_SET) >= 0
        }
    }
}

/// The writer's memory between batches.
#[derive(Default)]
pub struct Writer {
    /// The unwritten end of a record that was cut by a failed write and could not be taken
    /// back: it goes out before anything else.
    carry: Vec<u8>,
    /// Whether the last write failed (a failure is logged once, when it starts).
    failing: bool,
}

impl Writer {
    pub const fn new() -> Writer {
        Writer {
            carry: Vec::new(),
            failing: false,
        }
    }

    /// Writes `batch` (whole records, each ending in `\n`); returns how many records were lost.
    pub fn write(&mut self, sink: &mut dyn Sink, batch: &[u8]) -> u64 {
        if !self.carry.is_empty() {
            let carry = std::mem::take(&mut self.carry);
            match write_some(sink, &carry) {
                Ok(()) => {}
                Err((done, e)) => {
                    self.carry = carry[done..].to_vec();
                    // Nothing else may go out before the cut record is whole.
                    return self.failed(&e, count_records(batch));
                }
            }
        }
        match write_some(sink, batch) {
            Ok(()) => {
                let _ = sink.flush();
                if self.failing {
                    self.failing = false;
                    tracing::info!("access log: writing works again");
                }
                0
            }
            Err((done, e)) => {
                let start = batch[..done]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
                let cut = done - start;
                let mut lost = count_records(&batch[done..]);
                if cut > 0 {
                    if sink.discard_tail(cut as u64) {
                        // Taken back whole: that record is among the lost ones.
                    } else {
                        // Finish it later; it is not lost.
                        let end = batch[done..]
                            .iter()
                            .position(|&b| b == b'\n')
                            .map_or(batch.len(), |i| done + i + 1);
                        self.carry = batch[done..end].to_vec();
                        lost -= 1;
                    }
                }
                self.failed(&e, lost)
            }
        }
    }

    /// Forgets a cut record still to be finished (the output changed); returns 1 if there
    /// was one, now lost.
    pub fn abandon(&mut self) -> u64 {
        let had = !self.carry.is_empty();
        self.carry.clear();
        self.failing = false;
        u64::from(had)
    }

    /// The output could not be opened: the whole batch is lost.
    pub fn unwritable(&mut self, e: &std::io::Error, batch: &[u8]) -> u64 {
        self.failed(e, count_records(batch))
    }

    fn failed(&mut self, e: &std::io::Error, lost: u64) -> u64 {
        if !self.failing {
            self.failing = true;
            tracing::error!("access log: writing failed ({e}); records are dropped and counted in trustmesh_access_log_dropped_total until it works again");
        }
        lost
    }
}

fn count_records(b: &[u8]) -> u64 {
    b.iter().filter(|&&c| c == b'\n').count() as u64
}

/// Writes all of `b`, or says how far it got and why it stopped.
fn write_some(sink: &mut dyn Sink, b: &[u8]) -> Result<(), (usize, std::io::Error)> {
    let mut done = 0;
    while done < b.len() {
        match sink.write(&b[done..]) {
            Ok(0) => {
                return Err((
                    done,
                    std::io::Error::new(std::io::ErrorKind::WriteZero, "output accepts no bytes"),
                ))
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err((done, e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A disk with room for `room` more bytes; `truncatable` like a regular file.
    struct Disk {
        data: Vec<u8>,
        room: usize,
        truncatable: bool,
    }

    impl Write for Disk {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if self.room == 0 {
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
            }
            let n = b.len().min(self.room);
            self.data.extend_from_slice(&b[..n]);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Sink for Disk {
        fn discard_tail(&mut self, n: u64) -> bool {
            if self.truncatable {
                let keep = self.data.len() - n as usize;
                self.room += n as usize;
                self.data.truncate(keep);
            }
            self.truncatable
        }
    }

    fn lines(n: std::ops::Range<usize>) -> Vec<u8> {
        n.map(|i| format!("{{\"n\":{i}}}\n"))
            .collect::<String>()
            .into_bytes()
    }

    #[test]
    fn a_full_file_keeps_whole_records_and_counts_the_rest() {
        let mut disk = Disk {
            data: Vec::new(),
            room: 20, // two records of 8 bytes, and 4 bytes of a third
            truncatable: true,
        };
        let mut w = Writer::default();
        assert_eq!(w.write(&mut disk, &lines(0..5)), 3);
        assert_eq!(disk.data, lines(0..2), "the cut record was taken back");
        // Still full: everything of the next batch is counted.
        disk.room = 0;
        assert_eq!(w.write(&mut disk, &lines(5..8)), 3);
        // Room again: writing resumes with whole records.
        disk.room = 1000;
        assert_eq!(w.write(&mut disk, &lines(8..10)), 0);
        let mut want = lines(0..2);
        want.extend(lines(8..10));
        assert_eq!(disk.data, want);
    }

    #[test]
    fn where_a_cut_cannot_be_taken_back_it_is_finished_first() {
        let mut disk = Disk {
            data: Vec::new(),
            room: 13,
            truncatable: false,
        };
        let mut w = Writer::default();
        // One whole record, 4 bytes of the second; the third and fourth are lost.
        assert_eq!(w.write(&mut disk, &lines(0..4)), 2);
        // Still full: the carried rest waits, the new batch is lost and counted.
        assert_eq!(w.write(&mut disk, &lines(4..6)), 2);
        disk.room = 1000;
        assert_eq!(w.write(&mut disk, &lines(6..7)), 0);
        let text = String::from_utf8(disk.data.clone()).unwrap();
        let got: Vec<&str> = text.lines().collect();
        assert_eq!(
            got,
            ["{\"n\":0}", "{\"n\":1}", "{\"n\":6}"],
            "every line whole"
        );
        assert!(text.ends_with('\n'));
    }
}
