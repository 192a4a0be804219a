-- pgqrs schema version 4: the hot job table loses its foreign key to the queues.
--
-- A foreign key is checked once per inserted row (a lookup and a row lock on the queue for
-- every job): with it, a 500-job batch spent about 70% of its time in those checks. pgqrs
-- keeps the same guarantee itself, once per statement: an enqueue locks its queue's row
-- `FOR KEY SHARE` and inserts nothing if the queue is gone, and deleting a queue locks that
-- row `FOR UPDATE` before it deletes the queue's jobs, so no job can outlive its queue.
ALTER TABLE {s}.pgqrs_jobs DROP CONSTRAINT IF EXISTS pgqrs_jobs_queue_id_fkey;
