#!/usr/bin/env bash
# Restart the pulse-server instances one by one, each only once the previous one is ready again, so
# the other two always serve (devices retry a push cut by the restart; the server answers it once).
# Usage: deploy/rolling-restart.sh [INSTANCES...]   (default: 1 2 3; instance N listens on 800N)
set -euo pipefail
[ $# -gt 0 ] || set -- 1 2 3
for i in "$@"; do
    systemctl restart "pulse-server@$i"
    for _ in $(seq 1 300); do
        if curl -fsS -o /dev/null "http://127.0.0.1:800$i/readyz"; then
            echo "pulse-server@$i ready"
            continue 2
        fi
        sleep 0.1
    done
    echo "pulse-server@$i not ready after 30 s: stopping here" >&2
    exit 1
done
