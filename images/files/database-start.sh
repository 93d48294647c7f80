#!/bin/sh
# The VS database container: one redis-server configured as SONiC's database container
# configures it, and database_config.json published where every SONiC program looks for it.
set -e
mkdir -p /var/run/redis/sonic-db /var/lib/redis
cp /etc/sonic-db/database_config.json /var/run/redis/sonic-db/.database_config.json.tmp
mv /var/run/redis/sonic-db/.database_config.json.tmp /var/run/redis/sonic-db/database_config.json
rm -f /var/run/redis/redis.sock
echo "database: starting redis-server"
exec redis-server /etc/redis/redis.conf
