//! Input built to be expensive (issue #11): deeply nested flow collections and oversized files
//! are refused before the YAML parser sees them, in time linear in their size.

use std::time::{Duration, Instant};

use trustmesh_policy::load::{read_mesh, read_paths, ReadError};
use trustmesh_policy::{validate, MeshConfig, PolicySet};

#[test]
fn nested_brackets_are_refused_quickly() {
    let dir = tempfile::tempdir().unwrap();
    // 200 KB of nested brackets took 78 s of CPU in the parser; JSON the same.
    let yaml = dir.path().join("nested.yaml");
    std::fs::write(
        &yaml,
        format!("a: {}{}\n", "[".repeat(100_000), "]".repeat(100_000)),
    )
    .unwrap();
    let json = dir.path().join("nested.json");
    std::fs::write(
        &json,
        format!("{}1{}", "{\"a\":".repeat(60_000), "}".repeat(60_000)),
    )
    .unwrap();
    for path in [&yaml, &json] {
        let started = Instant::now();
        let sources = read_paths(std::slice::from_ref(path)).unwrap();
        let report = validate(&sources, &MeshConfig::default());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let p = &report.problems[0];
        assert!(p.unreadable, "{p}");
        assert!(p.message.contains("nest deeper than 64"), "{p}");
        // Loaded by a proxy, such a file makes the set deny everything (fail closed).
        let (set, _) = PolicySet::from_sources(&sources, &MeshConfig::default()).unwrap();
        assert!(set.denies_everything().is_some());
    }
    // The mesh config goes through the same gate.
    let p = read_mesh(&yaml).unwrap().unwrap_err();
    assert!(p.message.contains("nest deeper than 64"), "{p}");
}

#[test]
fn oversized_files_are_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    let line = "# padding padding padding padding padding padding padding padding\n";
    std::fs::write(&big, line.repeat((5 << 20) / line.len())).unwrap();
    let e = read_paths(&[dir.path().to_path_buf()]).unwrap_err();
    assert!(matches!(e, ReadError::TooLarge { .. }), "{e}");
    assert!(e.to_string().contains("split the resources"), "{e}");
    // Just under the bound is read.
    std::fs::write(&big, line.repeat((3 << 20) / line.len())).unwrap();
    assert_eq!(read_paths(&[dir.path().to_path_buf()]).unwrap().len(), 1);
    // Many files under the per-file bound still meet the bound on the whole load.
    let many = tempfile::tempdir().unwrap();
    let chunk = line.repeat((3 << 20) / line.len());
    for i in 0..23 {
        std::fs::write(many.path().join(format!("p{i:02}.yaml")), &chunk).unwrap();
    }
    let e = read_paths(&[many.path().to_path_buf()]).unwrap_err();
    assert!(matches!(e, ReadError::TooLarge { .. }), "{e}");
}
