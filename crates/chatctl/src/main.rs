//! `chatctl`: see the library for how it is put together.

fn main() -> std::process::ExitCode {
    peerchat_chatctl::main_entry()
}
