-- The sweep epoch (src/sweep_epoch.rs): odd while a sweep may be deleting blobs; a filing
-- commits only if it is the same even value it read before writing its blobs.
-- started_at: Unix seconds when the current (or last) sweep made it odd.
CREATE TABLE blob_sweep (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    epoch BIGINT NOT NULL,
    started_at BIGINT NOT NULL
);
INSERT INTO blob_sweep (id, epoch, started_at) VALUES (1, 0, 0);
