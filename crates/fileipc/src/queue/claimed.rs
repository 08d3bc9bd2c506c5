//! [`Claimed`], the public front of a claimed message: it dispatches every call to the
//! grant of its engine (`claim.rs` for the local engine, `redis_claim.rs` for Redis).

use std::time::Duration;

use super::claim::LocalClaim;
#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;

/// A message delivered by [`claim`](super::MessageQueue::claim) and not yet acknowledged.
///
/// Other claimers and receivers do not see it until it is acknowledged ([`ack`](Self::ack):
/// gone for good), given back ([`nack`](Self::nack), or dropping it: visible again at once),
/// its lease runs out (see [`extend`](Self::extend)), or its claimer's process dies (on
/// the local engine seen at once, through the kernel's lock on the process's owner id;
/// on Redis when the lease runs out).
///
/// # Examples
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// use std::time::Duration;
/// let q = fileipc::MessageQueue::open(dir.path())?;
/// q.send("job 1")?;
/// let job = q.claim_timeout(Duration::from_secs(1))?.expect("a job");
/// assert_eq!(job.bytes(), b"job 1");
/// assert_eq!(job.attempt(), 1);
/// assert_eq!(q.count()?, 1); // in flight: still counted
/// job.ack()?;
/// assert_eq!(q.count()?, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "dropping a claimed message gives it back at once; ack it when its work is done"]
#[clippy::has_significant_drop]
pub struct Claimed<'q> {
    grant: Grant<'q>,
}

/// The engine's claim behind a [`Claimed`].
#[cfg_attr(feature = "redis", allow(clippy::large_enum_variant))]
enum Grant<'q> {
    Local(LocalClaim<'q>),
    #[cfg(feature = "redis")]
    Redis(super::redis_claim::RedisClaim<'q>),
}

/// Runs `$body` with `$g` bound to the grant of whichever engine.
macro_rules! grant {
    ($self:expr, $g:ident => $body:expr) => {
        match $self {
            Grant::Local($g) => $body,
            #[cfg(feature = "redis")]
            Grant::Redis($g) => $body,
        }
    };
}

impl<'q> From<LocalClaim<'q>> for Claimed<'q> {
    fn from(c: LocalClaim<'q>) -> Claimed<'q> {
        Claimed {
            grant: Grant::Local(c),
        }
    }
}

#[cfg(feature = "redis")]
impl<'q> From<super::redis_claim::RedisClaim<'q>> for Claimed<'q> {
    fn from(c: super::redis_claim::RedisClaim<'q>) -> Claimed<'q> {
        Claimed {
            grant: Grant::Redis(c),
        }
    }
}

impl std::fmt::Debug for Claimed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claimed")
            .field("seq", &self.seq())
            .field("attempt", &self.attempt())
            .field("fence", &self.fence())
            .field("len", &self.bytes().len())
            .finish_non_exhaustive()
    }
}

