//! The answers the writer owes its flushes and durable orders, delivered at the end of
//! each turn of its loop: a few by the writer itself, more by a thread of their own (the
//! courier), so that waking a hundred sleeping callers after a group commit (a system
//! call each) costs the writer one hand-over, and its next commit starts at once.

use crossbeam_channel::Sender;

use super::oneshot::Answer;
use super::report::{PersistError, LOG};

/// A flush's answer: the systems committed, or why not.
pub(super) type FlushAnswer = Answer<Result<u64, PersistError>>;

/// An answer owed, with what it says.
type Owed = (FlushAnswer, Result<u64, PersistError>);

/// Up to this many answers of one turn, the writer wakes their callers itself: a single
/// caller (a save, one durable order) is not made to wait for another thread's wake-up.
const DIRECT: usize = 8;

#[derive(Default)]
pub(super) struct Outbox {
    owed: Vec<Owed>,
    /// The courier's queue, once it was started.
    courier: Option<Sender<Vec<Owed>>>,
}

impl Outbox {
    pub(super) fn push(&mut self, answer: FlushAnswer, result: Result<u64, PersistError>) {
        self.owed.push((answer, result));
    }

    /// Delivers what is owed.
    pub(super) fn deliver(&mut self) {
        if self.owed.len() <= DIRECT {
            for (answer, result) in self.owed.drain(..) {
                answer.send(result);
            }
            return;
        }
        let owed = std::mem::take(&mut self.owed);
        let owed = match self.courier() {
            Some(courier) => match courier.send(owed) {
                Ok(()) => return,
                Err(unsent) => unsent.0,
            },
            None => owed,
        };
        for (answer, result) in owed {
            answer.send(result);
        }
    }

    /// The courier's queue, starting it on first use; `None` if it cannot start (the
    /// writer then delivers everything itself).
    fn courier(&mut self) -> Option<&Sender<Vec<Owed>>> {
        if self.courier.is_none() {
            let (queue, deliveries) = crossbeam_channel::unbounded::<Vec<Owed>>();
            let started = std::thread::Builder::new()
                .name("gwar-answers".into())
                .spawn(move || {
                    for owed in deliveries {
                        for (answer, result) in owed {
                            answer.send(result);
                        }
                    }
                });
            match started {
                Ok(_) => self.courier = Some(queue),
                Err(error) => {
                    log::warn!(target: LOG, "cannot start the thread that answers flushes ({error}); the writer answers them itself");
                }
            }
        }
        self.courier.as_ref()
    }
}
