-- Trained spam filters: the newest row is the one in use; older rows are the training
-- history shown on the spam page. model is the JSON of server::spam::Model (it carries its
-- own format version); metrics is the cross-validation Evaluation as JSON.
CREATE TABLE spam_models (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    trained_at BIGINT NOT NULL,
    source TEXT NOT NULL,
    model TEXT NOT NULL,
    metrics TEXT,
    spam_count BIGINT NOT NULL,
    ham_count BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
