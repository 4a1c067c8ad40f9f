#!/usr/bin/env bash
# Stop the quickstart mesh (SIGTERM: nodes drain and exit). Identities and trust stay in run/.
cd "$(dirname "$0")"
for name in alice bob gateway bob-web; do
  f="run/$name.pid"
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  kill "$pid" 2>/dev/null && for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$f"
done
