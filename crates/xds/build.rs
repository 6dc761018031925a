//! Compiles the xDS transport protos with `protox` (pure Rust), so building needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(
        [
            "envoy/service/discovery/v3/ads.proto",
            "trustmesh/config/v1/config.proto",
        ],
        ["proto"],
    )?;
    tonic_build::configure()
        .build_client(true)
        .build_server(true)
        // Smaller per-stream buffers: see src/codec.rs.
        .codec_path("crate::codec::SmallBuffers")
        .compile_fds(fds)?;
    Ok(())
}
