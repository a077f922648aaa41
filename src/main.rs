fn main() -> std::process::ExitCode {
    windsock::cli::main()
}
