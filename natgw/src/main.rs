//! The `natgw` command: all of it lives in the library (`natgw::cli`).

fn main() -> std::process::ExitCode {
    natgw::cli::main()
}
