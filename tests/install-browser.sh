#!/bin/sh
# Installs the browser the dashboard tests drive: Debian's chromium package.
# Never downloads a browser build; on a machine that already has chromium it does nothing.
# Set CHROMIUM=/path/to/chromium to use another Chromium binary instead.
set -eu

if [ -n "${CHROMIUM:-}" ] && [ -x "$CHROMIUM" ]; then
    exit 0
fi
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "chromium is missing and this is not a Debian/Ubuntu system: install Chromium with your" >&2
    echo "package manager and set CHROMIUM=/path/to/chromium, then run the tests again." >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
echo "installing Debian's chromium for the dashboard browser tests" >&2
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y chromium
