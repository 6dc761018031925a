//! Compiles trustmesh's ztunnel protos (`proto/`) with `protox`, so the build needs no system
//! `protoc`. Only message types are generated: serving them over xDS is the control plane's job.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["workload.proto", "authorization.proto"], ["proto"])?;
    tonic_build::configure()
        .build_client(false)
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
