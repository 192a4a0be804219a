//! The README's "Enqueue inside your transaction" example, as written there except for the
//! connection string, which comes from `PGQRS_DSN`. PostgreSQL only (it uses `sqlx::PgPool`);
//! `tests/readme.rs` checks the two stay identical and runs this example on PostgreSQL.

use pgqrs;
use pgqrs::sqlx;
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = pgqrs::connect(
        &std::env::var("PGQRS_DSN").unwrap_or_else(|_| "postgresql://localhost/mydb".into()),
    )
    .await?;
    pgqrs::admin(&store).install().await?;
    pgqrs::admin(&store).create_queue("emails").await?;

    // Your application's own pool, on the same database
    let pool = sqlx::PgPool::connect(
        &std::env::var("PGQRS_DSN").unwrap_or_else(|_| "postgresql://localhost/mydb".into()),
    )
    .await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS orders (id BIGSERIAL PRIMARY KEY, email TEXT)")
        .execute(&pool)
        .await?;

    // The order and its email job commit together
    let mut tx = pool.begin().await?;
    let (order,): (i64,) = sqlx::query_as("INSERT INTO orders (email) VALUES ($1) RETURNING id")
        .bind("user@example.com")
        .fetch_one(&mut *tx)
        .await?;
    let ids = pgqrs::enqueue()
        .message(&json!({"order": order, "to": "user@example.com"}))
        .to("emails")
        .execute_in(&store, &mut tx)
        .await?;
    tx.commit().await?; // the job exists from here on, and idle workers wake
    println!("Order {order}: job {}", ids[0]);

    // Rolled back: no order, and no job
    let mut tx = pool.begin().await?;
    pgqrs::enqueue()
        .message(&json!({"order": 0}))
        .to("emails")
        .execute_in(&store, &mut tx)
        .await?;
    tx.rollback().await?;
    assert_eq!(pgqrs::admin(&store).queue_metrics("emails").await?.ready, 1);
    Ok(())
}
