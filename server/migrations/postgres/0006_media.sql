-- The blind media store's metadata. The bytes live on disk under
-- <data_dir>/media/, named by their SHA-256; `sha256` is NULL while a media
-- id made by POST /_matrix/media/v1/create awaits its upload.
CREATE TABLE media (
    media_id     TEXT   NOT NULL PRIMARY KEY,
    uploader     TEXT   NOT NULL,
    content_type TEXT,
    filename     TEXT,
    size         BIGINT,
    sha256       TEXT,
    created_ts   BIGINT NOT NULL
);
CREATE INDEX media_by_sha256 ON media (sha256);
