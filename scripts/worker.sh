#!/usr/bin/env bash
# A Celery worker that is started again whenever it exits, until this script is stopped (SIGTERM
# or SIGINT, which the worker gets too and finishes its task on). A worker can exit on its own
# when Redis goes away while it holds unacknowledged tasks (kombu's Redis transport fails to put
# them back and the worker stops); the tasks stay in Redis, or the periodic catch-up recomputes
# what they were for, once a worker runs again. Process managers do the same for production
# (systemd Restart=always, a container restart policy). Arguments go to `celery worker`.
set -u
cd "$(dirname "$0")/.."
celery="${CELERY:-.venv/bin/celery}"
child=""
stopping=""
stop() {
  stopping=1
  if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null; fi
}
trap stop TERM INT
while [ -z "$stopping" ]; do
  "$celery" -A core worker "$@" &
  child=$!
  wait "$child"
  status=$?
  if [ -n "$stopping" ]; then
    # The trap interrupted `wait`: let the worker finish its warm shutdown.
    wait "$child" 2>/dev/null
    break
  fi
  echo "worker exited with status $status; starting it again in 2 s" >&2
  sleep 2
done
