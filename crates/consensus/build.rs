fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/consensus.proto");
    tonic_prost_build::configure().compile_protos(&["proto/consensus.proto"], &["proto"])?;
    Ok(())
}
