//! The seed's Semaphore examples: counting permits, and the "Resource Pool".
//!
//! `cargo run --example semaphore`

use std::time::Duration;

use fileipc::Semaphore;

fn main() -> fileipc::Result<()> {
    let dir = std::env::temp_dir();

    // Create semaphore with 3 permits (the initial value applies only if the file is new).
    let sem_path = dir.join("my_sem");
    let _ = std::fs::remove_file(&sem_path);
    let sem = Semaphore::open(&sem_path, 3)?;

    // Acquire permits
    println!("{}", sem.value()?); // 3
    sem.acquire()?;
    println!("{}", sem.value()?); // 2

    // Try non-blocking acquire
    if sem.try_acquire()? {
        println!("Got permit");
        sem.release()?; // Return permit
    }

    // Release all
    sem.release()?;
    println!("{}", sem.value()?); // 3

    // Resource Pool: five workers share three resources.
    let pool_size = 3;
    let pool_path = dir.join("resource_pool");
    let _ = std::fs::remove_file(&pool_path);
    let pool = Semaphore::open(&pool_path, pool_size)?;
    std::thread::scope(|s| {
        for _ in 0..5 {
            s.spawn(|| use_resource(&pool));
        }
    });
    println!("Pool has {} available at the end", pool.value()?);
    Ok(())
}

fn use_resource(pool: &Semaphore) {
    match pool.acquire_timeout(Duration::from_millis(5000)) {
        Ok(true) => {
            match pool.value() {
                Ok(v) => println!("Got resource, pool now has {v} available"),
                Err(e) => eprintln!("value: {e}"),
            }
            // Use the resource...
            std::thread::sleep(Duration::from_millis(200));
            match pool.release() {
                Ok(()) => println!("Released resource"),
                Err(e) => eprintln!("release: {e}"),
            }
        }
        Ok(false) => println!("Timeout waiting for resource"),
        Err(e) => eprintln!("acquire: {e}"),
    }
}
