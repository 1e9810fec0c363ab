-- Registered OAuth clients. Secrets are stored as scrypt hashes (see
-- auth-service/src/secret_hash.c); scopes and grant types are space-separated
-- lists in the OAuth syntax so they travel to tokens unchanged.
CREATE TABLE auth.clients (
    client_id        text PRIMARY KEY
                     CHECK (client_id ~ '^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$'),
    secret_hash      text NOT NULL,
    app_name         text NOT NULL DEFAULT '' CHECK (length(app_name) <= 128),
    scopes           text NOT NULL DEFAULT ''
                     CHECK (scopes = '' OR scopes ~ '^[!-~]+( [!-~]+)*$'),
    role             text CHECK (role ~ '^[a-z][a-z0-9_-]{0,31}$'),
    grant_types      text NOT NULL DEFAULT 'client_credentials'
                     CHECK (grant_types ~ '^[a-z_]+( [a-z_]+)*$'),
    access_token_ttl integer CHECK (access_token_ttl BETWEEN 5 AND 86400),
    active           boolean NOT NULL DEFAULT true,
    registered_by    text NOT NULL DEFAULT 'self'
                     CHECK (registered_by IN ('self', 'operator')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
