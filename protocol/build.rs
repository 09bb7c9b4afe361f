//! Generates the chorus.v1 and chorus.peer.v1 types from `proto/` with protox (pure Rust: no system `protoc`), and
//! saves the encoded descriptor set so that tests can read golden vectors in text format.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = PathBuf::from("proto");
    // chorus.v1 (clients) and chorus.peer.v1 (nodes of a cluster).
    let mut files: Vec<PathBuf> = Vec::new();
    for package in ["chorus/v1", "chorus/peer/v1"] {
        for entry in std::fs::read_dir(proto_dir.join(package))? {
            files.push(entry?.path());
        }
    }
    files.retain(|p| p.extension().is_some_and(|ext| ext == "proto"));
    files.sort();
    println!("cargo:rerun-if-changed=proto");

    let mut compiler = protox::Compiler::new([&proto_dir])?;
    compiler.include_imports(true).include_source_info(true);
    for file in &files {
        let relative = file.strip_prefix(&proto_dir)?;
        compiler.open_file(relative)?;
    }
    let descriptor_bytes = compiler.encode_file_descriptor_set();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("chorus_v1_descriptor.bin"), &descriptor_bytes)?;

    prost_build::Config::new()
        // `bytes` fields decode as `Bytes`, sharing the frame's buffer instead of copying.
        .bytes(["."])
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
