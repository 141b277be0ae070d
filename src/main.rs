fn main() -> std::process::ExitCode {
    cos_mesh::cli::main()
}
