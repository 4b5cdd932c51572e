-- grove's own tables. River's tables come from rivermigrate.
-- Applied idempotently by store.Migrate; the version lives in grove_meta.
-- Times are unix milliseconds (INTEGER). Rows are archived, never deleted.

CREATE TABLE IF NOT EXISTS grove_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS repo (
    id             INTEGER PRIMARY KEY,
    path           TEXT NOT NULL UNIQUE,   -- main worktree, absolute
    common_dir     TEXT NOT NULL,
    default_branch TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    -- version 6: the host whose disk holds it (several hosts share a
    -- PostgreSQL database; there (host, path) is unique, see store.pgSchema)
    host           TEXT NOT NULL DEFAULT ''
);

CREATE TABLE IF NOT EXISTS session (
    id           TEXT PRIMARY KEY,         -- the caller's key, e.g. chat-42
    repo_id      INTEGER NOT NULL REFERENCES repo(id),
    state        TEXT NOT NULL,            -- starting | live | evicted | dead | failed | closed
    base_commit  TEXT NOT NULL,
    target_branch TEXT NOT NULL,
    serve_argv   TEXT,                     -- JSON array, NULL without a service
    port         INTEGER,                  -- leased port, NULL without one
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL,         -- last activity
    archived_at  INTEGER,
    -- version 3 (store.upgradeColumns adds them to an older database)
    reason       TEXT NOT NULL DEFAULT '', -- why dead or failed
    state_at     INTEGER NOT NULL DEFAULT 0,
    activity     TEXT NOT NULL DEFAULT '', -- what the last activity was
    last_port    INTEGER,                  -- the port before the lease expired
    restart      TEXT NOT NULL DEFAULT 'no',
    restarts     INTEGER NOT NULL DEFAULT 0,
    max_restarts INTEGER NOT NULL DEFAULT 5,
    restart_at   INTEGER,
    base_held    TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX IF NOT EXISTS session_port ON session(port) WHERE port IS NOT NULL AND state <> 'closed';

CREATE TABLE IF NOT EXISTS task (
    id            TEXT PRIMARY KEY,
    repo_id       INTEGER NOT NULL REFERENCES repo(id),
    session_id    TEXT REFERENCES session(id),
    base_ref      TEXT NOT NULL,
    base_commit   TEXT NOT NULL,
    target_branch TEXT NOT NULL,
    argv          TEXT NOT NULL,           -- JSON array
    env           TEXT NOT NULL,           -- JSON object
    path_env      TEXT NOT NULL,           -- submitter's PATH
    timeout_ms    INTEGER NOT NULL,
    apply_policy  TEXT NOT NULL,
    idem_key      TEXT UNIQUE,
    state         TEXT NOT NULL,
    error         TEXT NOT NULL DEFAULT '',
    exit_code     INTEGER,
    attempt       INTEGER NOT NULL DEFAULT 1,
    cancel_asked  INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    -- version 4 (store.upgradeColumns adds it to an older database)
    options       TEXT NOT NULL DEFAULT '{}' -- JSON grove.TaskOptions
);
-- newest first in `grove ls`: the index gives the order, no sort (version 2)
CREATE INDEX IF NOT EXISTS task_created_id ON task(created_at, id);
DROP INDEX IF EXISTS task_created;
CREATE INDEX IF NOT EXISTS task_state ON task(state);
CREATE INDEX IF NOT EXISTS task_session ON task(session_id, created_at);

CREATE TABLE IF NOT EXISTS workspace (
    id           INTEGER PRIMARY KEY,
    repo_id      INTEGER NOT NULL REFERENCES repo(id),
    task_id      TEXT REFERENCES task(id),
    session_id   TEXT REFERENCES session(id),
    path         TEXT NOT NULL,
    branch       TEXT NOT NULL,
    base_commit  TEXT NOT NULL,
    head_commit  TEXT NOT NULL DEFAULT '',
    state        TEXT NOT NULL,            -- creating | ready | removed
    at_risk      TEXT NOT NULL DEFAULT '', -- JSON report of the last refusal
    snapshot_ref TEXT NOT NULL DEFAULT '',
    last_used_at INTEGER NOT NULL,
    archived_at  INTEGER,
    -- version 5 (store.upgradeColumns adds it to an older database)
    setup_key    TEXT NOT NULL DEFAULT ''  -- grove.Settings.SetupKey of its last setup; '' none
);
CREATE UNIQUE INDEX IF NOT EXISTS workspace_live_path ON workspace(path) WHERE archived_at IS NULL;
CREATE INDEX IF NOT EXISTS workspace_task ON workspace(task_id);

CREATE TABLE IF NOT EXISTS run (
    id         INTEGER PRIMARY KEY,
    task_id    TEXT REFERENCES task(id),
    session_id TEXT REFERENCES session(id),
    attempt    INTEGER NOT NULL,
    kind       TEXT NOT NULL,              -- agent | service
    pid        INTEGER NOT NULL DEFAULT 0,
    start_time INTEGER NOT NULL DEFAULT 0, -- /proc/<pid>/stat starttime
    boot_id    TEXT NOT NULL DEFAULT '',
    dir        TEXT NOT NULL,
    exit_code  INTEGER,
    reason     TEXT NOT NULL DEFAULT '',
    started_at INTEGER NOT NULL,
    ended_at   INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS run_task_attempt ON run(task_id, attempt) WHERE kind = 'agent';

CREATE TABLE IF NOT EXISTS change (
    task_id     TEXT PRIMARY KEY REFERENCES task(id),
    base_commit TEXT NOT NULL,
    head_commit TEXT NOT NULL,
    files       TEXT NOT NULL,             -- JSON array of grove.FileChange
    added       INTEGER NOT NULL,
    deleted     INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS event (
    id         INTEGER PRIMARY KEY,
    task_id    TEXT,
    session_id TEXT,
    at         INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    message    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS event_task ON event(task_id, id);

-- version 6: the daemons sharing the database, one row per host, written
-- by its heartbeat (`grove doctor` lists the hosts not seen for a while).
CREATE TABLE IF NOT EXISTS host (
    name       TEXT PRIMARY KEY,
    seen_at    INTEGER NOT NULL,           -- last heartbeat
    started_at INTEGER NOT NULL,           -- when its daemon started
    pid        INTEGER NOT NULL,
    -- version 7: the daemon serving it (machine and home; store.ClaimHost)
    instance   TEXT NOT NULL DEFAULT ''
);
