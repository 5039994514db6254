-- meta holds facts about this installation, one value per key (for example
-- when it was first started). It is small and read rarely.

-- +goose Up
CREATE TABLE meta (
    key        text PRIMARY KEY,
    value      text NOT NULL,
    updated_at timestamp NOT NULL
);

-- +goose Down
DROP TABLE meta;
