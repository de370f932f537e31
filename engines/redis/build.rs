// The image build sets the product and version the binary (and its image's client tools) are for.
fn main() {
    println!("cargo:rerun-if-env-changed=BACKUP_RUNNER_REDIS_VERSION");
    println!("cargo:rerun-if-env-changed=BACKUP_RUNNER_REDIS_FLAVOR");
}
