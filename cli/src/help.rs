//! The texts `--help` shows after the options: exit codes, and an example for each command.

/// After the top-level options.
pub const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    a check failed (verify, audit, demo; a stored event that does not fold)
  2    fix the input or the configuration first: nothing was done (JSON, ids, paths, files,
       credentials, URLs, a server without JetStream, a case or version not there)
  3    conflict: another writer committed first, or the case exists; nothing was committed
  4    try again later: the server cannot be reached or did not answer, or a commit's outcome
       is not known yet (it may still land: run the same command again with the --commit-id
       it printed, which stores it at most once)
  5    done, but the output could not be written: the change is stored (a commit, a case, an
       import, a checkpoint); do not run it again to get the output
  141  the reader closed the output (`wfstate history CASE | head -5`)

Store: the embedded log in --data-dir (./wfstate-data) unless --nats URL is given. Read
commands (show, list, history, audit, verify, replay, diff, export) never create one.
`wfstate COMMAND --help` shows each command's options and an example.";

pub const CREATE: &str = "\
Examples:
  wfstate create --id order-42 --ctx '{\"customer\": \"ada\", \"amount\": 42}'
  wfstate create                       # a new UUID v7 id, printed
  wfstate create --commit-id \"$ID\"     # run again with the same ID: the same case, once";

pub const SHOW: &str = "\
Examples:
  wfstate show order-42
  wfstate show order-42 --at-version 3 --json
  wfstate show order-42 --at-time 2026-12-05T14:30:00Z
  wfstate show order-42 --at-time 2h   # as it was two hours ago";

pub const DIFF: &str = "\
Examples:
  wfstate diff order-42 3 4
  wfstate diff order-42 0 7 --json     # everything the case's first 7 commits did";

pub const LIST: &str = "\
Examples:
  wfstate list
  wfstate list --status running --where ctx.region=eu --updated-since 1h
  wfstate list --where meta.team=blue --limit 0 --json

It reads every view once (a scan; no index is kept for it): at 100,000 cases about 0.4 s on
the embedded store and 2.3 s on JetStream (docs/benchmarks.md).";

pub const HISTORY: &str = "\
Examples:
  wfstate history order-42
  wfstate history order-42 --since 2026-12-05 --limit 20
  wfstate history order-42 --follow --json   # one object a line, with the hashes";

pub const AUDIT: &str = "\
Examples:
  wfstate audit                        # every case; exit 1 on a broken chain
  wfstate audit order-42 --expect-head 9f2c...   # the head from a writer's receipt
  wfstate audit order-42 --follow
  wfstate audit --consistency --trust wfstate-ops+2c1f9a0b+AbC...";

pub const CHECKPOINT: &str = "\
Examples:
  wfstate checkpoint --new-key ops-2026 --key /etc/wfstate/log.key
  wfstate checkpoint --key /etc/wfstate/log.key
  wfstate checkpoint --key /etc/wfstate/log.key --public-key";

pub const RECEIPT: &str = "\
Examples:
  wfstate receipt order-42 --version 2 --json > receipt.json
  python3 tools/verify_receipt.py receipt receipt.json wfstate-ops+2c1f9a0b+AbC...";

pub const PROJECT: &str = "\
Examples:
  wfstate project                      # catch up once, report lag and halted cases
  wfstate project --follow
  wfstate project --retry order-42     # fold a halted case again after a fix";

pub const REPLAY: &str = "\
Examples:
  wfstate replay order-42
  wfstate replay order-42 --strict --json";

pub const VERIFY: &str = "\
Examples:
  wfstate verify order-42 order-43
  wfstate verify --all";

pub const EXPORT: &str = "\
Examples:
  wfstate export backup.cbor
  wfstate export backup.cbor --force   # replace it
  wfstate export - | ssh host wfstate import -";

pub const IMPORT: &str = "\
Examples:
  wfstate import backup.cbor
  wfstate --nats nats://n1:4222 import backup.cbor   # from the embedded store to a cluster";

pub const DEMO: &str = "\
Examples:
  wfstate demo
  wfstate demo --cases 1000 --workers 16
  wfstate --nats nats://127.0.0.1:4222 demo   # into a stream of its own, WFSTATE_DEMO";

pub const BENCH: &str = "\
Phases, each next to a raw baseline run in the same process:
  (1) commits across many cases in flight vs raw publishes with the same headers
  (2) sequential commits on one case vs raw publish-and-await-ack
  (3) replay of a long case vs a raw read of the same messages
  (4) projector catch-up vs the commit rate of (1); (4b) the log's tree upkeep
  (5) the embedded log's commit rate vs the rate of (1)
(1)-(4) need --nats URL; they run in a stream of their own, deleted at the end.

Example:
  wfstate --nats nats://127.0.0.1:4222 bench";

pub const SERVE: &str = "\
Examples:
  wfstate serve                              # http://127.0.0.1:8080/
  wfstate --nats nats://n1:4222 serve --listen 0.0.0.0:8080 --api-token \"$TOKEN\"
  curl -s 'http://127.0.0.1:8080/api/cases?status=running&limit=20'

Routes (JSON; errors are {\"error\": {\"code\", \"message\"}} with 400, 404, 409 or 503):
  /api/cases  /api/cases/CASE  /api/cases/CASE/versions/V  /api/cases/CASE/diff?from=&to=
  /api/cases/CASE/history?after=&limit=  /api/cases/CASE/audit  /api/cases/CASE/receipts/V
  /api/projector  /api/events (server-sent events)";
