#!/usr/bin/env bash
# Build the Debian package: target/debian/funnel_<version>_<arch>.deb.
#
#   bash scripts/package.sh [--binary PATH] [--out DIR] [--fast]
#
# Builds the release binary (or packages PATH, e.g. target/debug/funnel for
# tests/systemd.rs), then lays out the installed tree and DEBIAN/ here and
# runs dpkg-deb: no cargo-deb (7 minutes to install from crates.io on
# 2 cores) and no debhelper, only what every Debian system has. This script
# is the one description of the package. Install with
# `dpkg -i target/debian/funnel_*.deb`. --fast compresses with gzip -1
# instead of xz -6 (seconds instead of a minute for a 70 MB debug binary).
set -euo pipefail
cd "$(dirname "$0")/.."
# Directories dpkg creates get the modes they have here.
umask 022

die() {
    echo "package.sh: $*" >&2
    exit 1
}

binary=""
out_dir=target/debian
compression=(-Zxz)
while [ "$#" -gt 0 ]; do
    case "$1" in
    --binary) binary="${2:?--binary needs a path}"; shift 2 ;;
    --out) out_dir="${2:?--out needs a directory}"; shift 2 ;;
    --fast) compression=(-Zgzip -z1); shift ;;
    -h | --help) sed -n '2,/^set /{/^#/p}' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
    esac
done

if [ -z "$binary" ]; then
    cargo build --release --locked -p funnel --bin funnel
    binary=target/release/funnel
fi
[ -x "$binary" ] || die "$binary is not an executable"

# The version the binary was built as ("funnel 0.1.0"), not Cargo.toml's
# now: they differ when packaging an older build.
version=$("$binary" --version | awk '$1 == "funnel" { print $2 }')
[ -n "$version" ] || die "$binary --version printed no version"
arch=$(dpkg --print-architecture)
# A placeholder address (lintian wants a routable domain): set yours.
maintainer="${FUNNEL_DEB_MAINTAINER:-funnel developers <funnel@example.org>}"
# Reproducible: dates come from the commit, not from the clock.
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
export SOURCE_DATE_EPOCH

mkdir -p "$out_dir"
stage=$(mktemp -d "${TMPDIR:-/tmp}/funnel-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
root="$stage/root"
doc="$root/usr/share/doc/funnel"

# --- The installed files.
install -d -m 755 "$root/DEBIAN" "$root/usr/bin" "$root/usr/lib/systemd/system" \
    "$root/etc/funnel" "$doc" "$root/usr/share/man/man5" "$root/usr/share/man/man8" \
    "$root/usr/share/lintian/overrides"
install -m 755 "$binary" "$root/usr/bin/funnel"
install -m 644 debian/funnel.service "$root/usr/lib/systemd/system/funnel.service"
# 0640: it holds passwords. postinst gives it to group funnel, which does
# not exist yet when dpkg unpacks it.
install -m 640 funnel.conf.example "$root/etc/funnel/funnel.conf"
install -m 644 funnel.conf.example "$doc/funnel.conf.example"
install -m 644 README.md "$doc/README.md"
gzip -9n "$doc/README.md"
install -m 644 debian/lintian-overrides "$root/usr/share/lintian/overrides/funnel"

# Man pages from the binary's own option table, so they cannot drift from
# `funnel --help`.
for page in funnel.8 funnel.conf.5; do
    section="${page##*.}"
    "$binary" --man "$page" >"$root/usr/share/man/man$section/$page"
    # groff warnings are errors here (when groff exists).
    if command -v groff >/dev/null; then
        warnings=$(groff -man -Tutf8 -ww -z "$root/usr/share/man/man$section/$page" 2>&1 || true)
        [ -z "$warnings" ] || die "$page: $warnings"
    fi
    gzip -9n "$root/usr/share/man/man$section/$page"
done

# Machine-readable copyright, the licence text taken from LICENSE.
{
    echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
    echo "Upstream-Name: funnel"
    echo
    echo "Files: *"
    echo "Copyright: $(grep -m1 '^Copyright' LICENSE | sed 's/^Copyright (c) //')"
    echo "License: MIT"
    sed -e '1,/^Copyright/d' -e '/./!s/^$/./' -e 's/^/ /' LICENSE | sed '1{/^ \.$/d}'
} >"$doc/copyright"
chmod 644 "$doc/copyright"

# A native package's changelog: one entry for the packaged version.
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
{
    echo "funnel ($version) unstable; urgency=medium"
    echo
    echo "  * Built from commit $commit by scripts/package.sh."
    echo
    echo " -- $maintainer  $(date -R -u -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$doc/changelog.gz"
chmod 644 "$doc/changelog.gz"

# --- DEBIAN/: maintainer scripts, conffiles, control, md5sums.
for script in postinst prerm postrm; do
    install -m 755 "debian/$script" "$root/DEBIAN/$script"
done
echo /etc/funnel/funnel.conf >"$root/DEBIAN/conffiles"

# Depends: dpkg-shlibdeps (dpkg-dev) finds the packages of the shared
# libraries the binary links (libc6, libgcc-s1 here: libc, libm, libgcc_s;
# no OpenSSL, rustls/aws-lc is linked in) with their minimum versions.
# Without dpkg-dev: those two packages, libc6 at bookworm's version, which
# is then a statement, not a check.
if command -v dpkg-shlibdeps >/dev/null; then
    mkdir -p "$stage/debian"
    printf 'Source: funnel\n\nPackage: funnel\nArchitecture: any\n' >"$stage/debian/control"
    shlibs=$(cd "$stage" && dpkg-shlibdeps -O root/usr/bin/funnel 2>/dev/null |
        sed -n 's/^shlibs:Depends=//p')
    [ -n "$shlibs" ] || die "dpkg-shlibdeps found no dependency"
else
    shlibs="libc6 (>= 2.36), libgcc-s1"
fi
installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<EOF
Package: funnel
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_size
Depends: $shlibs, adduser
Section: database
Priority: optional
Description: connection-multiplexing daemon for MySQL/MariaDB
 funnel accepts thousands of MySQL/MariaDB client connections, authenticates
 them itself and runs their commands over a few shared connections to one
 mysqld, replaying each client's session state on whichever connection runs
 its next command.
EOF

# Conffiles are left out, as dh_md5sums does: they are meant to change.
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' |
    grep -vxF -f <(sed 's|^/||' DEBIAN/conffiles) | LC_ALL=C sort |
    xargs -d '\n' md5sum >DEBIAN/md5sums)
chmod 644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"

deb="$out_dir/funnel_${version}_${arch}.deb"
dpkg-deb --root-owner-group "${compression[@]}" --build "$root" "$deb" >/dev/null
ls -l "$deb"
