#!/usr/bin/env bash
# Checks a built package (packaging/build-deb.sh prints its path): its contents (`dpkg -c`), then
# installs it into a clean root (`dpkg --root` on a temporary directory, so the machine's own
# /usr is untouched) and runs the installed `cos-mesh --version` and `systemd-analyze verify`
# on the installed unit. Exits non-zero, naming what is wrong, on the first failure.
set -euo pipefail
deb=${1:?usage: packaging/check-deb.sh target/debian/cos-mesh_VERSION_ARCH.deb}
fail() { echo "check-deb: $*" >&2; exit 1; }

listing=$(dpkg -c "$deb")
echo "$listing"
has() { grep -qE " \./$1\$" <<<"$listing" || fail "the package lacks /$1"; }
has 'usr/bin/cos-mesh'
has 'usr/bin/cos-mesh-daemon'   # what `cos-mesh run` execs (the daemon's code alone)
has 'usr/lib/systemd/system/cos-mesh\.service'
has 'usr/share/cos-mesh/systemd/nomad\.service\.d/cos-mesh\.conf'
for role in firewall/*.yaml; do has "usr/share/cos-mesh/$role"; done
has 'usr/share/man/man1/cos-mesh\.1\.gz'
has 'usr/share/man/man1/cos-mesh-run\.1\.gz'
has 'usr/share/bash-completion/completions/cos-mesh'
has 'usr/share/zsh/vendor-completions/_cos-mesh'
has 'usr/share/fish/vendor_completions.d/cos-mesh\.fish'
# /etc/cos-mesh is the operator's: nothing installed there, no conffiles.
! grep -qE ' \./etc/' <<<"$listing" || fail "the package installs into /etc"
control=$(dpkg-deb --ctrl-tarfile "$deb" | tar -t)
! grep -q conffiles <<<"$control" || fail "the package declares conffiles"

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"
touch "$root/var/lib/dpkg/status"
# The empty root has no libc6 package (the binary runs with the machine's) and no shell to run
# maintainer scripts in: those run outside it, and see DPKG_ROOT.
dpkg --root="$root" --force-depends --force-script-chrootless --log=/dev/null -i "$deb"
dpkg --root="$root" -s cos-mesh | grep -q '^Status: install ok installed' || fail "dpkg does not list it as installed"
version=$("$root/usr/bin/cos-mesh" --version)
echo "installed: $version"
[ "$version" = "cos-mesh $(dpkg-deb -f "$deb" Version | cut -d- -f1)" ] || fail "--version says $version"
unit="$root/usr/lib/systemd/system/cos-mesh.service"
grep -q '^ExecStart=/usr/bin/cos-mesh run ' "$unit" || fail "the unit does not start /usr/bin/cos-mesh"
# The clean root has no systemd of its own: verify the installed unit against the machine's,
# with ExecStart pointed into the root (verify checks that the executable exists).
sed "s|/usr/bin/cos-mesh|$root/usr/bin/cos-mesh|" "$unit" >"$root/cos-mesh.service"
out=$(systemd-analyze verify "$root/cos-mesh.service" 2>&1) || fail "systemd-analyze verify: $out"
! grep -q 'cos-mesh' <<<"$out" || fail "systemd-analyze verify complained: $out"
for b in cos-mesh cos-mesh-daemon; do
    size=$(stat -c %s "$root/usr/bin/$b")
    [ "$size" -lt 20000000 ] || fail "the installed $b is $size bytes: not stripped?"
done
usage=$("$root/usr/bin/cos-mesh-daemon" 2>&1 || true)
grep -q 'cos-mesh run -c' <<<"$usage" || fail "the installed cos-mesh-daemon does not run: $usage"
echo "check-deb: ok"
