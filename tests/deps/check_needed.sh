#!/bin/sh
# The core library needs only libc and the kernel (DESIGN.md): fail if the
# shared library names any other library in its DT_NEEDED entries.
# Usage: check_needed.sh <readelf> <libconc.so>
set -e
needed=$("$1" -d "$2" | sed -n 's/.*(NEEDED).*\[\(.*\)\].*/\1/p')
echo "$2 needs: $needed"
for lib in $needed; do
    case "$lib" in
    libc.so.* | ld-linux*.so.* | libpthread.so.* | libdl.so.* | librt.so.* | libm.so.*) ;;
    *) echo "unexpected dependency: $lib" >&2; exit 1 ;;
    esac
done
