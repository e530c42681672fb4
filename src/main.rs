//! The `phone-agent-load` command: everything lives in the library, see [`phone_agent_load::cli`].

fn main() {
    std::process::exit(phone_agent_load::cli::main());
}
