#!/bin/sh
# meson install script: installs the example config SRC into DIR (under
# $DESTDIR) unless a config is already there, so that installing again keeps
# an operator's edits. The example also goes to the doc directory, where a
# new release's keys can be compared with the file in use.
#   install-config.sh SRC DIR
set -eu
src=$1
dir=${DESTDIR:-}$2
dest=$dir/$(basename "$src")
mkdir -p "$dir"
if [ -e "$dest" ]; then
    echo "outbox-relay: keeping $dest (the new example is in the doc directory)"
else
    install -m 0644 "$src" "$dest"
fi
