// The image build sets BACKUP_RUNNER_POSTGRES_VERSION so the binary knows which server major version
// its image (and client tools) were made for.
fn main() {
    println!("cargo:rerun-if-env-changed=BACKUP_RUNNER_POSTGRES_VERSION");
}
