//! `galactic-war`: the daemon. Everything lives in the library; see `galactic_war::daemon`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(galactic_war::daemon::run(&args));
}
