//! Compiles the API contract in `proto/` with the protoc that ships inside the `protoc-bin-vendored`
//! crate, so the build never depends on a protoc the machine happens to have.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // prost-build reads PROTOC from the environment; a build script is single-threaded.
    std::env::set_var("PROTOC", protoc);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("switchyard_descriptor.bin"))
        .compile_protos(&["proto/switchyard/v1/switchyard.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
