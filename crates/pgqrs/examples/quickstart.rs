//! The README's job-queue example, as written there except for the connection string, which
//! comes from `PGQRS_DSN` (default: an SQLite file). `tests/readme.rs` checks the two
//! stay identical and runs this example on every backend.

use pgqrs;
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Connect to PostgreSQL
    let store = pgqrs::connect(
        &std::env::var("PGQRS_DSN").unwrap_or_else(|_| "sqlite://quickstart.db".into()),
    )
    .await?;

    // Setup (run once)
    pgqrs::admin(&store).install().await?;
    pgqrs::admin(&store).create_queue("tasks").await?;

    // Producer: enqueue a job
    let ids = pgqrs::enqueue()
        .message(&json!({"task": "send_email", "to": "user@example.com"}))
        .to("tasks")
        .execute(&store)
        .await?;
    println!("Enqueued: {:?}", ids);

    // Consumer: process jobs
    pgqrs::dequeue()
        .from("tasks")
        .handle(|msg| async move {
            println!("Processing: {:?}", msg.payload);
            // Your processing logic here
            Ok(())
        })
        .execute(&store)
        .await?;

    Ok(())
}
