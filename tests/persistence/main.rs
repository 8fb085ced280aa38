//! Black-box tests of the persistence engine on real SQLite files in temporary directories.

mod util;

mod concurrency;
mod faults;
mod lifecycle;
mod loads;
mod marker;
mod restart;
mod single_daemon;
