#!/usr/bin/env bash
# Build a throw-away container and run tests/system/inside.py in it with default paths only.
#
#   unshare -m --propagation private bash container.sh NEWROOT REPO PYPREFIX
#
# Must run in a fresh mount namespace whose mounts are private (unshare does both): nothing
# here can reach the host's mounts. NEWROOT is an empty directory on the host; a tmpfs is
# mounted on it here (so on the host it stays empty) and becomes "/" by pivot_root. /usr, the
# repository (with its venv) and the interpreter's prefix are bound read-only; /run, /home,
# /tmp, /var are fresh tmpfs; /proc is mounted; /etc holds passwd and group.
set -euo pipefail
new=$1 repo=$2 pyprefix=$3

# refuse to run anywhere but a private, non-initial namespace (belt and braces: the caller
# used unshare -m --propagation private)
if [[ "$(stat -Lc %i /proc/self/ns/mnt)" == "$(stat -Lc %i /proc/1/ns/mnt 2>/dev/null)" ]]; then
    echo "container.sh: in the initial mount namespace; run it under unshare -m" >&2
    exit 2
fi
mount --make-rprivate /

mount -t tmpfs -o mode=0755 container "$new"
mkdir -p "$new"/{usr,proc,run,home,tmp,var,etc,dev,root,oldroot}

# the fresh tmpfs first: the repository may live under one of these paths (a clone in /tmp),
# and its bind must land on top of the container's tmpfs, not under it
for d in run home tmp var; do
    mount -t tmpfs -o mode=0755 "$d" "$new/$d"
done
chmod 1777 "$new/tmp"

ro_bind() {  # ro_bind SRC: bind SRC at the same path inside, read-only
    mkdir -p "$new$1"
    mount --rbind "$1" "$new$1"
    mount -o remount,bind,ro "$new$1"
}
ro_bind /usr
for l in bin sbin lib lib64 lib32 libx32; do
    if [[ -L /$l ]]; then
        ln -s "$(readlink "/$l")" "$new/$l"
    elif [[ -d /$l ]]; then
        ro_bind "/$l"
    fi
done
for d in "$repo" "$pyprefix"; do
    [[ "$d" == /usr || "$d" == /usr/* ]] || ro_bind "$d"
done
mount -t proc proc "$new/proc"

# /dev: a few character devices on the root tmpfs, nothing of the host's /dev
for spec in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9; do
    IFS=: read -r name major minor <<<"$spec"
    mknod -m 0666 "$new/dev/$name" c "$major" "$minor"
done
ln -s /proc/self/fd "$new/dev/fd"

cat >"$new/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/bash
messagebus:x:100:101::/nonexistent:/usr/sbin/nologin
chronos:x:1000:1000::/home/chronos/user:/bin/bash
crash:x:20125:419::/nonexistent:/usr/sbin/nologin
sample:x:20200:20200::/nonexistent:/usr/sbin/nologin
nobody:x:65534:65534::/nonexistent:/usr/sbin/nologin
PASSWD
cat >"$new/etc/group" <<'GROUP'
root:x:0:
messagebus:x:101:
daemon-store:x:400:
crash-user-access:x:419:
chronos:x:1000:
chronos-access:x:1001:
sample:x:20200:
nogroup:x:65534:
GROUP
echo 0123456789abcdef0123456789abcdef >"$new/etc/machine-id"

cd "$new"
pivot_root . oldroot
umount -l /oldroot
rmdir /oldroot
cd /
exec env -i PATH="$repo/.venv/bin:/usr/sbin:/usr/bin:/sbin:/bin" HOME=/root LANG=C.UTF-8 \
    "$repo/.venv/bin/python" "$repo/tests/system/inside.py"
