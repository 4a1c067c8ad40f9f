#!/usr/bin/env bash
# Smoke test of a built image, where a Docker daemon is at hand:
#
#   docker build -t ugate . && deploy/docker/smoke-test.sh ugate
#
# Runs the image the way the Helm chart runs it (read-only root, no capabilities, no new privileges,
# no network but the container's own loopback) and checks: the health check turns healthy, the
# process is the unprivileged user, `ugate id` works, the node key is private, a SOCKS5 stream is
# relayed, SIGHUP reloads, SIGTERM drains and exits 0.
set -euo pipefail
image=${1:?usage: $0 IMAGE}
docker=${DOCKER:-docker}
name=ugate-smoke-$$
cleanup() { "$docker" rm -f "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  "$docker" logs "$name" >&2 || true
  exit 1
}

"$docker" run -d --name "$name" --network none --read-only --tmpfs /tmp \
  --cap-drop ALL --security-opt no-new-privileges "$image" >/dev/null

status=starting
for _ in $(seq 1 40); do
  status=$("$docker" inspect -f '{{.State.Health.Status}}' "$name")
  [ "$status" = healthy ] && break
  [ "$("$docker" inspect -f '{{.State.Running}}' "$name")" = true ] || fail "the container exited"
  sleep 1
done
[ "$status" = healthy ] || fail "health check: $status"
echo "ok: healthy"

uid=$("$docker" exec "$name" id -u)
[ "$uid" != 0 ] || fail "runs as root"
echo "ok: runs as uid $uid"

"$docker" exec "$name" ugate id | grep -Eq '^id: +[a-z2-7]{52}$' || fail "ugate id"
mode=$("$docker" exec "$name" stat -c '%a %u' /var/lib/ugate/node.key)
[ "$mode" = "600 $uid" ] || fail "node.key is $mode"
echo "ok: ugate id; node.key 0600"

# A SOCKS5 CONNECT to the admin endpoint through the node's own egress listener.
reply=$("$docker" exec "$name" node -e '
const s = require("net").connect(15080, "127.0.0.1", () => s.write(Buffer.from([5, 1, 0])));
let step = 0, buf = Buffer.alloc(0), out = "";
s.on("data", (d) => {
  buf = Buffer.concat([buf, d]);
  if (step === 0 && buf.length >= 2) {
    buf = buf.subarray(2); step = 1;
    const host = Buffer.from("127.0.0.1");
    s.write(Buffer.concat([Buffer.from([5, 1, 0, 3, host.length]), host, Buffer.from([15000 >> 8, 15000 & 255])]));
  }
  if (step === 1 && buf.length >= 10) {
    if (buf[1] !== 0) { console.log("socks reply " + buf[1]); process.exit(1); }
    buf = buf.subarray(10); step = 2;
    s.write("GET /healthz/ready HTTP/1.0\r\n\r\n");
  }
  if (step === 2) { out += buf.toString(); buf = Buffer.alloc(0); }
});
s.on("end", () => { console.log(out.split("\r\n")[0]); process.exit(0); });
setTimeout(() => process.exit(1), 5000);')
[ "$reply" = "HTTP/1.1 200 OK" ] || fail "SOCKS5 relay: $reply"
echo "ok: SOCKS5 stream relayed"

"$docker" kill -s HUP "$name" >/dev/null
sleep 1
"$docker" logs "$name" 2>&1 | grep -q '"msg":"reloaded"' || fail "SIGHUP did not reload"
echo "ok: SIGHUP reloads"

"$docker" stop -t 30 "$name" >/dev/null
code=$("$docker" inspect -f '{{.State.ExitCode}}' "$name")
[ "$code" = 0 ] || fail "exit code $code after SIGTERM"
"$docker" logs "$name" 2>&1 | grep -q 'draining' || fail "SIGTERM did not drain"
echo "ok: SIGTERM drains, exit 0"
