#!/bin/sh
# setup-debian.sh -- install what pymalloc needs to build and test on Debian 12
# (the list is scripts/debian-packages.txt, shared with .ci/run).
# Run as root (or with sudo).  Used by the README's commands.
set -e
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends $(cat "$(dirname "$0")/debian-packages.txt")
