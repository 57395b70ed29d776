//! Compiles `proto/peerchat/v1/*.proto` without a system `protoc`: protox
//! parses the files into a descriptor set, tonic-prost-build generates the
//! Rust code from it, and the encoded descriptor set is kept in `OUT_DIR` so
//! that directoryd can serve gRPC reflection from the same bytes.

use std::path::PathBuf;

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/peerchat/v1/directory.proto",
        "proto/peerchat/v1/chat.proto",
        "proto/peerchat/v1/control.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("peerchat_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
