#!/usr/bin/env bash
# Hardware-free audio for tests and demos: a PulseAudio server with a 48 kHz
# mono null sink `virt_sink`, whose monitor is the default source. What is
# played into the sink (PortAudio device "pulse", or paplay) can be captured
# from the monitor, paced in real time.
#
#   scripts/virtual_audio.sh start   # idempotent; returns once samples flow
#   scripts/virtual_audio.sh stop
#
# A null sink renders in 2 s blocks until some client asks for low latency,
# so capture streams opened on an idle sink get no callbacks for up to 2 s.
# `start` therefore keeps one low-latency `parec` ("keeper") reading the
# monitor, and waits until the monitor really delivers samples.
# Needs: pulseaudio pulseaudio-utils libasound2-plugins
# (scripts/install_system_packages.sh).
set -euo pipefail
KEEPER_PID_FILE="${TMPDIR:-/tmp}/carfac_virtual_audio_keeper.pid"
SINK=virt_sink

die() { echo "virtual_audio.sh: $*" >&2; exit 1; }

keeper_running() {
  [ -f "$KEEPER_PID_FILE" ] && kill -0 "$(cat "$KEEPER_PID_FILE")" 2>/dev/null
}

monitor_delivers() {  # 10 ms of 48 kHz s16 mono = 960 bytes within 0.3 s
  local bytes
  bytes=$(timeout 0.3 parec --latency-msec=10 --device="$SINK.monitor" 2>/dev/null | head -c 960 | wc -c || true)
  [ "$bytes" = 960 ]
}

start() {
  command -v pulseaudio >/dev/null || die "pulseaudio is not installed (run scripts/install_system_packages.sh)"
  if ! pulseaudio --check 2>/dev/null; then
    # -n: no default.pa, so no hardware or udev probing. Running as root in
    # per-user mode works; its warning about root is expected.
    pulseaudio --daemonize=yes --exit-idle-time=-1 -n \
      --load=module-native-protocol-unix \
      --load="module-null-sink sink_name=$SINK sink_properties=device.description=VirtSink rate=48000 channels=1" \
      >/dev/null 2>&1 || true
  fi
  local ready=""
  for _ in $(seq 1 100); do
    if pactl info >/dev/null 2>&1; then ready=yes; break; fi
    sleep 0.05
  done
  [ -n "$ready" ] || die "PulseAudio did not come up within 5 s"
  pactl set-default-sink "$SINK" || die "no sink $SINK (is another PulseAudio server running?)"
  pactl set-default-source "$SINK.monitor"
  if ! keeper_running; then
    parec --latency-msec=10 --device="$SINK.monitor" >/dev/null 2>&1 &
    echo $! >"$KEEPER_PID_FILE"
  fi
  for _ in $(seq 1 40); do  # at most about 12 s
    if monitor_delivers; then
      echo "virtual audio ready"
      return 0
    fi
  done
  die "the monitor of $SINK delivered no samples within 12 s"
}

stop() {
  if keeper_running; then
    kill "$(cat "$KEEPER_PID_FILE")" 2>/dev/null || true
  fi
  rm -f "$KEEPER_PID_FILE"
  pulseaudio --kill 2>/dev/null || true
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) die "usage: $0 start|stop" ;;
esac
