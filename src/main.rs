//! `galactic-war`: the daemon. Its process edge (settings, logging, listeners, signals,
//! exit status) is `galactic_war::cli`; serving is the library's `galactic_war::serve`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(galactic_war::cli::main(&args));
}
