#!/usr/bin/env bash
# Install Debian's Chromium for the browser tests when it is missing (needs root and apt).
# Browsers cannot be downloaded by Playwright here; the tests launch /usr/bin/chromium.
set -u
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null; then
  echo "ensure_chromium: /usr/bin/chromium missing and cannot apt-get install it; browser tests will be skipped" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq && apt-get install -y -qq chromium >/dev/null
test -x /usr/bin/chromium
