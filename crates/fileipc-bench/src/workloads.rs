//! The workloads of `fileipc bench`: what each result line measures, its contenders (ours
//! and the baselines, by worker implementation name), its metrics, and its operation
//! counts and time caps for a full and a quick run.

/// Which workloads to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Which {
    /// Message queues: throughput, ping-pong, durable.
    Queue,
    /// Mutex: uncontended pair, 4-process contention, hand-off.
    Mutex,
    /// Semaphore: uncontended pair, hand-off.
    Semaphore,
    /// SharedData: set, get, contended increments.
    Kv,
    /// Event: set-to-wake latency.
    Event,
    /// Everything.
    All,
}

/// What one contender of a workload runs as: a label for the report and the worker
/// implementation name.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Contender {
    pub(crate) label: &'static str,
    pub(crate) imp: &'static str,
    pub(crate) ours: bool,
}

const fn ours(imp: &'static str) -> Contender {
    Contender {
        label: "ours",
        imp,
        ours: true,
    }
}

const fn base(label: &'static str, imp: &'static str) -> Contender {
    Contender {
        label,
        imp,
        ours: false,
    }
}

/// A measured quantity of a workload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Metric {
    /// Key in a run's measurements.
    pub(crate) key: &'static str,
    /// Appended to the workload name to name the result line ("" for the main one).
    pub(crate) suffix: &'static str,
    pub(crate) unit: &'static str,
    pub(crate) higher_is_better: bool,
}

const fn rate(unit: &'static str) -> Metric {
    Metric {
        key: "rate",
        suffix: "",
        unit,
        higher_is_better: true,
    }
}

const fn lat(key: &'static str, suffix: &'static str, unit: &'static str) -> Metric {
    Metric {
        key,
        suffix,
        unit,
        higher_is_better: false,
    }
}

/// The shape of a workload: which worker processes a run spawns and how its figures are
/// computed from their reports.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    /// P producers and C consumers on one queue; messages/s from first send to last receive.
    Flow { p: u32, c: u32, size: usize },
    /// Round trips through two queues between two processes; median RTT.
    PingPong { size: usize },
    /// P producers of a durable queue, no consumer; messages/s.
    Durable { p: u32 },
    /// One process, lock + unlock pairs; ns per pair.
    LockPair,
    /// 4 processes in tight lock/unlock cycles; cycles/s, p50 and p99 wait.
    LockContended,
    /// Unlock-to-acquire hand-off between two processes; median latency.
    Handoff,
    /// One process, `set` or `get` over 1,000 keys; ops/s.
    KvSingle { role: &'static str },
    /// 4 processes incrementing one key; ops/s, p50 and p99 latency.
    KvIncr,
    /// Set-to-wake latency between two processes; median.
    EventWake,
}

#[derive(Debug)]
pub(crate) struct Workload {
    pub(crate) group: Which,
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    pub(crate) contenders: Vec<Contender>,
    pub(crate) metrics: Vec<Metric>,
    /// (operations per process, time cap in ms) for a full and a quick run.
    pub(crate) full: (u64, u64),
    pub(crate) quick: (u64, u64),
}

