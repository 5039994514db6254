-- signing_keys holds the keys that sign access tokens (platform/token).
-- public_key is PEM (PKIX). private_key is PKCS#8 DER, base64, behind a
-- marker: "plain:" when stored as it is, "aesgcm:" when encrypted with
-- AES-256-GCM under the configured master key (nonce first). Both are text
-- so that the two dialects hold the same values. A key with no retired_at
-- is the one that signs; retired keys stay for verification until every
-- token they signed has expired.

-- +goose Up
CREATE TABLE signing_keys (
    kid         text PRIMARY KEY,
    algorithm   text NOT NULL,
    public_key  text NOT NULL,
    private_key text NOT NULL,
    created_at  timestamp NOT NULL,
    retired_at  timestamp NULL
);

-- At most one active key per algorithm: instances that start together on
-- an empty database, or rotate together, cannot both make one.
CREATE UNIQUE INDEX signing_keys_active ON signing_keys (algorithm) WHERE retired_at IS NULL;

-- +goose Down
DROP TABLE signing_keys;
