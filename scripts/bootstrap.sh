#!/usr/bin/env bash
# Install what Osprey needs on Debian 12 and build the virtualenv. Idempotent and
# quick when everything is there. Usage: scripts/bootstrap.sh [run|test]
#   run   Debian packages for `make run` (RabbitMQ, GnuPG, openssl, Python venv)
#   test  the same plus what the test suite drives for real (Chromium)
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-run}"

pkgs=(rabbitmq-server gnupg openssl ca-certificates)
if [ "$profile" = test ]; then
  pkgs+=(chromium dovecot-imapd dovecot-pop3d postgresql)
fi

python_ok() {
  command -v python3 >/dev/null 2>&1 &&
  python3 -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1
}
python_ok || pkgs+=(python3 python3-venv python3-dev)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  # a package's postinst may try to start its system service; on hosts without
  # an init system that fails harmlessly, and Osprey starts its own node anyway
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  python3 -m venv .venv
fi
stamp=.venv/.osprey-installed-$profile
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "bootstrap: installing Osprey into .venv"
  if [ "$profile" = test ]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
  else
    .venv/bin/python -m pip install -q --disable-pip-version-check -e .
  fi
  touch "$stamp"
fi
