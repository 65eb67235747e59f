#!/usr/bin/env bash
# Installs the peers `make bench` compares against: NFStream 6.6 in its own venv
# (bench/.peers) and Debian's argus (needs root). Safe to run twice.
set -eu
cd "$(dirname "$0")"
if [ ! -x .peers/bin/python ]; then
    python3 -m venv .peers
    .peers/bin/python -m pip install -q nfstream==6.6.0 || echo "bench: NFStream not installable here; skipped"
fi
if ! command -v argus >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq argus-server >/dev/null \
        || echo "bench: argus not installable here; skipped"
fi