/// Every workload, in the order they run and are reported.
pub(crate) fn workloads() -> Vec<Workload> {
    use Which::*;
    let mut w = Vec::new();
    let q = |name, kind, full, quick| Workload {
        group: Queue,
        name,
        kind,
        contenders: vec![
            ours("ours"),
            base("posix_mq", "posix_mq"),
            base("pipe", "pipe"),
            base("seed_files", "seed_files"),
        ],
        metrics: vec![rate("msg/s")],
        full,
        quick,
    };
    w.push(q(
        "queue.1p1c.64B",
        Kind::Flow {
            p: 1,
            c: 1,
            size: 64,
        },
        (300_000, 700),
        (2_000, 100),
    ));
    w.push(Workload {
        group: Queue,
        name: "queue.claim.1p1c.64B",
        kind: Kind::Flow {
            p: 1,
            c: 1,
            size: 64,
        },
        contenders: vec![ours("ours_claim"), base("posix_mq", "posix_mq")],
        metrics: vec![rate("msg/s")],
        full: (300_000, 700),
        quick: (2_000, 100),
    });
    w.push(q(
        "queue.1p1c.4KiB",
        Kind::Flow {
            p: 1,
            c: 1,
            size: 4096,
        },
        (100_000, 700),
        (1_000, 100),
    ));
    // 64 KiB: over PIPE_BUF, and over POSIX mq's msgsize_max unless raised (8192 by
    // default), so the baselines are a pipe written with one 64 KiB write per message and
    // POSIX mq at its largest allowed message size, carrying a message in parts if need
    // be; with several producers and consumers, a baseline whose message is not one
    // kernel operation takes an flock per message on each side (`baselines/queue.rs`).
    let mq_split = crate::baselines::mq_chunk(crate::harness::BIG) < crate::harness::BIG;
    let big = |name, p, c, full, quick| Workload {
        group: Queue,
        name,
        kind: Kind::Flow {
            p,
            c,
            size: crate::harness::BIG,
        },
        contenders: if p == 1 && c == 1 {
            vec![
                ours("ours"),
                base("posix_mq", "posix_mq_chunked"),
                base("pipe", "pipe"),
            ]
        } else {
            vec![
                ours("ours"),
                if mq_split {
                    base("posix_mq+flock", "posix_mq_chunked")
                } else {
                    base("posix_mq", "posix_mq_chunked")
                },
                base("pipe+flock", "pipe"),
            ]
        },
        metrics: vec![rate("msg/s")],
        full,
        quick,
    };
    w.push(big("queue.1p1c.64KiB", 1, 1, (20_000, 700), (100, 100)));
    w.push(q(
        "queue.4p4c.64B",
        Kind::Flow {
            p: 4,
            c: 4,
            size: 64,
        },
        (75_000, 700),
        (500, 100),
    ));
    w.push(q(
        "queue.4p4c.4KiB",
        Kind::Flow {
            p: 4,
            c: 4,
            size: 4096,
        },
        (25_000, 700),
        (250, 100),
    ));
    w.push(big("queue.4p4c.64KiB", 4, 4, (5_000, 700), (25, 100)));
    w.push(Workload {
        group: Queue,
        name: "queue.pingpong.64B",
        kind: Kind::PingPong { size: 64 },
        contenders: vec![
            ours("ours"),
            base("posix_mq", "posix_mq"),
            base("pipe", "pipe"),
            base("futex", "futex"),
        ],
        metrics: vec![lat("p50", "", "us")],
        full: (20_000, 1000),
        quick: (200, 100),
    });
    for (name, p) in [("queue.durable.1p.64B", 1), ("queue.durable.4p.64B", 4)] {
        w.push(Workload {
            group: Queue,
            name,
            kind: Kind::Durable { p },
            contenders: vec![ours("ours_durable"), base("fdatasync", "fdatasync")],
            metrics: vec![rate("msg/s")],
            full: (1_000_000, 700),
            quick: (1_000_000, 60),
        });
    }
    w.push(Workload {
        group: Mutex,
        name: "mutex.uncontended",
        kind: Kind::LockPair,
        contenders: vec![
            ours("ours_mutex"),
            base("flock", "flock"),
            base("posix_sem", "posix_sem"),
            base("pthread_robust", "pthread_robust"),
            base("seed_file", "seed_file"),
        ],
        metrics: vec![lat("ns", "", "ns/pair")],
        full: (200_000, 400),
        quick: (2_000, 50),
    });
    // The mutex in word mode (`MutexOptions::flock_compatible(false)`: ownership in the
    // shared word, no flock per lock) beside the same baselines.
    w.push(Workload {
        group: Mutex,
        name: "mutex.uncontended.word",
        kind: Kind::LockPair,
        contenders: vec![
            ours("ours_mutex_word"),
            base("flock", "flock"),
            base("pthread_robust", "pthread_robust"),
        ],
        metrics: vec![lat("ns", "", "ns/pair")],
        full: (200_000, 400),
        quick: (2_000, 50),
    });
    // p99 over all acquisitions hides a starved process (it contributes few samples):
    // the longest single wait and the fairness (fewest / most cycles of a process) show it.
    let contended = vec![
        rate("cycles/s"),
        lat("p50", ".wait_p50", "us"),
        lat("p99", ".wait_p99", "us"),
        lat("max", ".wait_max", "us"),
        Metric {
            key: "fair",
            suffix: ".fairness",
            unit: "min/max",
            higher_is_better: true,
        },
    ];
    w.push(Workload {
        group: Mutex,
        name: "mutex.contended4",
        kind: Kind::LockContended,
        contenders: vec![
            ours("ours_mutex"),
            base("flock", "flock"),
            base("posix_sem", "posix_sem"),
            base("pthread_robust", "pthread_robust"),
        ],
        metrics: contended.clone(),
        full: (u64::MAX, 600),
        quick: (u64::MAX, 60),
    });
    w.push(Workload {
        group: Mutex,
        name: "mutex.contended4.word",
        kind: Kind::LockContended,
        contenders: vec![
            ours("ours_mutex_word"),
            base("flock", "flock"),
            base("pthread_robust", "pthread_robust"),
        ],
        metrics: contended,
        full: (u64::MAX, 600),
        quick: (u64::MAX, 60),
    });
    w.push(Workload {
        group: Mutex,
        name: "mutex.handoff",
        kind: Kind::Handoff,
        contenders: vec![
            ours("ours_mutex"),
            base("posix_sem_pingpong", "sem_pingpong"),
            base("flock", "flock"),
            base("posix_sem", "posix_sem"),
        ],
        metrics: vec![lat("p50", "", "us")],
        full: (200, 1000),
        quick: (10, 200),
    });
    w.push(Workload {
        group: Semaphore,
        name: "semaphore.uncontended",
        kind: Kind::LockPair,
        contenders: vec![
            ours("ours_sem"),
            base("flock", "flock"),
            base("posix_sem", "posix_sem"),
        ],
        metrics: vec![lat("ns", "", "ns/pair")],
        full: (200_000, 400),
        quick: (2_000, 50),
    });
    w.push(Workload {
        group: Semaphore,
        name: "semaphore.handoff",
        kind: Kind::Handoff,
        contenders: vec![
            ours("ours_sem"),
            base("posix_sem_pingpong", "sem_pingpong"),
            base("posix_sem", "posix_sem"),
        ],
        metrics: vec![lat("p50", "", "us")],
        full: (200, 1000),
        quick: (10, 200),
    });
    let kv = || {
        vec![
            ours("ours"),
            base("sqlite", "sqlite"),
            base("seed_json", "seed_json"),
        ]
    };
    w.push(Workload {
        group: Kv,
        name: "kv.set",
        kind: Kind::KvSingle { role: "kv-set" },
        contenders: kv(),
        metrics: vec![rate("ops/s")],
        full: (20_000, 500),
        quick: (200, 50),
    });
    w.push(Workload {
        group: Kv,
        name: "kv.get",
        kind: Kind::KvSingle { role: "kv-get" },
        contenders: kv(),
        metrics: vec![rate("ops/s")],
        full: (200_000, 500),
        quick: (500, 50),
    });
    w.push(Workload {
        group: Kv,
        name: "kv.incr4",
        kind: Kind::KvIncr,
        contenders: kv(),
        metrics: vec![
            rate("ops/s"),
            lat("p50", ".p50", "us"),
            lat("p99", ".p99", "us"),
        ],
        full: (u64::MAX, 700),
        quick: (u64::MAX, 60),
    });
    w.push(Workload {
        group: Event,
        name: "event.wake",
        kind: Kind::EventWake,
        contenders: vec![
            ours("ours"),
            base("inotify", "inotify"),
            base("poll10ms", "poll10ms"),
        ],
        metrics: vec![lat("p50", "", "us")],
        full: (200, 1000),
        quick: (8, 200),
    });
    w
}

