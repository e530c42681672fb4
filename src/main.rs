//! The `phone-agent-load` command: everything lives in the library, see [`phone_agent_load::cli`].

/// mimalloc (version 2, which returns freed memory to the system after 10 ms): the simulator and
/// the load generator allocate and free thousands of bodies and futures a second, and glibc's
/// malloc was a tenth of the simulator's CPU (README "Performance").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(phone_agent_load::cli::main());
}
