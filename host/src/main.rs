//! The `warden` command.

fn main() -> std::process::ExitCode {
    warden::cli::main()
}
