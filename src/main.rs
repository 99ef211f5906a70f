//! The `sequinsfs` binary: everything lives in the library; this only hands
//! over to the command line module and turns its result into an exit code.

fn main() -> std::process::ExitCode {
    sequinsfs::cli::main()
}
