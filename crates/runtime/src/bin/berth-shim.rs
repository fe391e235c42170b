//! `berth-shim <shim.json>`: the per-container supervisor. See `berth_runtime::shim`.

fn main() {
    std::process::exit(berth_runtime::shim::main_from_args());
}
