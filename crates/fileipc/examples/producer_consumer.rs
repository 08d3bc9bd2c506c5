//! The producer-consumer pattern of the original `@stdlib/ipc` documentation, with the
//! producer and the consumer as two real processes: this program starts the consumer,
//! then runs itself again as the producer.
//!
//! ```text
//! cargo run --example producer_consumer            # both roles
//! cargo run --example producer_consumer -- producer DIR
//! cargo run --example producer_consumer -- consumer DIR
//! ```

use std::process::{Command, ExitCode};

use fileipc::MessageQueue;

fn producer(dir: &str) -> fileipc::Result<()> {
    let mq = MessageQueue::open(dir)?;
    for i in 0..10 {
        mq.send(format!("Task {i}"))?;
        println!("[producer {}] Sent task {i}", std::process::id());
    }
    mq.send("DONE")?; // Signal completion
    Ok(())
}

fn consumer(dir: &str) -> fileipc::Result<()> {
    let mq = MessageQueue::open(dir)?;
    loop {
        let Some(msg) = mq.recv()? else {
            eprintln!("[consumer] no message within 5 s; giving up");
            break;
        };
        if msg == "DONE" {
            println!("[consumer {}] All tasks complete", std::process::id());
            break;
        }
        println!(
            "[consumer {}] Processing: {}",
            std::process::id(),
            String::from_utf8_lossy(&msg)
        );
    }
    mq.destroy()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("producer") => producer(args.get(2).map_or("/tmp/work_queue", String::as_str)),
        Some("consumer") => consumer(args.get(2).map_or("/tmp/work_queue", String::as_str)),
        _ => {
            // Both roles, each in its own process, on a fresh queue directory.
            let dir = std::env::temp_dir().join(format!("work_queue.{}", std::process::id()));
            let dir = dir.to_string_lossy().into_owned();
            let spawn = |role: &str| {
                Command::new(std::env::current_exe().expect("own path"))
                    .args([role, &dir])
                    .spawn()
            };
            let run = || -> std::io::Result<bool> {
                let mut consumer = spawn("consumer")?;
                let mut producer = spawn("producer")?;
                Ok(producer.wait()?.success() & consumer.wait()?.success())
            };
            match run() {
                Ok(true) => return ExitCode::SUCCESS,
                Ok(false) => return ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("producer_consumer: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("producer_consumer: {e}");
            ExitCode::FAILURE
        }
    }
}
