//! The seed's Mutex example: lock with a timeout, do the critical section, unlock.
//!
//! `cargo run --example mutex` (run it twice at once to see the second wait).

use std::time::Duration;

use fileipc::Mutex;

fn main() -> fileipc::Result<()> {
    let path = std::env::temp_dir().join("my_mutex");
    let mutex = Mutex::open(&path)?;

    if mutex.lock_timeout(Duration::from_millis(1000))? {
        // Critical section
        println!("In critical section");
        mutex.unlock()?;
    } else {
        println!("Could not acquire lock");
    }

    // The same with a guard, which unlocks when it goes out of scope.
    match mutex.guard_timeout(Duration::from_millis(1000))? {
        Some(_guard) => println!("In critical section (guarded)"),
        None => println!("Could not acquire lock"),
    }
    Ok(())
}
