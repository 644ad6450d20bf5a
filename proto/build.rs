fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/worker.proto");
    // ContainerSpec carries secure_env and RegistryCredential a password:
    // their Debug is written by hand (lib.rs) so that logging an assignment
    // never prints the values.
    tonic_prost_build::configure()
        .skip_debug([
            "skiff.worker.v1.ContainerSpec",
            "skiff.worker.v1.RegistryCredential",
            "skiff.worker.v1.SecretVolume",
        ])
        .compile_protos(&["proto/worker.proto"], &["proto"])?;
    Ok(())
}
