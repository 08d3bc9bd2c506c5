//! Messages as JSON: [`MessageQueue::send_json`], [`recv_json`](MessageQueue::recv_json),
//! [`claim_json`](MessageQueue::claim_json) (serde).

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Claimed, MessageQueue};
use crate::error::{Error, Result};

impl MessageQueue {
    /// Sends `value` encoded as JSON (one message).
    ///
    /// # Errors
    ///
    /// [`Error::Value`] if `value` cannot be encoded as JSON; otherwise as
    /// [`send`](Self::send).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    /// struct Job { id: u32, file: String }
    /// let q = fileipc::MessageQueue::open(dir.path())?;
    /// q.send_json(&Job { id: 1, file: "a.png".into() })?;
    /// let job: Job = q.recv_json()?.unwrap();
    /// assert_eq!(job, Job { id: 1, file: "a.png".into() });
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_json<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| self.json_error(e))?;
        self.send(bytes)
    }

    /// Receives the next message (waiting as [`recv`](Self::recv) does) and decodes it
    /// from JSON; `Ok(None)` if none came.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] if the message is not JSON of type `T` (the message is consumed:
    /// use [`claim_json`](Self::claim_json) to keep it); otherwise as [`recv`](Self::recv).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let q = fileipc::MessageQueue::open(dir.path())?;
    /// q.send_json(&[1, 2, 3])?;
    /// assert_eq!(q.recv_json::<Vec<u32>>()?, Some(vec![1, 2, 3]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_json<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        match self.recv()? {
            Some(m) => serde_json::from_slice(&m)
                .map(Some)
                .map_err(|e| self.json_error(e)),
            None => Ok(None),
        }
    }

    /// Claims the next message (waiting as [`claim`](Self::claim) does) and decodes it
    /// from JSON: the value and the claim, to acknowledge once the work is done.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] if the message is not JSON of type `T`: the message is given back
    /// (with [`max_deliveries`](super::QueueOptions::max_deliveries) it ends in the dead
    /// letters); otherwise as [`claim`](Self::claim).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let q = fileipc::MessageQueue::open(dir.path())?;
    /// q.send_json(&("resize", 640))?;
    /// let (job, claim): ((String, u32), _) = q.claim_json()?.unwrap();
    /// assert_eq!(job.1, 640);
    /// claim.ack()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn claim_json<T: DeserializeOwned>(&self) -> Result<Option<(T, Claimed<'_>)>> {
        match self.claim()? {
            Some(c) => {
                let value = serde_json::from_slice(c.bytes()).map_err(|e| self.json_error(e))?;
                Ok(Some((value, c)))
            }
            None => Ok(None),
        }
    }

    fn json_error(&self, e: serde_json::Error) -> Error {
        Error::Value {
            path: self.path().to_owned(),
            key: "message".into(),
            detail: format!("JSON: {e}"),
        }
    }
}
