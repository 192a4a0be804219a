//! The README's schedules example, as written there except for the connection string, which
//! comes from `PGQRS_DSN` (default: an SQLite file). `tests/readme.rs` checks the two stay
//! identical and runs this example on every backend.

use std::time::Duration;

use pgqrs::ScheduleOptions;
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = pgqrs::connect(
        &std::env::var("PGQRS_DSN").unwrap_or_else(|_| "sqlite://schedules.db".into()),
    )
    .await?;
    let admin = pgqrs::admin(&store);
    admin.install().await?;
    admin.create_queue("reports").await?;

    // 03:30 every day, Paris time; if no worker ran then, catch up one missed night.
    let nightly = admin
        .create_schedule(
            "nightly-report",
            "reports",
            ScheduleOptions::cron("0 30 3 * * *")
                .timezone("Europe/Paris")
                .payload(&json!({"kind": "daily"}))
                .catch_up(1),
        )
        .await?;
    println!("Next report: {}", nightly.next_at);
    // Every second.
    admin
        .create_schedule(
            "heartbeat",
            "reports",
            ScheduleOptions::every(Duration::from_secs(1)).payload(&json!({"kind": "beat"})),
        )
        .await?;

    // Any running worker fires the due ticks of every schedule: one job per tick.
    let worker = pgqrs::worker("reports").handle(|msg| async move {
        println!("Tick: {}", msg.payload);
        Ok(())
    });
    let stop = worker.shutdown_handle();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        stop.shutdown();
    });
    let stats = worker.run(&store).await?;
    println!("Handled {} scheduled jobs", stats.succeeded);

    // Fire now (one more job), pause, list.
    admin.trigger_schedule("nightly-report").await?;
    admin.pause_schedule("heartbeat").await?;
    for s in admin.list_schedules().await? {
        println!("{}: paused={} next={}", s.name, s.paused, s.next_at);
    }
    Ok(())
}
