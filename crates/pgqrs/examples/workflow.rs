//! The README's durable-workflow example, as written there except for the connection string, which
//! comes from `PGQRS_DSN` (default: an SQLite file). `tests/readme.rs` checks the two
//! stay identical and runs this example on every backend.

use pgqrs;
use pgqrs_macros::{pgqrs_step, pgqrs_workflow};

#[pgqrs_step]
async fn fetch_data(ctx: &pgqrs::Workflow, url: &str) -> Result<String, anyhow::Error> {
    // A real step would fetch `url`; its output is journaled either way.
    Ok(format!("line 1 of {url}\nline 2\nline 3\n"))
}

#[pgqrs_step]
async fn process_data(ctx: &pgqrs::Workflow, data: String) -> Result<i32, anyhow::Error> {
    Ok(data.lines().count() as i32)
}

#[pgqrs_workflow]
async fn data_pipeline(ctx: &pgqrs::Workflow, url: &str) -> Result<String, anyhow::Error> {
    let data = fetch_data(ctx, url).await?;
    let count = process_data(ctx, data).await?;
    Ok(format!("Processed {} lines", count))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = pgqrs::connect(
        &std::env::var("PGQRS_DSN").unwrap_or_else(|_| "sqlite://workflow.db".into()),
    )
    .await?;
    pgqrs::admin(&store).install().await?;

    let url = "https://example.com/data.txt";
    let workflow = pgqrs::admin(&store)
        .create_workflow("data_pipeline", &url)
        .await?;

    let result = data_pipeline(&workflow, url).await?;
    println!("Result: {}", result);
    Ok(())
}
