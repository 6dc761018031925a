//! Release builds of the `trustmesh` binary lay the functions a serving sidecar runs side by
//! side, in the order `hot-functions.txt` lists them (written by bench/hot-functions.sh).
//!
//! Why: the kernel maps a program's code by the page-cache folio, up to 2 MiB at a time on a
//! current kernel, so the resident part of the binary is every 2 MiB stretch that holds any
//! function the sidecar runs. The ~1,800 functions of the serving paths (2.2 MB) were spread
//! over all eleven stretches of the 21 MB of code; gathered at the start of `.text` they take
//! two. A serving sidecar's file-backed memory went from 10.6 to 5.6–6.7 MB (bench/proxy.sh,
//! 1,000 requests/s), its idle one from 7.9–10.0 to 5.2–6.5 MB.
//!
//! The list is applied with lld's `--symbol-ordering-file` (mold takes it too), lld being the
//! linker Rust uses by default on x86_64 Linux; other targets link as before, and
//! `TRUSTMESH_LINK_ORDER=0` turns it off for a linker without the option. Symbols in the list
//! that a build does not have (renamed or inlined functions) are skipped without a warning, so
//! a list that has aged only places less of the code.

fn main() {
    let list = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default())
        .join("hot-functions.txt");
    println!("cargo:rerun-if-changed={}", list.display());
    println!("cargo:rerun-if-env-changed=TRUSTMESH_LINK_ORDER");
    let release = std::env::var("PROFILE").as_deref() == Ok("release");
    let lld_target = std::env::var("TARGET").as_deref() == Ok("x86_64-unknown-linux-gnu");
    let wanted = std::env::var("TRUSTMESH_LINK_ORDER").as_deref() != Ok("0");
    if release && lld_target && wanted && list.exists() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            list.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}
