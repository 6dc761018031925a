//! Cheap, linear checks on configuration text before any YAML parser sees it.
//!
//! Why: the YAML parser's cost grows with the square of the nesting depth of flow collections
//! (`[[[[...]]]]`, `{a: {a: ...}}`), because its scanner walks its stack of open levels for
//! every token. A 200 KB file of nested brackets took 78 s of CPU (debug build) before the
//! parser's own recursion limit rejected it, and this runs on the proxy's reload path, delaying
//! every later change. Real Istio resources nest a handful of levels, so text that nests deeper
//! than [`MAX_FLOW_DEPTH`] — or a file larger than [`MAX_FILE_BYTES`] — is refused up front, in
//! time linear in its size (the Kubernetes API server likewise bounds objects before decoding).

/// Largest policy or mesh config file read. etcd stores objects up to 1.5 MiB; a file of many
/// resources may be larger, but not by orders of magnitude.
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// Largest total of policy text read in one load (a sidecar's whole policy folder).
pub const MAX_TOTAL_BYTES: u64 = 64 << 20;

/// Deepest nesting of `[`/`{` accepted. An AuthorizationPolicy written entirely in flow style
/// nests about eight levels; JSON files are all flow style.
pub const MAX_FLOW_DEPTH: usize = 64;

/// Refuses text whose flow collections nest deeper than [`MAX_FLOW_DEPTH`]; the error names the
/// line. Brackets inside quoted scalars and comments do not count; a bracket inside a plain
/// scalar (`/a[0]`) does, which can only overestimate depth by the brackets of one value.
pub fn check(text: &str) -> Result<(), String> {
    let mut depth = 0usize;
    let mut line = 1usize;
    let mut quote: Option<u8> = None;
    let mut prev = b'\n';
    let mut bytes = text.bytes().peekable();
    while let Some(b) = bytes.next() {
        if b == b'\n' {
            line += 1;
            // A single-quoted or double-quoted scalar may span lines; a comment may not.
        }
        match quote {
            Some(b'"') => match b {
                b'\\' => {
                    bytes.next();
                }
                b'"' => quote = None,
                _ => {}
            },
            Some(_) => {
                // Single quotes: `''` is an escaped quote, which closes and reopens.
                if b == b'\'' {
                    quote = None;
                }
            }
            None => match b {
                b'"' | b'\'' => quote = Some(b),
                b'#' if prev.is_ascii_whitespace() => {
                    for c in bytes.by_ref() {
                        if c == b'\n' {
                            line += 1;
                            break;
                        }
                    }
                    prev = b'\n';
                    continue;
                }
                b'[' | b'{' => {
                    depth += 1;
                    if depth > MAX_FLOW_DEPTH {
                        return Err(format!(
                            "line {line}: brackets nest deeper than {MAX_FLOW_DEPTH} levels; \
                             refused before parsing (Istio resources nest a few levels)"
                        ));
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
        prev = b;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_resources_pass() {
        let flow = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
            metadata: {name: a, namespace: b}\n\
            spec: {rules: [{from: [{source: {principals: [\"a/ns/b/sa/c\"]}}], \
            to: [{operation: {paths: [\"/a[0]\", '/x{y}']}}]}]}\n";
        assert_eq!(check(flow), Ok(()));
        let json = serde_json::json!({"a": [[[[[[[[[[1]]]]]]]]]]}).to_string();
        assert_eq!(check(&json), Ok(()));
    }

    #[test]
    fn deep_nesting_is_refused_in_linear_time() {
        let deep = format!("a: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let started = std::time::Instant::now();
        let e = check(&deep).unwrap_err();
        assert!(e.starts_with("line 1:"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        let maps = format!("x: 1\na: {}1{}\n", "{a: ".repeat(65), "}".repeat(65));
        assert!(check(&maps).unwrap_err().starts_with("line 2:"));
        let ok = format!("a: {}1{}\n", "[".repeat(64), "]".repeat(64));
        assert_eq!(check(&ok), Ok(()));
    }

    #[test]
    fn quoted_and_commented_brackets_do_not_count() {
        let many = "[".repeat(200);
        for text in [
            format!("a: \"{many}\"\n"),
            format!("a: '{many}'\n"),
            format!("a: 1 # {many}\n"),
            format!("# {many}\nb: 2\n"),
            format!("a: \"x\\\"{many}\"\n"),
            format!("a: 'it''s {many}'\n"),
        ] {
            assert_eq!(check(&text), Ok(()), "{text}");
        }
        // A `#` inside a value is not a comment.
        assert!(check(&format!("a: b#{many}\n")).is_err());
    }
}
