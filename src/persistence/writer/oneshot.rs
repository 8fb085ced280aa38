//! One answer from the writer to one waiting caller (a flush, a save, a durable order),
//! made for many callers waiting at once: a waiter sleeps at once, without the spinning and
//! yielding a channel's receive does before it sleeps. With hundreds of durable orders
//! waiting on a machine of two cores, those spins took more CPU than the writer itself
//! (`cargo bench -- --only 12`, see the README's *Benchmarks*), and the writer waited for
//! a core.
//!
//! [`oneshot`] makes the two halves: the writer's [`Answer`], which fills the slot once
//! (or, dropped unfilled, marks it abandoned: the writer stopped), and the caller's
//! [`Awaited`], which takes the value, waiting for it with a bound. The slot is one mutex
//! and one condition variable; neither side holds the lock for more than a move.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

struct Slot<T> {
    state: Mutex<State<T>>,
    filled: Condvar,
}

enum State<T> {
    Waiting,
    Filled(T),
    /// The answer was dropped unfilled, or the value was taken already.
    Closed,
}

/// Why nothing was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NoAnswer {
    /// Not yet.
    Empty,
    /// Never: the writer dropped the answer (it stopped), or it was taken already.
    Closed,
    /// Not within the bound.
    TimedOut,
}

/// The writer's half: fills the slot once.
pub(crate) struct Answer<T> {
    slot: Option<Arc<Slot<T>>>,
}

/// The caller's half: takes the value.
pub(crate) struct Awaited<T> {
    slot: Arc<Slot<T>>,
}

/// A slot for one answer, and its two halves.
pub(crate) fn oneshot<T>() -> (Answer<T>, Awaited<T>) {
    let slot = Arc::new(Slot {
        state: Mutex::new(State::Waiting),
        filled: Condvar::new(),
    });
    (
        Answer {
            slot: Some(slot.clone()),
        },
        Awaited { slot },
    )
}

impl<T> Answer<T> {
    /// Fills the slot and wakes its waiter, if it sleeps. A caller gone meanwhile is no
    /// error: the value is dropped with the slot.
    pub(crate) fn send(mut self, value: T) {
        if let Some(slot) = self.slot.take() {
            *slot.state.lock() = State::Filled(value);
            slot.filled.notify_one();
        }
    }
}

impl<T> Drop for Answer<T> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            *slot.state.lock() = State::Closed;
            slot.filled.notify_one();
        }
    }
}

impl<T> Awaited<T> {
    /// The value, if it is there.
    pub(crate) fn try_recv(&self) -> Result<T, NoAnswer> {
        Self::take(&mut self.slot.state.lock())
    }

    /// The value, waiting for it at most `timeout`.
    pub(crate) fn recv_timeout(&self, timeout: Duration) -> Result<T, NoAnswer> {
        let deadline = Instant::now() + timeout;
        let mut state = self.slot.state.lock();
        loop {
            match Self::take(&mut state) {
                Err(NoAnswer::Empty) => {}
                taken => return taken,
            }
            if self
                .slot
                .filled
                .wait_until(&mut state, deadline)
                .timed_out()
            {
                return match Self::take(&mut state) {
                    Err(NoAnswer::Empty) => Err(NoAnswer::TimedOut),
                    taken => taken,
                };
            }
        }
    }

    /// The value, waiting as long as it takes (until the writer fills or drops it).
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn recv(&self) -> Result<T, NoAnswer> {
        let mut state = self.slot.state.lock();
        loop {
            match Self::take(&mut state) {
                Err(NoAnswer::Empty) => self.slot.filled.wait(&mut state),
                taken => return taken,
            }
        }
    }

    fn take(state: &mut State<T>) -> Result<T, NoAnswer> {
        match std::mem::replace(state, State::Closed) {
            State::Filled(value) => Ok(value),
            State::Waiting => {
                *state = State::Waiting;
                Err(NoAnswer::Empty)
            }
            State::Closed => Err(NoAnswer::Closed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_value_is_taken_once_and_a_dropped_answer_closes_the_slot() {
        let (answer, awaited) = oneshot();
        assert_eq!(awaited.try_recv(), Err(NoAnswer::Empty));
        answer.send(7);
        assert_eq!(awaited.try_recv(), Ok(7));
        assert_eq!(awaited.try_recv(), Err(NoAnswer::Closed));
        let (answer, awaited) = oneshot::<u8>();
        drop(answer);
        assert_eq!(
            awaited.recv_timeout(Duration::from_secs(5)),
            Err(NoAnswer::Closed)
        );
    }

    #[test]
    fn a_waiter_sleeps_until_the_answer_or_its_bound() {
        let (answer, awaited) = oneshot();
        let sender = std::thread::spawn(move || answer.send("saved"));
        assert_eq!(awaited.recv_timeout(Duration::from_secs(30)), Ok("saved"));
        sender.join().unwrap();
        let (_answer, awaited) = oneshot::<u8>();
        let started = Instant::now();
        let waited = awaited.recv_timeout(Duration::from_millis(20));
        assert_eq!(waited, Err(NoAnswer::TimedOut));
        assert!(started.elapsed() >= Duration::from_millis(20));
    }
}
