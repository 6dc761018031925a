//! The operator's errors when the tools are missing or refuse, and how a refusal is explained.

use super::*;

#[test]
fn a_missing_tool_is_named_with_the_package_to_install() {
    let empty = std::env::temp_dir().join(format!("trustmesh-no-iptables-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let ipt = Iptables::in_dirs(vec![empty.clone()]);
    let e = ipt.save(Family::V6).unwrap_err();
    assert!(
        matches!(
            e,
            CaptureError::Missing {
                tool: "ip6tables-save"
            }
        ),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(text.contains("ip6tables-save is not installed"), "{text}");
    assert!(text.contains("apt-get install iptables"), "{text}");
    let e = ipt.restore(Family::V4, "*nat\nCOMMIT\n", true).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("iptables-restore is not installed"),
        "{e}"
    );
    let _ = std::fs::remove_dir(&empty);
}

#[test]
fn a_refusal_names_the_line_of_ours_it_refused() {
    let stderr = "ip6tables-restore v1.8.9 (nf_tables): host/network `127.0.0.1' not found\n\
                  Error occurred at line: 3\n\
                  Try `ip6tables-restore -h' or 'ip6tables-restore --help' for more information.\n";
    let input =
        "*nat\n:TRUSTMESH_OUTPUT - [0:0]\n-A TRUSTMESH_OUTPUT -d 127.0.0.1/32 -j RETURN\nCOMMIT\n";
    assert_eq!(
        explain(stderr, Some(input)),
        "ip6tables-restore v1.8.9 (nf_tables): host/network `127.0.0.1' not found; \
         Error occurred at line: 3 \
         (input line 3: -A TRUSTMESH_OUTPUT -d 127.0.0.1/32 -j RETURN)"
    );
    assert_eq!(explain("", None), "no message");
}
