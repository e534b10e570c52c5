-- SAML2 (PostgreSQL dialect): the replay cache, the assertions already consumed by a
-- sign-in, remembered until their NotOnOrAfter plus the source's clock skew, so that
-- every host of an installation refuses them, across restarts. Sign-ins waiting for an
-- identity provider's answer are not here: they are made by unauthenticated requests and
-- stay in the memory of the host that started them, bounded. The other dialect's
-- migration of the same number creates the same table.

CREATE TABLE saml_assertions (
    source       TEXT NOT NULL,
    assertion_id TEXT NOT NULL,
    consumed_at  BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    PRIMARY KEY (source, assertion_id)
);
CREATE INDEX saml_assertions_expiry ON saml_assertions (expires_at);
