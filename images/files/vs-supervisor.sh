#!/bin/sh
# Stand-in for a SONiC container's supervisord in the virtual switch: starts each program of
# $PROGRAMS under its SONiC process name (an idle stand-in), and each process of $VASIC
# (`name:role`) as `soniclet vasic <role>` under that name; says so on stdout, and stops them
# all on SIGTERM. $LIFETIMES (`name:seconds ...`) makes a program exit after that long (the
# upgrade tests' image whose critical process dies).
name="${CONTAINER_NAME:-container}"
pids=""
stop() {
    echo "$name: stopping"
    kill $pids 2>/dev/null
    for pid in $pids; do wait "$pid"; done
    exit 0
}
trap stop TERM INT
lifetime() {
    for entry in $LIFETIMES; do
        if [ "${entry%%:*}" = "$1" ]; then echo "${entry#*:}"; return; fi
    done
    echo 2147483647
}
for program in $PROGRAMS; do
    (exec -a sleep "/usr/bin/$program" "$(lifetime "$program")") &
    pids="$pids $!"
    echo "$name: started $program (pid $!)"
done
for entry in $VASIC; do
    process="${entry%%:*}"
    "/usr/bin/$process" vasic "${entry#*:}" &
    pids="$pids $!"
    echo "$name: started $process (pid $!)"
done
echo "$name: ready"
while :; do
    sleep 2147483647 &
    wait $!
done
