//! Compiles our `.proto` with protox (pure Rust) so no system `protoc` is needed to build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/istio_ca.proto", "proto/trustmesh_jwt.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
