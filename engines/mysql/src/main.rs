fn main() -> std::process::ExitCode {
    runner_core::job::main::<backup_runner_mysql::Mysql>()
}
