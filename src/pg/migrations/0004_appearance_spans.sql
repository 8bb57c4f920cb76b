-- An appearance's spans: one per track of it (the person turned away, passed behind
-- something, left the frame and came back in between), as JSON [[first_ms, last_ms], ...];
-- NULL for an appearance of one span (first_seen_ms..last_seen_ms), as every row before.
ALTER TABLE appearances ADD COLUMN spans text;
