#!/bin/sh
# A SONiC container's supervisord in the virtual switch. It starts, in order:
# - each line of /etc/vs-supervisor/daemons, `<process> run <command>` (a real daemon, from
#   Debian's packages or a role of soniclet) or `<process> once <command>` (a setup step, run
#   to its end first);
# - each program of $PROGRAMS under its SONiC process name (an idle stand-in);
# - each process of $VASIC (`name:role`) as `soniclet vasic <role>` under that name.
# It says so on stdout and stops them all on SIGTERM. $WITHOUT (`name ...`) leaves processes
# out, and $LIFETIMES (`name:seconds ...`) kills one after that long: the upgrade tests'
# images whose critical process never runs or dies.
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
left_out() {
    case " $WITHOUT " in *" $1 "*) echo "$name: $1 left out"; return 0 ;; esac
    return 1
}
started() {
    pids="$pids $2"
    echo "$name: started $1 (pid $2)"
    life="$(lifetime "$1")"
    if [ "$life" != 2147483647 ]; then
        (sleep "$life"; echo "$name: killing $1 after ${life}s"; kill -KILL "$2") &
    fi
}
if [ -f /etc/vs-supervisor/daemons ]; then
    while read -r process mode command; do
        left_out "$process" && continue
        if [ "$mode" = once ]; then
            sh -c "$command" </dev/null || echo "$name: $process failed"
            continue
        fi
        # exec: the daemon is the supervised PID, under its own name.
        sh -c "exec $command" </dev/null &
        started "$process" $!
    done </etc/vs-supervisor/daemons
fi
for program in $PROGRAMS; do
    left_out "$program" && continue
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
