-- facestream gallery of record, version 1: identities, their templates, and the change
-- feed every node follows to keep its in-memory index current.
CREATE TABLE identities (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    metadata jsonb NOT NULL,
    created timestamptz NOT NULL,
    updated timestamptz NOT NULL
);
CREATE INDEX identities_created ON identities (created, id);

CREATE TABLE templates (
    id uuid PRIMARY KEY,
    identity_id uuid NOT NULL REFERENCES identities (id) ON DELETE CASCADE,
    -- model@version the embedding was made with; an index holds one model only
    model text NOT NULL,
    -- little-endian f32, L2-normalised
    embedding bytea NOT NULL,
    quality real NOT NULL,
    source text NOT NULL,
    created timestamptz NOT NULL,
    -- the aligned 112x112 RGB crop, only with gallery.keep_crops (biometric data)
    crop bytea
);
CREATE INDEX templates_identity ON templates (identity_id);
CREATE INDEX templates_model ON templates (model);

-- One row per committed change. Writers hold the advisory lock facestream_write_lock
-- while they take a position and until they commit, so positions become visible in
-- order: a node that has applied everything up to N never later sees a change under N.
CREATE SEQUENCE gallery_change_seq;
CREATE TABLE gallery_changes (
    seq bigint PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('identity_named', 'identity_removed', 'template_added', 'template_removed')),
    identity_id uuid NOT NULL,
    template_id uuid,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX gallery_changes_at ON gallery_changes (at);

-- Changes up to pruned_through were deleted (older than the feed's retention): a node
-- behind that rebuilds its index from the tables.
CREATE TABLE gallery_feed (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    pruned_through bigint NOT NULL
);
INSERT INTO gallery_feed (pruned_through) VALUES (0);
