#!/usr/bin/env bash
# CI's RPM check (from tests/packaging/run): the .rpm holds the same files as the .deb, its
# scriptlets do the same things as the Debian maintainer scripts, and both require the libraries
# the binaries link.
#   tests/packaging/compare_packages.sh dist/proxyd_V_amd64.deb dist/proxyd-V-1.x86_64.rpm
# Needs dpkg-deb and rpm (Debian's `rpm` package); installs nothing.
set -euo pipefail
deb=${1:?usage: compare_packages.sh DEB RPM}
rpm=${2:?usage: compare_packages.sh DEB RPM}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Files and symlinks only (each package lists its directories differently), with the known
# differences of the two layouts normalized: /lib/systemd (Debian 12) is /usr/lib/systemd, man
# pages and docs may be compressed, the Debian changelog and copyright exist only there, and
# rpm may add /usr/lib/.build-id links.
normalize() {
  sed -e 's#^/lib/systemd/#/usr/lib/systemd/#' -e 's#\.gz$##' |
    grep -v -e '^/usr/share/doc/proxyd/changelog$' -e '^/usr/share/doc/proxyd/copyright$' \
      -e '^/usr/lib/.build-id/' |
    sort -u
}
dpkg-deb -c "$deb" | awk '$1 !~ /^d/ {print $6}' | sed 's#^\./#/#' | normalize >"$work/deb"
rpm_list() { rpm -qp --qf '[%{FILEMODES:perms} %{FILENAMES}\n]' "$rpm"; }
rpm_list | awk '$1 !~ /^d/ {print $2}' | normalize >"$work/rpm"
echo "== files (deb | rpm)"
if ! diff "$work/deb" "$work/rpm"; then
  echo "FAIL: the packages hold different files" >&2
  exit 1
fi
cat "$work/deb"

echo "== directories owned by the package"
for dir in /etc/proxyd /var/log/proxyd /var/lib/proxyd; do
  dpkg-deb -c "$deb" | awk '{print $6}' | grep -qx "\.$dir/" || { echo "FAIL: deb lacks $dir" >&2; exit 1; }
  rpm_list | awk '$1 ~ /^d/ {print $2}' | grep -qx "$dir" || { echo "FAIL: rpm lacks $dir" >&2; exit 1; }
  echo "$dir"
done

echo "== scripts"
dpkg-deb -e "$deb" "$work/control"
cat "$work/control"/{preinst,postinst,prerm,postrm} 2>/dev/null >"$work/deb-scripts" || true  # (no preinst)
rpm -qp --scripts "$rpm" >"$work/rpm-scripts"
cat "$work/rpm-scripts"
# What both must do: create the user, upgrade a running proxyd in place, stop it gracefully on
# removal, and remove state, logs and the user at the end (purge / erase).
for action in 'proxyctl upgrade' 'proxyctl stop' 'proxyctl status' 'rm -rf .*/var/lib/proxyd' \
              '/var/log/proxyd' 'add.*proxyd|useradd' 'deluser|userdel' 'delgroup|groupdel'; do
  grep -Eq -- "$action" "$work/deb-scripts" || { echo "FAIL: deb scripts lack /$action/" >&2; exit 1; }
  grep -Eq -- "$action" "$work/rpm-scripts" || { echo "FAIL: rpm scripts lack /$action/" >&2; exit 1; }
done
# Neither restarts proxyd on upgrade.
if grep -Eq 'try-restart|condrestart|systemctl( --[a-z-]+)* restart' "$work/rpm-scripts"; then
  echo "FAIL: rpm scripts restart the service" >&2; exit 1
fi

echo "== requires"
rpm -qp --requires "$rpm" | tee "$work/rpm-requires"
deb_depends=$(dpkg-deb -f "$deb" Depends)
echo "deb Depends: $deb_depends"
# Each shared library the binaries link is required by both (rpm by soname, deb by package),
# and both need the tools their scripts call to create the user.
for lib in libevent_core libevent_extra libevent_openssl libssl libcrypto libnghttp2 libhiredis \
           libspdlog libtomlplusplus libfmt libstdc++; do
  grep -q "^${lib}[.-]" "$work/rpm-requires" || { echo "FAIL: rpm does not require $lib" >&2; exit 1; }
done
for pkg in 'libevent-core-' 'libevent-extra-' 'libevent-openssl-' 'libssl3' 'libnghttp2-' \
           'libhiredis' 'libspdlog' 'libtomlplusplus' 'libfmt' 'libstdc\+\+6' 'adduser'; do
  grep -Eq "(^|, )$pkg" <<<"$deb_depends" || { echo "FAIL: deb does not depend on $pkg" >&2; exit 1; }
done
grep -qx 'shadow-utils' "$work/rpm-requires" || { echo "FAIL: rpm does not require shadow-utils" >&2; exit 1; }
echo "compare_packages: ok"
