//! A caller waiting for the writer's answer polls for it briefly before it sleeps.
//!
//! Sleeping on a channel and being woken costs more than a small batch's whole commit:
//! the writer's `futex` wake and the sleeper's return to a core took two thirds of a
//! one-system save (`cargo bench -- --only 1`, batch 1: 0.42 × the in-thread floor before,
//! see the README's *Benchmarks*). An answer that comes within [`SPIN`] is taken without
//! either. One caller at a time polls (the others sleep at once), and it yields its core
//! between polls, so that waiters never keep the writer itself from running on a
//! machine with few cores.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};

/// How long a caller polls before it sleeps: a small batch commits well within it.
pub(super) const SPIN: Duration = Duration::from_micros(500);

/// Polls `rx` for up to [`SPIN`], unless another caller is polling already (`spinner`
/// says so); `None` when nothing came (or the writer is gone): then sleep on `rx`.
pub(super) fn spin_recv<T>(rx: &Receiver<T>, spinner: &AtomicBool) -> Option<T> {
    if spinner
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        return None;
    }
    let started = Instant::now();
    let answer = loop {
        match rx.try_recv() {
            Ok(value) => break Some(value),
            Err(TryRecvError::Disconnected) => break None,
            Err(TryRecvError::Empty) if started.elapsed() >= SPIN => break None,
            Err(TryRecvError::Empty) => {
                for _ in 0..32 {
                    std::hint::spin_loop();
                }
                std::thread::yield_now();
            }
        }
    };
    spinner.store(false, Ordering::Release);
    answer
}
