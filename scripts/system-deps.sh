#!/usr/bin/env bash
# System packages Kenning needs on Debian/Ubuntu: a C compiler and Python headers
# (pdqhash builds from source) and venv support. Installs only what is missing.
set -euo pipefail
missing=()
command -v gcc >/dev/null 2>&1 || missing+=(build-essential)
command -v make >/dev/null 2>&1 || missing+=(make)
py=${PYTHON:-python3.11}
if command -v "$py" >/dev/null 2>&1; then
  inc=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  [ -f "$inc/Python.h" ] || missing+=(python3.11-dev)
  "$py" -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3.11-venv)
else
  missing+=(python3.11 python3.11-dev python3.11-venv)
fi
# libchromaprint: audio fingerprints (the audio extra's pyacoustid loads it with ctypes).
dpkg-query -W -f='${Status}' libchromaprint1 2>/dev/null | grep -q 'ok installed' \
  || missing+=(libchromaprint1)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing system packages: ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
