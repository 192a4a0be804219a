-- pgqrs schema version 5: lease tokens come from one sequence.
--
-- Until version 4 a job's lease token counted that job's leases (1, 2, 3, …), so a lease was
-- the pair (job id, token), and completing a batch of leases joined the job table with the
-- list of pairs. When the table's statistics were taken while no job was leased (autovacuum's
-- ANALYZE, between two bursts), the planner turned that join around and scanned the whole
-- table once per lease: 2 s per batch of 500 on a 20,000-job queue. With every token drawn
-- from one sequence, a token names one lease of one job, so a batch is found by id through
-- the primary key and checked with `lease_token = ANY(tokens)`, a plain filter that no
-- statistics can turn into a scan.
--
-- The sequence starts above every token already handed out, so no new token equals an old
-- one. Leases taken before the upgrade keep their per-job counts and stay valid until they
-- end (at the lease timeout at the latest); only while such old leases are still in flight
-- could two of them in one batch share a count.
CREATE SEQUENCE IF NOT EXISTS {s}.pgqrs_lease_tokens;
SELECT setval('{s}.pgqrs_lease_tokens',
              (SELECT coalesce(max(lease_token), 0) + 1 FROM {s}.pgqrs_jobs), false);
