fn main() -> std::process::ExitCode {
    // The logical dump and the loader run as children of the job, from this same binary.
    if let Some(code) = backup_runner_redis::child::main() {
        return code;
    }
    runner_core::job::main::<backup_runner_redis::Redis>()
}
