-- A content fingerprint per message (mail::content_fingerprint): a Message-ID alone no longer
-- decides that two messages are the same. NULL for messages stored before it existed; docket
-- fills it in from the stored raw message the first time it is compared.
ALTER TABLE messages ADD COLUMN content_sha256 TEXT;
