//! Timestamps as the access log and the admin endpoints print them; a leaf module so the
//! snapshot (its load time) and every listener can stamp records without importing the log.

/// Now in Unix seconds (0 before 1970: a clock that wrong breaks TLS first).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// When a record began. The record keeps the instant and [`rfc3339`] writes it only for a
/// line that is written: a sidecar without an access log stamps every request and never
/// prints one, and the text was a string made and dropped per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp(pub std::time::SystemTime);

impl Stamp {
    pub fn now() -> Stamp {
        Stamp(std::time::SystemTime::now())
    }

    /// As the access log prints it.
    pub fn text(&self) -> String {
        rfc3339(self.0)
    }
}

impl Default for Stamp {
    fn default() -> Stamp {
        Stamp(std::time::UNIX_EPOCH)
    }
}

/// As text, as the line has it (the derived serializer of the record must write what the
/// hand-written one does).
impl serde::Serialize for Stamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text())
    }
}

/// Now, as [`rfc3339`] writes it.
pub fn now_rfc3339() -> String {
    rfc3339(std::time::SystemTime::now())
}

/// RFC 3339 in UTC, exactly as the `time` crate writes it (fraction without trailing zeros),
/// but with the date and time-of-day part formatted once per second per thread: a busy sidecar
/// stamps tens of thousands of lines a second, nearly all within the same second.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    use std::cell::RefCell;
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let Ok(since) = t.duration_since(std::time::UNIX_EPOCH) else {
        return slow_rfc3339(t);
    };
    let (secs, nanos) = (since.as_secs(), since.subsec_nanos());
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let whole = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
            let text = slow_rfc3339(whole);
            // "YYYY-MM-DDTHH:MM:SSZ" → keep everything before the 'Z'.
            let Some(prefix) = text.strip_suffix('Z') else {
                return slow_rfc3339(t);
            };
            *cached = (secs, prefix.to_string());
        }
        let mut out = String::with_capacity(cached.1.len() + 11);
        out.push_str(&cached.1);
        if nanos != 0 {
            use std::fmt::Write;
            let _ = write!(out, ".{nanos:09}");
            // The fraction has a non-zero digit, so trimming stops inside it.
            let len = out.trim_end_matches('0').len();
            out.truncate(len);
        }
        out.push('Z');
        out
    })
}

fn slow_rfc3339(t: std::time::SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
