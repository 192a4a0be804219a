//! The README's concurrency and rate limits example, as written there except for the
//! connection string, which comes from `PGQRS_DSN` (default: an SQLite file).
//! `tests/readme.rs` checks the two stay identical and runs this example on every backend.

use pgqrs::{QueueLimits, QueueOptions, RateLimit};
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store =
        pgqrs::connect(&std::env::var("PGQRS_DSN").unwrap_or_else(|_| "sqlite://limits.db".into()))
            .await?;
    let admin = pgqrs::admin(&store);
    admin.install().await?;
    if !admin
        .list_queues()
        .await?
        .iter()
        .any(|q| q.name == "api-calls")
    {
        let options = QueueOptions::new()
            .concurrency_limit(4)
            .group_concurrency_limit(1)
            .rate_limit(RateLimit::new(20, Duration::from_secs(1)));
        admin.create_queue_with("api-calls", options).await?;
    }
    let limits = QueueLimits::new().concurrency(2).group_concurrency(1);
    let q = admin.set_queue_limits("api-calls", limits).await?;
    println!("Limits: {:?}", q.limits);

    for customer in ["customer-7", "customer-8"] {
        pgqrs::enqueue()
            .messages([1, 2, 3])
            .group(customer)
            .to("api-calls")
            .execute(&store)
            .await?;
    }
    let consumer = pgqrs::Consumer::new(&store, "api-calls").await?;
    let batch = consumer.dequeue(10, None).await?;
    println!("Claimed {} jobs, one per customer", batch.len());
    assert_eq!(batch.len(), 2);
    for m in batch {
        consumer.archive(m.id).await?;
    }
    Ok(())
}
