use super::*;

#[test]
fn a_file_that_stops_parsing_keeps_its_last_good_documents_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("deny.yaml");
    std::fs::write(
        &f,
        "kind: AuthorizationPolicy\nmetadata: { name: a, namespace: foo }\n",
    )
    .unwrap();
    let mut s = DirSource::new(Some(dir.path().to_path_buf()), None, vec![]);
    let first = s.read();
    assert_eq!(first.documents.len(), 1);
    assert!(first.problems.is_empty(), "{:?}", first.problems);
    std::fs::write(&f, "apiVersion: [unclosed\n").unwrap();
    let second = s.read();
    assert_eq!(
        second.documents, first.documents,
        "the last good contents are served"
    );
    assert_eq!(second.problems.len(), 1, "{:?}", second.problems);
    assert!(
        second.problems[0].contains("deny.yaml"),
        "{}",
        second.problems[0]
    );
    assert!(
        second.problems[0].contains("last good"),
        "{}",
        second.problems[0]
    );
    // A file never good serves nothing.
    std::fs::write(dir.path().join("new.yaml"), "a: [\n").unwrap();
    let third = s.read();
    assert_eq!(third.documents.len(), 1);
    assert!(third
        .problems
        .iter()
        .any(|p| p.contains("new.yaml") && p.contains("nothing from it")));
    // Removed: its documents go.
    std::fs::remove_file(&f).unwrap();
    assert!(s.read().documents.is_empty());
}

#[test]
fn hidden_files_and_other_extensions_are_not_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".x.yaml.tmp"), "kind: A\n").unwrap();
    std::fs::write(dir.path().join("README.md"), "kind: A\n").unwrap();
    std::fs::create_dir(dir.path().join("..data")).unwrap();
    std::fs::write(dir.path().join("..data/p.yaml"), "kind: A\n").unwrap();
    let mut s = DirSource::new(Some(dir.path().to_path_buf()), None, vec![]);
    assert!(s.read().documents.is_empty());
}
