#!/bin/sh
# mydaemon written the classic, wrong way: "if the user's directory exists, the user is signed
# in". ChromeOS leaves /run/daemon-store/mydaemon/<hash> behind at sign-out (empty, root 0700),
# so this daemon, run as root as many system daemons are, counts after a sign-out (or a
# restart) into the tmpfs under it, not into the user's vault.
known=""
while :; do
    for dir in /run/daemon-store/mydaemon/*/; do
        [ -d "$dir" ] || continue
        case "$known" in *" $dir"*) continue ;; esac
        count=$(($(cat "$dir/count" 2>/dev/null || echo 0) + 1))
        echo "$count" > "$dir/count" && echo "naive: $dir seen $count time(s)"
        known="$known $dir"
    done
    sleep 0.05
done
