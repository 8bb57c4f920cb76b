-- The erasure log (src/gallery/erasure.rs): one row per erased identity, written in the
-- transaction that deletes it and never pruned with the change feed, so a node that was
-- down during an erasure (or past the feed's retention) replays it before it serves.
-- Identity ids only: no name, no face.
CREATE TABLE erasures (
    seq bigserial PRIMARY KEY,
    identity_id uuid NOT NULL,
    erased_at timestamptz NOT NULL DEFAULT now(),
    appearances boolean NOT NULL
);
