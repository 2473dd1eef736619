#!/usr/bin/env bash
# First boot of a device image, emulated: firmware-images/qemu-boot.sh TARGET
# Builds an image with `outpost image build` for a controller (`outpost serve`, embedded broker) on
# loopback, unpacks rootfs.tar.zst, and runs the unit's own ExecStartPre and ExecStart lines in a chroot
# of it under qemu-user, with a NOTIFY_SOCKET and a watchdog as systemd would give. Checks: the first
# bundle is installed, READY=1 and WATCHDOG=1 arrive, the agent answers inference with onnxruntime's
# logits, enrolls with the image's token (key and certificate under /var/lib/outpost/identity), the
# controller lists it enrolled with digits 1.0.0 (hello), and STOPPING=1 arrives on SIGTERM.
# Needs root (chroot). Environment: OUTPOST_AGENT_BIN, OUTPOST_BIN as for cross/qemu-smoke.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
. cross/lib.sh
target=${1:?usage: firmware-images/qemu-boot.sh TARGET}
arch=${target%%-*}
[ "$(id -u)" = 0 ] || { echo "firmware-images/qemu-boot.sh: needs root to chroot into the image" >&2; exit 2; }
emu_for "$target"
tools_for "$target"
work=$(mktemp -d /tmp/outpost-qemu-boot-XXXXXX)
pids=()
cleanup() {
  local rc=$?
  if [ "$rc" != 0 ]; then
    for log in controller agent; do echo "-- $log.log (last lines)"; tail -15 "$work/$log.log" 2>/dev/null || true; done
  fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

echo "== controller on loopback"
make_bundle "$work"
api=$(free_port)
mqtt=$(free_port)
"$outpost" serve --data-dir "$work/ctl" --api "127.0.0.1:$api" --mqtt-listen "127.0.0.1:$mqtt" \
  --trust "$work/trust.policy" --root-pub "$work/keys/root.pub" >"$work/controller.log" 2>&1 &
pids+=($!)
wait_for 60 "$outpost" devices list --controller "http://127.0.0.1:$api" --data-dir "$work/ctl"

echo "== image"
"$outpost" enroll-token create --auto-approve --expires 1d --controller "http://127.0.0.1:$api" \
  --data-dir "$work/ctl" >"$work/enroll-token"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=outpost-test-ca -days 2 \
  -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
# Plain MQTT: the embedded broker has no TLS. The CA still goes into the image as it would in production.
"$outpost" image build --target "$target" --agent "$agent" --controller "mqtt://127.0.0.1:$mqtt" \
  --ca "$work/ca.pem" --trust "$work/trust.policy" --root-pub "$work/keys/root.pub" --enroll-token "@$work/enroll-token" \
  --bundle "$work/digits-v1.obundle" --labels site=qemu,board=emulated --data-size 64M --out "$work/image"
root=$work/root
mkdir -p "$root"
tar --zstd -xf "$work/image/rootfs.tar.zst" -C "$root"
unit=$root/usr/lib/systemd/system/outpost-agent.service
# The emulator inside the chroot; for a glibc target, the libc the board's base system would provide.
if [ ${#emu[@]} -gt 0 ]; then
  cp "$(command -v "${emu[0]}")" "$root/usr/bin/"
  chroot_run=(chroot "$root" "/usr/bin/${emu[0]}")
else
  chroot_run=(chroot "$root")
fi
if [ "$target" = armv7-unknown-linux-gnueabihf ]; then cp -a /usr/arm-linux-gnueabihf/lib "$root/lib"; fi

# The unit's commands as systemd would run them. Until the device id defaults from the machine (the
# identity work), the id comes as a flag; the local API moves off its fixed default port for the test.
pre=$(sed -n 's/^ExecStartPre=-//p' "$unit")
start=$(sed -n 's/^ExecStart=//p' "$unit")
[ -n "$pre" ] && [ -n "$start" ] || { echo "unit lacks ExecStartPre or ExecStart" >&2; exit 1; }
port=$(free_port)
device=(--device-id qemu-device-1)

echo "== first boot: ExecStartPre"
t0=$(now_ms)
# shellcheck disable=SC2086 # the unit's command line splits on spaces, as systemd splits it
"${chroot_run[@]}" $pre "${device[@]}" | tee "$work/pre.out"
grep -q "installed digits 1.0.0" "$work/pre.out"

echo "== first boot: ExecStart (Type=notify, WatchdogSec=2s)"
mkdir -p "$root/run"
python3 - "$root/run/notify" "$work/notify.log" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "a", buffering=1) as log:
    while True:
        log.write(s.recv(4096).decode() + "\n")
PY
pids+=($!)
wait_for 10 test -S "$root/run/notify"
# shellcheck disable=SC2086
NOTIFY_SOCKET=/run/notify WATCHDOG_USEC=2000000 OUTPOST_LOG=info \
  "${chroot_run[@]}" $start "${device[@]}" --listen "127.0.0.1:$port" >"$work/agent.log" 2>&1 &
agent_pid=$!
pids+=($agent_pid)
wait_for 120 grep -qx READY=1 "$work/notify.log"
infer_digits "$port" 1 >/dev/null
echo "first boot to first inference: $(($(now_ms) - t0)) ms (install, load, serve)"
infer_digits "$port" 16

echo "== the controller sees the device"
# The device's row: its arch, online, enrolled, its agent version, the model it reported in hello, the image's labels.
has_device() {
  "$outpost" devices list --controller "http://127.0.0.1:$api" --data-dir "$work/ctl" |
    grep -iE "^qemu-device-1 +$arch +yes +enrolled +[0-9][^ ]* +digits 1\.0\.0 .*board=emulated"
}
wait_for 60 has_device || { "$outpost" devices list --controller "http://127.0.0.1:$api" --data-dir "$work/ctl"; exit 1; }
"$outpost" devices list --controller "http://127.0.0.1:$api" --data-dir "$work/ctl"
wait_for 10 grep -qx WATCHDOG=1 "$work/notify.log"
for f in device.key device.crt; do test -s "$root/var/lib/outpost/identity/$f"; done
grep -q "enrolled: identity stored" "$work/agent.log"
echo "rss: $(rss_kb "$agent_pid") kB (agent under ${emu[0]:-no emulator}, digits v1 active)"

echo "== shutdown"
kill -TERM "$agent_pid"
wait "$agent_pid" || true
wait_for 10 grep -qx STOPPING=1 "$work/notify.log"
echo "notify messages: $(sort "$work/notify.log" | uniq -c | tr -s ' ' | paste -sd,)"
echo "== $target image boots: ok"
