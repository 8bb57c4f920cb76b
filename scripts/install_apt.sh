#!/usr/bin/env bash
# Install the Debian/Ubuntu packages facestream needs, only those not yet installed
# (a second run does nothing). Uses sudo when not root.
set -euo pipefail
packages=(
  # GStreamer ingest (RTSP H.264/H.265/MJPEG, decoding, the in-process RTSP test server)
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav libgstrtspserver-1.0-dev gstreamer1.0-tools
  # MQTT broker for the event-sink tests (started by the tests themselves)
  mosquitto
  # NATS server with JetStream for the NATS event-sink tests (started by the tests themselves)
  nats-server
  # PostgreSQL for the multi-node gallery tests (initdb + postgres in a temp folder, started
  # by the tests themselves; the package's own cluster is not used)
  postgresql
  # nftables: the partition tests drop a test server's packets on loopback (a silent
  # network partition) with a table of their own
  nftables
  # headless browser and its WebDriver for the console tests (started by the tests themselves)
  chromium chromium-driver
  # promtool: the tests check /metrics, the alert rules and the scrape config with it
  prometheus
  # build and set-up tools
  pkg-config build-essential python3 python3-venv python3-pip curl ca-certificates
)
missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "apt: all ${#packages[@]} packages present"
  exit 0
fi
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "apt: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