/// The workloads of `--redis` runs: each primitive on the Redis engine beside raw redis-rs
/// doing the same job (see `baselines/redis.rs`), in the order they run and are reported.
pub(crate) fn redis_workloads() -> Vec<Workload> {
    use Which::*;
    let lock_pair = |group, name, ours_imp, label, imp| Workload {
        group,
        name,
        kind: Kind::LockPair,
        contenders: vec![ours(ours_imp), base(label, imp)],
        metrics: vec![lat("ns", "", "ns/pair")],
        full: (20_000, 1000),
        quick: (200, 100),
    };
    vec![
        lock_pair(
            Mutex,
            "redis.mutex.uncontended",
            "ours_redis_mutex",
            "redis_set_nx_px+lua",
            "redis_setnx",
        ),
        Workload {
            group: Queue,
            name: "redis.queue.1p1c.64B",
            kind: Kind::Flow {
                p: 1,
                c: 1,
                size: 64,
            },
            contenders: vec![ours("ours_redis"), base("redis_lpush_brpop", "redis_list")],
            metrics: vec![rate("msg/s")],
            full: (50_000, 1500),
            quick: (500, 200),
        },
        lock_pair(
            Semaphore,
            "redis.semaphore.uncontended",
            "ours_redis_sem",
            "redis_incr_script+decr",
            "redis_sem",
        ),
        Workload {
            group: Kv,
            name: "redis.kv.incr4",
            kind: Kind::KvIncr,
            contenders: vec![ours("ours_redis"), base("redis_hincrby", "redis_hash")],
            metrics: vec![
                rate("ops/s"),
                lat("p50", ".p50", "us"),
                lat("p99", ".p99", "us"),
            ],
            full: (u64::MAX, 1000),
            quick: (u64::MAX, 100),
        },
        Workload {
            group: Event,
            name: "redis.event.wake",
            kind: Kind::EventWake,
            contenders: vec![ours("ours_redis"), base("redis_pubsub", "redis_pubsub")],
            metrics: vec![lat("p50", "", "us")],
            // Caps long enough for a few samples when a wake-up takes a poll interval
            // (the engine's longest nap between polls is 500 ms).
            full: (200, 4000),
            quick: (8, 2000),
        },
    ]
}
