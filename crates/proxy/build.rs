//! Compiles the ext_authz protos with `protox` (pure Rust) so the build needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["envoy/service/auth/v3/external_auth.proto"], ["proto"])?;
    tonic_build::configure()
        .build_client(true)
        // The server side is generated too: it lets the proxy's own tests stand up an in-process
        // authorizer without Python.
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
