#!/bin/sh
# Release build and install of outbox-relay from this source tree: the build
# steps of deploy/Containerfile, which the test suite (tests/deploy/) runs on
# a copy of exactly the files the Containerfile copies.
#
#   deploy/build.sh BUILDDIR DESTDIR [meson setup options...]
#
# e.g. `deploy/build.sh build /` as root installs under /usr/local (the
# config in /etc/outbox-relay); `--prefix=/usr` or `-Dexamples=true` go
# through to meson setup. Run it again to rebuild with new options.
set -eu
if [ $# -lt 2 ]; then
    echo "usage: $0 BUILDDIR DESTDIR [meson setup options...]" >&2
    exit 2
fi
src=$(cd "$(dirname "$0")/.." && pwd)
build=$1 destdir=$2
shift 2
# -Dwerror=false: a newer compiler's new warning must not fail a release build.
set -- --buildtype=release -Dwerror=false -Dtests=false "$@"
if [ -f "$build/meson-private/coredata.dat" ]; then
    meson setup --reconfigure "$build" "$src" "$@"
else
    meson setup "$build" "$src" "$@"
fi
meson compile -C "$build"
meson install -C "$build" --no-rebuild --destdir "$destdir"
