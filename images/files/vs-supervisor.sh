#!/bin/sh
# Stand-in for a SONiC container's supervisord in the virtual switch: starts each program of
# $PROGRAMS under its SONiC process name, says so on stdout, and stops them all on SIGTERM.
name="${CONTAINER_NAME:-container}"
pids=""
stop() {
    echo "$name: stopping"
    kill $pids 2>/dev/null
    exit 0
}
trap stop TERM INT
for program in $PROGRAMS; do
    (exec -a sleep "/usr/bin/$program" 2147483647) &
    pids="$pids $!"
    echo "$name: started $program (pid $!)"
done
echo "$name: ready"
if [ -x /usr/bin/vs-post-start.sh ]; then
    /usr/bin/vs-post-start.sh &
fi
while :; do
    sleep 2147483647 &
    wait $!
done
