//! The conformance suite: every case runs on every backend compiled in.
//!
//! ```text
//! cargo test --release -p pgqrs --features full --test conformance
//! PGQRS_TEST_DSN=postgresql://postgres@127.0.0.1:5432/test cargo test ... # PostgreSQL cases
//! cargo test ... -- sqlite::          # one backend
//! cargo test ... -- jobs::lease       # one group of cases, on every backend
//! ```
//!
//! Each case is `cases::<group>::<case>(db: &TestDb)`; [`conformance!`] instantiates it as
//! `<backend>::<group>::<case>`, a multi-threaded tokio test with a fresh database (see
//! `common`). Without `PGQRS_TEST_DSN` the PostgreSQL cases are skipped, except under
//! `CI=true`, where they fail; the same goes for the `pgbouncer::` cases and
//! `PGQRS_TEST_PGBOUNCER_DSN` (a PgBouncer in front of the same server; `.ci/run` starts
//! one).

mod cases;
mod common;

/// Lists every case once and instantiates it for the backend built by `$ctor`.
macro_rules! conformance {
    ($ctor:path) => {
        conformance!(@groups $ctor;
            connect { connect_errors, connect_failures_say_why, closed_store }
            schema { install_idempotent, not_installed, schema_upgrade, schema_too_new }
            queues {
                queue_lifecycle,
                queue_name_validation,
                delete_refused_while_leased,
                unknown_queue_errors,
                queue_recreated_by_another_store,
            }
            jobs {
                payload_roundtrip,
                payload_nul_char,
                payload_deep_nesting,
                payload_too_large,
                batch_enqueue_ids_in_order,
                delayed_enqueue,
                claim_with_visibility_timeout,
                lease_expiry_redelivery,
                lease_guarded_completion,
                archive_keeps_payload,
                delete_job,
                extend_lease,
                release_job,
                metrics_after_sequence,
            }
            retry {
                retry_then_dead_letter_then_requeue,
                consumer_fail_with_backoff,
                policy_and_job_limits_agree,
                final_attempt_expiry_rescued_by_worker,
            }
            consume { dequeue_one_shot, dequeue_handler_error_and_panic, consumer_settle }
            worker {
                worker_concurrency,
                worker_batch_handler,
                worker_failing_handler_retries,
                worker_panicking_handler,
                worker_graceful_shutdown,
                worker_grace_exceeded,
                worker_registration_heartbeat,
                worker_extends_running_leases,
                worker_delete_on_success,
                worker_queue_deleted,
                worker_session_settings,
                worker_heartbeat_follows_short_lease,
                worker_refuses_heartbeat_longer_than_half_the_lease,
                worker_gives_back_jobs_its_stalled_handlers_hold,
            }
            concurrency { exactly_once_workers, exactly_once_consumers }
            analyzed { drain_after_analyze_all_ready, drain_after_analyze_all_leased }
            flow {
                priorities_order_claims,
                priority_out_of_range_and_batches,
                dead_letter_keeps_priority,
                worker_runs_higher_priority_first,
            }
            retention {
                retention_settings,
                prune_on_demand,
                prune_in_batches,
                prune_finished_runs,
                worker_prunes_in_background,
                concurrent_prunes,
            }
            deadlines {
                job_timeout_cancels_the_handler,
                worker_default_and_job_timeouts,
                dequeue_enforces_the_job_timeout,
                bad_timeouts,
            }
            inspect {
                get_job_in_every_state,
                expired_leases_keep_the_metrics_states,
                list_jobs_pages_in_order,
                cancel_only_waiting_jobs,
                cancel_races_claims,
                retry_dead_job,
                reschedule_and_reprioritize,
                reschedule_ends_an_expired_lease,
            }
            unique {
                unique_key_holds_while_waiting_or_running,
                unique_keys_in_batches,
                unique_for_covers_recently_finished,
                requeued_dead_letter_and_its_key,
                unique_options_validated,
                unique_race_many_producers,
                unique_for_race_with_completions,
                keyed_job_keeps_key_and_timeout_when_dead,
            }
            limits {
                limits_settings,
                concurrency_limit_holds_across_stores,
                concurrency_limit_counts_live_leases,
                group_limit_does_not_starve_other_groups,
                rate_limit_windows,
                freed_capacity_wakes_idle_workers,
                limits_set_elsewhere_apply,
            }
            schedules {
                schedule_lifecycle,
                schedule_bad_input,
                schedule_fires_each_tick_once,
                missed_ticks_policy,
                many_firers_one_job_per_tick,
                worker_fires_schedules,
            }
            quickstart { seed_example }
            tx { commit_or_nothing, same_checks_and_defaults, keyed_in_transaction }
        );
    };
    (@groups $ctor:path; $($group:ident { $($case:ident),* $(,)? })*) => {
        $(
            mod $group {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $case() {
                        let Some(db) = $ctor().await else { return };
                        $crate::common::bounded(
                            concat!(stringify!($group), "::", stringify!($case)),
                            $crate::cases::$group::$case(&db),
                        )
                        .await;
                    }
                )*
            }
        )*
    };
}

