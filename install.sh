#!/bin/sh
# install.sh: builds daxfs and installs it under the names mount(8), mkfs(8) and fsck(8)
# look for, on any Linux system (Debian and Ubuntu: the .deb, see README "Installing").
#
#   ./install.sh [install]      cargo build --release, then install
#   ./install.sh uninstall      remove what the last install put there (its manifest)
#   ./install.sh --help
#
# Options: --bin-dir DIR takes the binaries from DIR (daxfs, mkfs-daxfs, fsck-daxfs and,
# if there, daxfs-man) instead of building them.
# Variables (environment or VAR=value arguments), as GNU's conventions name them:
#   PREFIX=/usr/local    BINDIR=$PREFIX/bin (daxfs)    SBINDIR=$PREFIX/sbin (mkfs.daxfs,
#   fsck.daxfs)    DATADIR=$PREFIX/share (man pages, completions, the manifest)
#   HELPERDIR=/sbin (mount.fuse.daxfs: mount(8) looks for helpers only in /sbin,
#   /sbin/fs.d and /sbin/fs, whatever the PREFIX)    DESTDIR= (staging root for packagers)
#
# mount.fuse.daxfs is a symlink to daxfs: run under that name, daxfs takes mount(8)'s
# helper syntax `DEV DIR [-sfnv] [-N NS] [-o OPTS] [-t TYPE]` (-f: fake, -n -s -v ignored,
# -N refused). mkfs(8) and fsck(8) search /sbin, /sbin/fs.d, /sbin/fs, /etc/fs, /etc, then
# PATH, so $PREFIX/sbin must be on root's PATH (it is for /usr/local/sbin and /usr/sbin).
#
# Why a script and not a Makefile: nothing here is a dependency graph (cargo is the build),
# and the mount-helper symlink, the optional man-page generator and the manifest-driven
# uninstall are plain sequential shell; it needs only sh and install(1).

set -eu

here=$(cd "$(dirname "$0")" && pwd)
action=install
bin_dir=

while [ $# -gt 0 ]; do
	case $1 in
	install | uninstall) action=$1 ;;
	--bin-dir) bin_dir=${2:?--bin-dir needs a directory}; shift ;;
	--bin-dir=*) bin_dir=${1#--bin-dir=} ;;
	-h | --help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
	*=*) export "${1?}" ;;
	*) echo "install.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
	esac
	shift
done

PREFIX=${PREFIX:-/usr/local}
BINDIR=${BINDIR:-$PREFIX/bin}
SBINDIR=${SBINDIR:-$PREFIX/sbin}
DATADIR=${DATADIR:-$PREFIX/share}
HELPERDIR=${HELPERDIR:-/sbin}
DESTDIR=${DESTDIR:-}
# One manifest per installation, under the data directory it installed into.
manifest=$DESTDIR$DATADIR/daxfs/install-manifest

say() { echo "install.sh: $*"; }

# put SRC DEST MODE: install one file and record it in the manifest.
put()
{
	install -D -m "$3" "$1" "$DESTDIR$2"
	echo "$2" >>"$manifest.new"
}

do_install()
{
	if [ -z "$bin_dir" ]; then
		say "cargo build --release"
		(cd "$here" && cargo build --release)
		bin_dir=$here/target/release
	fi
	for b in daxfs mkfs-daxfs fsck-daxfs; do
		[ -x "$bin_dir/$b" ] || { echo "install.sh: $bin_dir/$b is missing" >&2; exit 1; }
	done
	mkdir -p "$(dirname "$manifest")"
	: >"$manifest.new"
	put "$bin_dir/daxfs" "$BINDIR/daxfs" 0755
	put "$bin_dir/mkfs-daxfs" "$SBINDIR/mkfs.daxfs" 0755
	put "$bin_dir/fsck-daxfs" "$SBINDIR/fsck.daxfs" 0755
	# The link names the installed path (without DESTDIR), so it works once unpacked.
	mkdir -p "$DESTDIR$HELPERDIR"
	ln -sfn "$BINDIR/daxfs" "$DESTDIR$HELPERDIR/mount.fuse.daxfs"
	echo "$HELPERDIR/mount.fuse.daxfs" >>"$manifest.new"
	# file(1) magic: `file -s -m $DATADIR/daxfs/daxfs.magic DEV` names a daxfs image.
	put "$here/dist/daxfs.magic" "$DATADIR/daxfs/daxfs.magic" 0644
	# Man pages and shell completions, from the man/ crate's generator when it was built:
	# it writes OUTDIR/man8/*.8 and OUTDIR/completions/{bash,zsh,fish}/..., which go where
	# man(1), bash-completion, zsh and fish look for them.
	if [ -x "$bin_dir/daxfs-man" ]; then
		gen=$(mktemp -d)
		trap 'rm -rf "$gen"' EXIT
		"$bin_dir/daxfs-man" "$gen" >/dev/null || { echo "install.sh: daxfs-man failed" >&2; exit 1; }
		for f in "$gen"/man8/*.8; do
			[ -f "$f" ] && put "$f" "$DATADIR/man/man8/${f##*/}" 0644
		done
		for f in "$gen"/completions/bash/*.bash; do
			[ -f "$f" ] && put "$f" "$DATADIR/bash-completion/completions/$(basename "$f" .bash)" 0644
		done
		for f in "$gen"/completions/zsh/_*; do
			[ -f "$f" ] && put "$f" "$DATADIR/zsh/vendor-completions/${f##*/}" 0644
		done
		for f in "$gen"/completions/fish/*.fish; do
			[ -f "$f" ] && put "$f" "$DATADIR/fish/vendor_completions.d/${f##*/}" 0644
		done
	else
		say "no $bin_dir/daxfs-man: man pages and completions not installed"
	fi
	echo "$DATADIR/daxfs/install-manifest" >>"$manifest.new"
	mv "$manifest.new" "$manifest"
	say "installed $(wc -l <"$manifest") files under ${DESTDIR:-/} (manifest $manifest)"
}

do_uninstall()
{
	if [ ! -f "$manifest" ]; then
		echo "install.sh: no manifest $manifest: nothing installed with this PREFIX/DESTDIR" >&2
		exit 1
	fi
	# Remove the files, then the directories below PREFIX that this left empty.
	files=$(cat "$manifest")
	echo "$files" | while read -r f; do
		rm -f "$DESTDIR$f"
	done
	echo "$files" | while read -r f; do
		d=$(dirname "$DESTDIR$f")
		while case $d in "$DESTDIR$PREFIX"/*) true ;; *) false ;; esac && rmdir "$d" 2>/dev/null; do
			d=$(dirname "$d")
		done
	done
	say "uninstalled from ${DESTDIR:-/}"
}

case $action in
install) do_install ;;
uninstall) do_uninstall ;;
esac
