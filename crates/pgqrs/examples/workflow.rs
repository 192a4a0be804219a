//! The README's durable-workflow example. The connection string comes from `PGQRS_DSN`
//! (default: an SQLite file), and `fetch_data` reads a local stand-in instead of the network.

use pgqrs;
use pgqrs_macros::{pgqrs_step, pgqrs_workflow};

#[pgqrs_step]
async fn fetch_data(ctx: &pgqrs::Workflow, url: &str) -> Result<String, anyhow::Error> {
    // The README fetches `url` over HTTP; this example needs no network.
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
    let dsn = std::env::var("PGQRS_DSN").unwrap_or_else(|_| "sqlite://workflow.db".into());
    let store = pgqrs::connect(&dsn).await?;
    pgqrs::admin(&store).install().await?;

    let url = "https://example.com/data.txt";
    let workflow = pgqrs::admin(&store)
        .create_workflow("data_pipeline", &url)
        .await?;

    let result = data_pipeline(&workflow, url).await?;
    println!("Result: {}", result);
    Ok(())
}
