//! Iterating over a queue's messages: [`Iter`] (blocking, as `for msg in q.iter()`) and
//! [`TryIter`] (the messages there now).

use super::{Message, MessageQueue};
use crate::error::{Error, Result};

/// A blocking iterator over the messages of a queue: each `next` waits as long as it
/// takes for the next message ([`MessageQueue::recv_forever`]). It yields an error as
/// an item and goes on, except [`Error::Destroyed`], after which it ends.
#[derive(Debug)]
#[must_use = "iterators do nothing unless advanced"]
pub struct Iter<'q> {
    q: &'q MessageQueue,
    done: bool,
}

impl Iterator for Iter<'_> {
    type Item = Result<Message>;

    fn next(&mut self) -> Option<Result<Message>> {
        if self.done {
            return None;
        }
        let r = self.q.recv_forever();
        if matches!(r, Err(Error::Destroyed { .. })) {
            self.done = true;
        }
        Some(r)
    }
}

/// An iterator over the messages waiting now ([`MessageQueue::try_recv`]): it ends when
/// the queue is empty, or after yielding an error.
#[derive(Debug)]
#[must_use = "iterators do nothing unless advanced"]
pub struct TryIter<'q> {
    q: &'q MessageQueue,
    done: bool,
}

impl Iterator for TryIter<'_> {
    type Item = Result<Message>;

    fn next(&mut self) -> Option<Result<Message>> {
        if self.done {
            return None;
        }
        match self.q.try_recv() {
            Ok(Some(m)) => Some(Ok(m)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl MessageQueue {
    /// A blocking iterator over the messages: `for msg in q.iter()` receives them one by
    /// one, waiting for each as long as it takes; it ends only once the queue is
    /// destroyed (after yielding [`Error::Destroyed`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let q = fileipc::MessageQueue::open(dir.path())?;
    /// q.send_all(["a", "b", "stop"])?;
    /// for msg in q.iter() {
    ///     let msg = msg?;
    ///     if msg == "stop" {
    ///         break;
    ///     }
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            q: self,
            done: false,
        }
    }

    /// An iterator over the messages waiting now, without waiting: it ends when the
    /// queue is empty (or after an error).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let q = fileipc::MessageQueue::open(dir.path())?;
    /// q.send_all(["a", "b"])?;
    /// let got: Vec<_> = q.try_iter().collect::<Result<_, _>>()?;
    /// assert_eq!(got.len(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_iter(&self) -> TryIter<'_> {
        TryIter {
            q: self,
            done: false,
        }
    }
}

impl<'q> IntoIterator for &'q MessageQueue {
    type Item = Result<Message>;
    type IntoIter = Iter<'q>;

    fn into_iter(self) -> Iter<'q> {
        self.iter()
    }
}
