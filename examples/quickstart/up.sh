#!/usr/bin/env bash
# Start the quickstart mesh: gateway, alice, bob (+ bob's web service) in the background.
# Creates identities and trust on first run. Idempotent: running it again restarts nothing
# that is already up.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(cd ../.. && pwd)
UGATE=(node "$ROOT/apps/ugate/bin/ugate.js")
mkdir -p run
[ -f "$ROOT/apps/ugate/dist/main.js" ] || { echo "build first: pnpm install && pnpm build" >&2; exit 1; }

key() { "${UGATE[@]}" id -c "$1.yaml" --json | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).publicKey))'; }
GW_KEY=$(key gateway); ALICE_KEY=$(key alice); BOB_KEY=$(key bob)

# Trust, both ways and explicit: the gateway knows alice and bob by key (bob may
# register bob.mesh.internal, alice alice.mesh.internal); alice and bob know the gateway's host key.
[ -f authorized_keys ] || printf '# OpenSSH authorized_keys for the quickstart gateway\n' > authorized_keys
grep -qF "$ALICE_KEY" authorized_keys || echo "permitlisten=\"alice.mesh.internal:0\" $ALICE_KEY alice" >> authorized_keys
grep -qF "$BOB_KEY" authorized_keys || echo "permitlisten=\"bob.mesh.internal:0\" $BOB_KEY bob" >> authorized_keys
echo "[127.0.0.1]:15022 $GW_KEY" > run/known_hosts

# The quickstart mesh CA (run/ca) and the gateway's workload certificate for HBONE.
# Client certificates: ugate ca issue --ca-dir examples/quickstart/run/ca --namespace mesh --account NAME --out DIR
[ -f run/ca/ca.key ] || "${UGATE[@]}" ca init --dir run/ca --trust-domain cluster.local > /dev/null
[ -f run/gateway/certs/tls.crt ] || "${UGATE[@]}" ca issue --ca-dir run/ca --trust-domain cluster.local --namespace mesh --account gateway --out run/gateway/certs > /dev/null

start() { # name, command...
  local name=$1; shift
  if [ -f "run/$name.pid" ] && kill -0 "$(cat "run/$name.pid")" 2>/dev/null; then return; fi
  nohup "$@" > "run/$name.log" 2>&1 &
  echo $! > "run/$name.pid"
}
start bob-web node bob-web.mjs
start gateway "${UGATE[@]}" run -c gateway.yaml
start bob "${UGATE[@]}" run -c bob.yaml
start alice "${UGATE[@]}" run -c alice.yaml

# Ready = the gateway sees bob's registration and alice's connection.
for _ in $(seq 1 100); do
  if curl -fsS http://127.0.0.1:15000/state 2>/dev/null | grep -q '"host": "bob.mesh.internal"' &&
     curl -fsS http://127.0.0.1:16000/state 2>/dev/null | grep -q '"connected": true'; then
    echo "quickstart mesh is up: try  curl --socks5-hostname 127.0.0.1:16080 http://bob.mesh.internal:8080/"
    exit 0
  fi
  sleep 0.1
done
echo "quickstart did not become ready; see examples/quickstart/run/*.log" >&2
exit 1
