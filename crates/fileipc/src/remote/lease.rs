//! The lease keeper: one background thread per process renews every lease the process
//! holds on any Redis server (a mutex, a permit, a claim), and tells a holder when its
//! lease is lost.
//!
//! A lease is valid until `sent + lease`, where `sent` is when the last successful
//! acquire or renewal was *sent*: the server started its timer later, so the local
//! view expires first. The keeper renews at a third of the lease. A lease is reported
//! lost when the server says the key is no longer ours, or when no renewal has
//! succeeded for the lease minus a margin ([`Lease::is_lost`]), before the server
//! expires it: a holder is never silently overlapped by its successor, as long as its
//! clock's rate is within the margin of the server's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex as StdMutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use super::{connect, lock};
use crate::location::RedisUrl;

/// Renews lease `ARGV[1]` for `ARGV[2]` ms: a key `KEYS[1]` holding our token
/// (`ARGV[3]` = `k`), or our member of the sorted set `KEYS[1]` scored by its expiry in
/// server milliseconds (`ARGV[3]` = `z`). 1 if renewed, 0 if no longer ours.
const RENEW: &str = r"
if ARGV[3] == 'z' then
  if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
    return 1
  end
  return 0
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// One lease held by this process: a key whose value is our token.
#[derive(Debug)]
pub(crate) struct Lease {
    url: RedisUrl,
    key: String,
    token: String,
    /// Whether the lease is a member of a sorted set (else a key holding the token).
    member: bool,
    lease: Duration,
    /// When the last successful acquire or renewal was sent.
    sent: StdMutex<Instant>,
    /// Set when the server said the key is no longer ours, or it was released.
    lost: AtomicBool,
}

impl Lease {
    /// Registers a lease on `key` (holding `token`), acquired by a command sent at
    /// `sent`, with the keeper, which renews it until it is dropped or released.
    pub(crate) fn start(url: &RedisUrl, key: String, token: String, sent: Instant) -> Arc<Lease> {
        Lease::begin(url, key, token, false, sent)
    }

    /// Registers a lease that is member `token` of the sorted set `key`, scored by its
    /// expiry in server milliseconds, acquired by a command sent at `sent`.
    pub(crate) fn start_member(
        url: &RedisUrl,
        key: String,
        token: String,
        sent: Instant,
    ) -> Arc<Lease> {
        Lease::begin(url, key, token, true, sent)
    }

    fn begin(
        url: &RedisUrl,
        key: String,
        token: String,
        member: bool,
        sent: Instant,
    ) -> Arc<Lease> {
        let lease = Arc::new(Lease {
            url: url.clone(),
            key,
            token,
            member,
            lease: url.lease(),
            sent: StdMutex::new(sent),
            lost: AtomicBool::new(false),
        });
        keeper().add(&lease);
        lease
    }

    /// The token this lease holds its key with.
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// The margin before the local expiry at which a lease not renewed is called lost:
    /// a tenth of the lease, at most one second.
    fn margin(&self) -> Duration {
        (self.lease / 10).min(Duration::from_secs(1))
    }

    /// Whether the lease is lost: the server took it back, or it has not been renewed
    /// for the lease minus the margin. Once lost, always lost: a renewal that succeeds
    /// late does not make it valid again (the holder may have acted on the loss), and
    /// the keeper stops renewing it.
    pub(crate) fn is_lost(&self) -> bool {
        if self.lost.load(Ordering::Acquire) {
            return true;
        }
        if lock(&self.sent).elapsed() + self.margin() >= self.lease {
            self.end();
            return true;
        }
        false
    }

    /// Marks the lease as ended (released or lost): the keeper stops renewing it.
    pub(crate) fn end(&self) {
        self.lost.store(true, Ordering::Release);
    }

    /// When the keeper should next renew this lease.
    fn due(&self) -> Instant {
        *lock(&self.sent) + self.lease / 3
    }
}

/// The process's keeper: the leases to renew and the thread renewing them.
#[derive(Debug)]
struct Keeper {
    leases: StdMutex<List>,
    changed: Condvar,
}

/// The leases the keeper knows, and when it sleeps until.
#[derive(Debug, Default)]
struct List {
    leases: Vec<Weak<Lease>>,
    /// When the sleeping keeper wakes by itself (`None` while it is awake): a new lease
    /// due later needs no wake-up, which spares a context switch per lock.
    wake_at: Option<Instant>,
}

