//! Sends into a queue with a capacity ([`QueueOptions::capacity`](super::QueueOptions::capacity)):
//! [`MessageQueue::try_send`] and [`MessageQueue::send_timeout`]. (`send` waits for room
//! as long as it takes.)

use std::time::{Duration, Instant};

use super::{Engine, MessageQueue};
#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;

impl MessageQueue {
    /// Sends a message if the queue has room for it now; `Ok(false)` if it is full (it
    /// holds the handle's [`capacity`](super::QueueOptions::capacity)). Without a
    /// capacity, the same as [`send`](Self::send).
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let q = fileipc::QueueOptions::new().capacity(2).open(dir.path())?;
    /// assert!(q.try_send("a")?);
    /// assert!(q.try_send("b")?);
    /// assert!(!q.try_send("c")?, "full");
    /// q.recv()?;
    /// assert!(q.try_send("c")?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_send(&self, message: impl AsRef<[u8]>) -> Result<bool> {
        match &self.engine {
            Engine::Local(e) => e.send_until(message.as_ref(), Some(Instant::now())),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.send_until(message.as_ref(), Some(Instant::now())),
        }
    }

    /// Sends a message, waiting at most `timeout` for room; `Ok(false)` if the queue
    /// stayed full. Without a capacity, the same as [`send`](Self::send).
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use std::time::Duration;
    /// let q = fileipc::QueueOptions::new().capacity(1).open(dir.path())?;
    /// assert!(q.send_timeout("a", Duration::from_millis(10))?);
    /// assert!(!q.send_timeout("b", Duration::from_millis(10))?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_timeout(&self, message: impl AsRef<[u8]>, timeout: Duration) -> Result<bool> {
        match &self.engine {
            Engine::Local(e) => e.send_until(message.as_ref(), crate::deadline_after(timeout)),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.send_until(message.as_ref(), crate::deadline_after(timeout)),
        }
    }
}