impl Claimed<'_> {
    /// The message's bytes, exactly as sent.
    pub fn bytes(&self) -> &[u8] {
        grant!(&self.grant, g => g.bytes())
    }

    /// The message's bytes as text.
    ///
    /// # Errors
    ///
    /// If they are not valid UTF-8.
    pub fn to_str(&self) -> std::result::Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(self.bytes())
    }

    /// Which delivery of the message this is: 1 the first time, 2 after one redelivery...
    pub fn attempt(&self) -> u32 {
        grant!(&self.grant, g => g.attempt())
    }

    /// The fencing token of this grant: higher than that of every earlier claim of the
    /// queue (of any message, by any process, and of a queue once created at the same
    /// name: the counter starts from the clock, the wall clock in nanoseconds locally,
    /// the server's in microseconds on Redis), never reused. Pass it to the resource the
    /// work writes to, which refuses tokens lower than the highest it has seen: a claimer
    /// stopped past its lease then cannot overwrite its successor's work
    /// (`UPDATE ... WHERE last_fence < $fence`).
    pub fn fence(&self) -> u64 {
        grant!(&self.grant, g => g.fence())
    }

    /// In a [dead-letter queue](super::MessageQueue::dead_letters): how many deliveries
    /// the message had before it was moved there (as
    /// [`Message::dead_letter_attempts`](super::Message::dead_letter_attempts)).
    pub fn dead_letter_attempts(&self) -> u32 {
        grant!(&self.grant, g => g.dead_letter_attempts())
    }

    /// The message's sequence number in the queue (its `sent` count when it was sent).
    pub fn seq(&self) -> u64 {
        grant!(&self.grant, g => g.seq())
    }

    /// Acknowledges the message: its work is done, it is gone for good.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] naming the lost lease if the claim was lost: its lease ran out
    /// and another claimer took the message (the work may be done twice: see
    /// [`fence`](Self::fence)); on Redis, [`Error::Redis`] if the server cannot be reached.
    pub fn ack(self) -> Result<()> {
        grant!(self.grant, g => g.ack())
    }

    /// Gives the message back, to be delivered again (to any claimer) after `delay`
    /// (`Duration::ZERO`: at once, as dropping it does). A message that had its
    /// `max_deliveries` moves to the dead-letter queue instead.
    ///
    /// # Errors
    ///
    /// As [`ack`](Self::ack); [`Error::Io`] if moving it to the local dead-letter queue
    /// failed (it is then delivered again).
    pub fn nack(self, delay: Duration) -> Result<()> {
        grant!(self.grant, g => g.nack(delay))
    }

    /// Extends the lease: the message stays this claimer's until `lease` from now.
    ///
    /// # Errors
    ///
    /// As [`ack`](Self::ack), if the lease had already run out and another claimer took
    /// the message.
    pub fn extend(&mut self, lease: Duration) -> Result<()> {
        grant!(&mut self.grant, g => g.extend(lease))
    }
}

impl std::ops::Deref for Claimed<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.bytes()
    }
}

/// A claim detached from the queue handle it borrows, by [`Claimed::detach`]: an owned
/// value (no lifetime) to keep beside an `Arc` of the handle, for a claim that must
/// outlive a borrow (another language's object, a task). [`attach`](Self::attach) to a
/// handle of the same queue makes it a [`Claimed`] again, to acknowledge, give back or
/// extend it.
///
/// Dropping a token does nothing: the message stays claimed until its lease runs out or
/// the claiming process dies (a [`Claimed`] dropped gives it back at once).
///
/// # Examples
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// use std::sync::Arc;
/// let q = Arc::new(fileipc::MessageQueue::open(dir.path())?);
/// q.send("job")?;
/// let token = q.claim()?.expect("a job").detach();
/// let job = token.attach(&q)?;
/// assert_eq!(job.bytes(), b"job");
/// job.ack()?;
/// assert_eq!(q.count()?, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[must_use = "a dropped claim token leaves its message claimed until the lease runs out"]
pub struct ClaimToken {
    token: Token,
}

/// The engine's detached claim behind a [`ClaimToken`].
#[derive(Debug)]
enum Token {
    Local(super::claim::LocalToken),
    #[cfg(feature = "redis")]
    Redis(super::redis_claim::RedisToken),
}

impl Claimed<'_> {
    /// Detaches the claim from the queue handle (see [`ClaimToken`]); the message stays
    /// claimed.
    pub fn detach(self) -> ClaimToken {
        let token = match self.grant {
            Grant::Local(g) => Token::Local(g.detach()),
            #[cfg(feature = "redis")]
            Grant::Redis(g) => Token::Redis(g.detach()),
        };
        ClaimToken { token }
    }
}

impl ClaimToken {
    /// The claim again, on `q`, a handle of the queue it was detached from.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] if `q` is a handle of another queue (another path or engine).
    pub fn attach(self, q: &super::MessageQueue) -> Result<Claimed<'_>> {
        let other = |what: &str| crate::error::Error::Invalid {
            path: q.path().to_owned(),
            detail: format!("a claim of the queue {what} cannot be attached to another queue"),
        };
        match (self.token, &q.engine) {
            (Token::Local(t), super::Engine::Local(e)) => match t.attach(e) {
                Ok(c) => Ok(c.into()),
                Err(t) => Err(other(&format!("{t:?}"))),
            },
            #[cfg(feature = "redis")]
            (Token::Redis(t), super::Engine::Redis(e)) => match t.attach(e) {
                Ok(c) => Ok(c.into()),
                Err(t) => Err(other(&format!("{t:?}"))),
            },
            #[cfg(feature = "redis")]
            (t, _) => Err(other(&format!("{t:?}"))),
        }
    }
}
