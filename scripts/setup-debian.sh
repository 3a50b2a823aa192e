#!/bin/sh
# setup-debian.sh -- install what pymalloc needs to build and test on Debian 12.
# Run as root (or with sudo).  Used by the README's commands and by .ci/run.
set -e
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends \
    build-essential autoconf automake libtool pkg-config binutils \
    python3 sqlite3 coreutils gawk procps