#[cfg(feature = "sqlite")]
mod sqlite {
    conformance!(crate::common::TestDb::sqlite);
}

#[cfg(feature = "postgres")]
mod postgres {
    conformance!(crate::common::TestDb::postgres);
}

#[cfg(feature = "turso")]
mod turso {
    conformance!(crate::common::TestDb::turso);
}

/// Every case again through PgBouncer (session pooling), with unnamed statements
/// (`statement_cache=false`) and workers that poll instead of listening (`notify=false`).
#[cfg(feature = "postgres")]
mod pgbouncer {
    conformance!(crate::common::TestDb::pgbouncer);
}

/// PostgreSQL only, because only a server can close a pooled connection under the pool's feet
/// (a restart, `pg_terminate_backend`, an idle-killing proxy); SQLite and Turso have none.
#[cfg(feature = "postgres")]
mod postgres_server {
    conformance!(@groups crate::common::TestDb::postgres;
        connect { connections_closed_by_the_server });
}

/// SQLite and Turso only, because only they keep a write-ahead log file of pgqrs's own
/// (PostgreSQL checkpoints its WAL itself): it must stay bounded under pgqrs's writes; and
/// only their transactions are pgqrs's to roll back when a write is cancelled.
#[cfg(feature = "sqlite")]
mod sqlite_file {
    conformance!(@groups crate::common::TestDb::sqlite;
        jobs { wal_stays_bounded, cancelled_write_leaves_nothing });
}

#[cfg(feature = "turso")]
mod turso_file {
    conformance!(@groups crate::common::TestDb::turso;
        jobs { wal_stays_bounded, cancelled_write_leaves_nothing });
}

/// Idle workers woken by another store's enqueue (not through PgBouncer, whose cases run with
/// `notify=false`); PostgreSQL also with notifications off.
#[cfg(feature = "sqlite")]
mod sqlite_wake {
    conformance!(@groups crate::common::TestDb::sqlite; wakeup { from_another_store });
}

#[cfg(feature = "postgres")]
mod postgres_wake {
    conformance!(@groups crate::common::TestDb::postgres;
        wakeup { from_another_store, notify_off_polls });
}

/// An idle worker woken by the commit of a transaction that enqueued: PostgreSQL (NOTIFY at
/// commit) and SQLite (the change watcher), the backends with sqlx connections; not through
/// PgBouncer, whose cases run with `notify=false`.
#[cfg(feature = "sqlite")]
mod sqlite_tx_wake {
    conformance!(@groups crate::common::TestDb::sqlite; tx { idle_worker_wakes_at_commit });
}

#[cfg(feature = "postgres")]
mod postgres_tx_wake {
    conformance!(@groups crate::common::TestDb::postgres; tx { idle_worker_wakes_at_commit });
}

/// PostgreSQL only, because only PostgreSQL has the SQL enqueue function (`pgqrs_enqueue`,
/// for clients that are not pgqrs): SQLite has no server-side functions that other
/// processes' clients could call, and SQLite callers use `execute_in` on their connection.
#[cfg(feature = "postgres")]
mod postgres_sql_enqueue {
    conformance!(@groups crate::common::TestDb::postgres;
    sql_enqueue {
        defaults_and_options_match_the_builder,
        bad_input_is_refused_like_the_library,
        unique_keys,
        install_writes_the_settings,
    });
}

#[cfg(feature = "turso")]
mod turso_wake {
    conformance!(@groups crate::common::TestDb::turso; wakeup { from_another_store });
}
