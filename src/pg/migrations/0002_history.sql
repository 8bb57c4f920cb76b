-- facestream appearance history (history.enabled): every node writes the tracks it
-- decided; every node follows history_changes into its own search index. Created with the
-- gallery's schema whether the history is on or not (empty tables cost nothing).
CREATE SEQUENCE appearance_seq;
CREATE TABLE appearances (
    seq bigint PRIMARY KEY,
    track_id uuid NOT NULL UNIQUE,
    camera text NOT NULL,
    -- cluster.node_id of the node that watched the camera
    node text NOT NULL,
    first_seen_ms bigint NOT NULL,
    last_seen_ms bigint NOT NULL,
    model text NOT NULL,
    -- the track's pooled template: little-endian f32, L2-normalised (biometric data)
    template bytea NOT NULL,
    quality real NOT NULL,
    event_id uuid,
    identity_id uuid,
    similarity real,
    -- the best aligned face, JPEG (biometric data)
    shot bytea
);
CREATE INDEX appearances_first_seen ON appearances (first_seen_ms);
CREATE INDEX appearances_last_seen ON appearances (last_seen_ms);
CREATE INDEX appearances_identity ON appearances (identity_id);

-- One row per committed change, positions taken under the history writers' advisory lock
-- held until commit (as gallery_changes): a node that applied everything up to N never
-- later sees a change under N.
CREATE SEQUENCE history_change_seq;
CREATE TABLE history_changes (
    pos bigint PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('added', 'removed', 'unlinked')),
    seq bigint NOT NULL,
    first_seen_ms bigint NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX history_changes_at ON history_changes (at);
CREATE TABLE history_feed (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    pruned_through bigint NOT NULL
);
INSERT INTO history_feed (pruned_through) VALUES (0);

-- Every search of the history, with the API key's name (never a face).
CREATE TABLE search_audit (
    at_ms bigint NOT NULL,
    node text NOT NULL,
    key_name text NOT NULL,
    kind text NOT NULL,
    detail text NOT NULL,
    results integer NOT NULL
);
CREATE INDEX search_audit_at ON search_audit (at_ms);
