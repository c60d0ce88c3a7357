#!/usr/bin/env bash
# Build the Debian package: target/debian/funnel_<version>_<arch>.deb.
#
#   bash scripts/package.sh
#
# Installs cargo-deb from crates.io when it is missing, builds the release
# binary, generates the man pages from the binary's own option table
# (`funnel --man`), then packages what Cargo.toml's [package.metadata.deb]
# lists. Install with `dpkg -i target/debian/funnel_*.deb`.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION="${CARGO_DEB_VERSION:-}"
if ! cargo deb --version >/dev/null 2>&1; then
    echo "package.sh: installing cargo-deb ${CARGO_DEB_VERSION:-(latest)}" >&2
    cargo install --locked cargo-deb ${CARGO_DEB_VERSION:+--version "$CARGO_DEB_VERSION"}
fi

cargo build --release --locked -p funnel --bin funnel

mkdir -p target/man
./target/release/funnel --man funnel.8 >target/man/funnel.8
./target/release/funnel --man funnel.conf.5 >target/man/funnel.conf.5
# Check the pages render (groff warnings are errors here) when groff exists.
if command -v groff >/dev/null; then
    for page in target/man/funnel.8 target/man/funnel.conf.5; do
        warnings=$(groff -man -Tutf8 -ww -z "$page" 2>&1 || true)
        if [ -n "$warnings" ]; then
            echo "package.sh: $page: $warnings" >&2
            exit 1
        fi
    done
fi
gzip -9nf target/man/funnel.8 target/man/funnel.conf.5

cargo deb --no-build -p funnel "$@"
ls -l target/debian/*.deb