impl List {
    /// Forgets ended leases.
    fn prune(&mut self) {
        self.leases
            .retain(|w| w.upgrade().is_some_and(|l| !l.lost.load(Ordering::Acquire)));
    }
}

fn keeper() -> &'static Keeper {
    static KEEPER: OnceLock<Keeper> = OnceLock::new();
    static THREAD: OnceLock<()> = OnceLock::new();
    let k = KEEPER.get_or_init(|| Keeper {
        leases: StdMutex::new(List::default()),
        changed: Condvar::new(),
    });
    THREAD.get_or_init(|| {
        std::thread::Builder::new()
            .name("fileipc-leases".into())
            .spawn(move || k.run())
            .expect("spawning the fileipc lease keeper thread");
    });
    k
}

impl Keeper {
    fn add(&self, lease: &Arc<Lease>) {
        let mut list = lock(&self.leases);
        if list.leases.len() >= 64 {
            list.prune();
        }
        list.leases.push(Arc::downgrade(lease));
        if list.wake_at.is_some_and(|w| lease.due() < w) {
            self.changed.notify_one();
        }
    }

    /// Renews each lease when it is due, forever.
    fn run(&self) {
        // One connection per server (URL without name), made on first use and dropped
        // after an error.
        let mut cons: HashMap<String, redis::Connection> = HashMap::new();
        let script = redis::Script::new(RENEW);
        loop {
            let due: Vec<Arc<Lease>> = {
                let mut list = lock(&self.leases);
                list.prune();
                let now = Instant::now();
                let live: Vec<Arc<Lease>> = list.leases.iter().filter_map(Weak::upgrade).collect();
                match live.iter().map(|l| l.due()).min() {
                    Some(t) if t <= now => live.into_iter().filter(|l| l.due() <= now).collect(),
                    next => {
                        drop(live);
                        let until = next.unwrap_or(now + Duration::from_secs(60));
                        list.wake_at = Some(until);
                        let (mut list, _) = self
                            .changed
                            .wait_timeout(list, until - now)
                            .unwrap_or_else(|p| p.into_inner());
                        list.wake_at = None;
                        continue;
                    }
                }
            };
            for l in due {
                if l.is_lost() {
                    continue;
                }
                let server = server_key(&l.url);
                let sent = Instant::now();
                if !cons.contains_key(&server) {
                    match connect(&l.url) {
                        Ok(c) => {
                            // A renewal must finish well inside the margin.
                            let t = Some(l.margin().max(Duration::from_millis(50)));
                            let _ = c.set_read_timeout(t);
                            let _ = c.set_write_timeout(t);
                            cons.insert(server.clone(), c);
                        }
                        Err(_) => {
                            self.retry_soon(&l);
                            continue;
                        }
                    }
                }
                let con = cons.get_mut(&server).expect("inserted above");
                let r: redis::RedisResult<i64> = script
                    .key(&l.key)
                    .arg(&l.token)
                    .arg(l.lease.as_millis() as u64)
                    .arg(if l.member { "z" } else { "k" })
                    .invoke(con);
                match r {
                    Ok(1) => *lock(&l.sent) = sent,
                    Ok(_) => l.end(),
                    Err(_) => {
                        cons.remove(&server);
                        self.retry_soon(&l);
                    }
                }
            }
        }
    }

    /// After a failed renewal: try again shortly (without moving the lease's validity).
    fn retry_soon(&self, l: &Lease) {
        // `due` is computed from `sent`; a failed renewal leaves it in the past, so
        // the loop would spin: wait a little first.
        let pause = (l.lease / 20).clamp(Duration::from_millis(10), Duration::from_millis(200));
        let mut list = lock(&self.leases);
        list.wake_at = Some(Instant::now() + pause);
        let (mut list, _) = self
            .changed
            .wait_timeout(list, pause)
            .unwrap_or_else(|p| p.into_inner());
        list.wake_at = None;
    }
}

/// The connection-cache key of `url`'s server: everything but the name.
fn server_key(url: &RedisUrl) -> String {
    format!("{:?}/{}/{:?}", url.server(), url.db(), url.credentials())
}
