#!/bin/sh
# Plays portsyncd in the VS until the virtual ASIC arrives: once the database answers, the
# ports are announced configured and initialised (APPL_DB PORT_TABLE:PortConfigDone, then
# PortInitDone), which releases SONiC's delayed services.
r() { redis-cli -s /var/run/redis/redis.sock -n 0 "$@"; }
until [ "$(r PING 2>/dev/null)" = "PONG" ]; do sleep 0.1; done
r HSET PORT_TABLE:PortConfigDone count 0 >/dev/null
r HSET PORT_TABLE:PortInitDone lanes 0 >/dev/null
echo "${CONTAINER_NAME:-swss}: PortInitDone"
