//! The seed's "Shared State Coordination" example, from several processes at once.
//!
//! ```text
//! cargo run --example shared_state & cargo run --example shared_state & \
//!     cargo run --example shared_state & wait
//! ```
//!
//! Each process calls `update_counter` 100 times; the last of the three to finish
//! checks that the counter is exactly 300 and clears the store for the next run.
//! Arguments (all optional): `PATH PROCESSES UPDATES`.
//!
//! The seed guards a `get` then a `set` with a separate `Mutex`. Here the read-modify-write
//! is one atomic [`SharedData::update`], which replaces the seed's mutex-guarded
//! get + set (without the mutex that pair is a lost-update race; with it, every access
//! must remember to take the mutex).

use std::process::ExitCode;

use fileipc::SharedData;

/// One step of the seed's example: add one to the shared counter and print it.
pub fn update_counter(state: &SharedData) -> fileipc::Result<i64> {
    // Seed: mutex.lock(); count = state.get("counter") ?? 0; state.set("counter",
    // count + 1); mutex.unlock(). One atomic update does the same without the race.
    let count = state
        .update("counter", |count: Option<i64>| Some(count.unwrap_or(0) + 1))?
        .unwrap_or(0);
    println!("Counter is now: {count}");
    Ok(count)
}

/// Runs `updates` steps as one of `processes` cooperating processes. The last process
/// to finish returns `Some((counter, expected))` after clearing the store; the others
/// return `None`.
pub fn run(path: &str, processes: i64, updates: i64) -> fileipc::Result<Option<(i64, i64)>> {
    let state = SharedData::open(path)?;
    for _ in 0..updates {
        update_counter(&state)?;
    }
    // Count finished processes and, atomically with that, let the last one read the
    // total and reset the store.
    state.transaction(|tx| {
        let done = tx.increment("processes_done", 1)?;
        if done < processes {
            return Ok(None);
        }
        let counter: i64 = tx.get("counter")?.unwrap_or(0);
        tx.clear()?;
        Ok(Some((counter, processes * updates)))
    })
}

#[allow(dead_code)] // unused when the tests include this file as a module
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args
        .first()
        .cloned()
        .unwrap_or_else(|| "/tmp/fileipc_shared_state".to_owned());
    let processes = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    let updates = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100);
    match run(&path, processes, updates) {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some((counter, expected))) => {
            println!("All {processes} processes done: counter = {counter} (expected {expected})");
            if counter == expected {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("shared_state: {e}");
            ExitCode::FAILURE
        }
    }
}
